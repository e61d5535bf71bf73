"""Test-split predictions and their evaluation, shared by training and `harness evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from harness import atomic
from harness.data import PreparedData
from harness.evaluate import evaluate_predictions
from harness.rundir import RunDir


def predict_array(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Model outputs for `x`, in batches through one compiled function."""
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    dataset = tf.data.Dataset.from_tensor_slices(x.astype(np.float32)).batch(batch_size).prefetch(2)
    outputs = [np.asarray(forward(batch), dtype=np.float32) for batch in dataset]
    if not outputs:
        return np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)


def evaluate_test_split(model: keras.Model, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    """Predict the test split, save the predictions, and compute the task's metrics on them.

    Regression values are taken back to original units first, so the report speaks the
    data's language.
    """
    y_pred = predict_array(model, data.x_test)
    y_true = data.y_test
    if data.task == "regression":
        y_pred = data.preprocessor.inverse_targets(y_pred)
        y_true = data.preprocessor.inverse_targets(y_true)
    atomic.atomic_write(
        RunDir(run_dir).predictions, lambda handle: np.savez(handle, y_true=y_true, y_pred=y_pred), binary=True
    )
    return evaluate_predictions(data.task, y_true, y_pred, data.class_names)
