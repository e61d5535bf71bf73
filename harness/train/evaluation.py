"""Test-split predictions and their evaluation, shared by training, `harness evaluate` and predict.

A classification model may end in logits (a linear last layer, trained with a `from_logits`
loss). The run records that in report.json (`training.outputs`), and every consumer of the
model's outputs goes through `predict_array`, which turns logits into probabilities with a
softmax, so accuracy, ROC-AUC, log loss, the confusion matrix and predicted probabilities are
computed on probabilities whichever head the model has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from harness import atomic
from harness.data import PreparedData, make_predict_dataset
from harness.errors import HarnessError, TrainingError
from harness.evaluate import evaluate_predictions, load_report
from harness.models import has_logits_head
from harness.rundir import RunDir

LOGITS = "logits"
PROBABILITY_SLACK = 1e-3  # float16 softmax outputs overshoot [0, 1] by rounding, not by meaning


def predict_array(
    model: keras.Model,
    x: np.ndarray,
    batch_size: int = 256,
    *,
    run_dir: Path | None = None,
    logits: bool | None = None,
) -> np.ndarray:
    """Model outputs for `x`, in batches through one compiled function.

    Outputs recorded as logits become probabilities: `logits=True`, or `run_dir` given and its
    report.json says `training.outputs: logits`. Without either the raw outputs are returned.
    """
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    dataset = make_predict_dataset(np.asarray(x, np.float32), batch_size)
    outputs = [np.asarray(forward(batch), dtype=np.float32) for batch in dataset]
    if not outputs:
        return np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)
    y = np.concatenate(outputs)
    if logits is None and run_dir is not None:
        logits = recorded_logits(run_dir)
    return softmax(y) if logits else y


def recorded_logits(run_dir: Path) -> bool | None:
    """Whether the run's report says its model outputs logits; None when there is no readable report."""
    try:
        training = load_report(run_dir).get("training")
    except HarnessError:
        return None
    return isinstance(training, dict) and training.get("outputs") == LOGITS


def outputs_are_logits(model: keras.Model, task: str, run_dir: Path) -> bool:
    """What the run recorded; without a report (a run that stopped before writing it), what the
    model's head says, so a logits model is never evaluated or predicted as probabilities."""
    recorded = recorded_logits(run_dir)
    return has_logits_head(model, task) if recorded is None else recorded


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits: a sigmoid for a single output column (binary logits, as with
    `BinaryCrossentropy(from_logits=True)`), else a row-wise softmax; float64 and stable for
    large scores either way."""
    values = np.asarray(logits, np.float64)
    if values.ndim == 2 and values.shape[-1] == 1:
        return (0.5 * (1.0 + np.tanh(0.5 * values))).astype(np.float32)
    shifted = values - values.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True), np.float32)


def as_class_probabilities(y_pred: np.ndarray, logits: bool) -> tuple[np.ndarray, str | None]:
    """Probabilities for the metrics, and a note when outputs had to be read as logits.

    Outputs recorded as probabilities that are negative or above 1 cannot be probabilities (a
    linear head trained with a loss that expected softmax); they are read as logits, with a
    note, so the evaluation never fails after a finished training.
    """
    if logits:
        return softmax(y_pred), None
    if y_pred.size and y_pred.ndim == 2 and y_pred.shape[1] > 1:
        low, high = float(np.min(y_pred)), float(np.max(y_pred))
        if low < -PROBABILITY_SLACK or high > 1.0 + PROBABILITY_SLACK:
            note = (
                f"the model's outputs are not probabilities (they range from {low:.4g} to {high:.4g}); "
                "they were read as logits and turned into probabilities with a softmax"
            )
            return softmax(y_pred), note
    return y_pred, None


def evaluate_test_split(
    model: keras.Model, data: PreparedData, run_dir: Path, logits: bool | None = None
) -> dict[str, Any]:
    """Predict the test split, save the predictions, and compute the task's metrics on them.

    Regression values are taken back to original units first, so the report speaks the
    data's language; classification logits become probabilities. `logits=None` reads what the
    run recorded (re-evaluating a finished run).
    """
    if logits is None:
        logits = outputs_are_logits(model, data.task, run_dir)
    y_pred = predict_array(model, data.x_test)
    y_true = data.y_test
    note = None
    if data.task == "regression":
        y_pred = data.preprocessor.inverse_targets(y_pred)
        y_true = data.preprocessor.inverse_targets(y_true)
    else:
        y_pred, note = as_class_probabilities(y_pred, logits)
    predictions = RunDir(run_dir).predictions
    atomic.atomic_write(predictions, lambda handle: np.savez(handle, y_true=y_true, y_pred=y_pred), binary=True)
    try:
        evaluation = evaluate_predictions(data.task, y_true, y_pred, data.class_names)
    except ValueError as err:
        raise TrainingError(
            f"the test-split predictions cannot be evaluated: {err}. The trained model is saved in {run_dir}; "
            "the predictions are in " + str(predictions)
        ) from None
    if logits and data.task == "classification":
        evaluation["outputs"] = "logits, turned into probabilities with a softmax before the metrics"
    elif note:
        evaluation["outputs"] = note
    return evaluation
