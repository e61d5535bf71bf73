"""Use a finished run: predict new inputs with its saved preprocessing, or re-evaluate it."""

from __future__ import annotations

import csv
import io as stdio
from pathlib import Path
from typing import Any

import keras
import numpy as np

from harness import atomic
from harness.config import load_config
from harness.data import Preprocessor, prepare_data
from harness.errors import RunDirError
from harness.evaluate import load_report, write_report
from harness.rundir import RunDir
from harness.train.evaluation import evaluate_test_split, predict_array
from harness.train.run import reproduce_command


def load_run_model(run_dir: Path) -> keras.Model:
    """The trained model of a run directory, with a clear error if it is not there."""
    path = RunDir(run_dir).model
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a finished run directory: {path.name} is missing")
    try:
        return keras.saving.load_model(path)
    except Exception as err:
        raise RunDirError(f"{path} cannot be loaded as a Keras model: {err}") from None


def predict_file(run_dir: Path, input_path: Path, output: Path | None = None) -> Path:
    """Write predictions for a CSV or NPZ file as CSV; returns the output path."""
    preprocessor = Preprocessor.load(RunDir(run_dir).preprocessing)
    model = load_run_model(run_dir)
    x = preprocessor.transform_file(input_path)
    y = predict_array(model, x)
    report = load_report(run_dir)
    target = output or input_path.with_suffix(".predictions.csv")
    atomic.write_text(target, predictions_csv(report["task"], y, preprocessor, report))
    return target


def predictions_csv(task: str, y: np.ndarray, preprocessor: Preprocessor, report: dict[str, Any]) -> str:
    """Classification: the label and one probability column per class; regression: the targets."""
    buffer = stdio.StringIO()
    writer = csv.writer(buffer)
    if task == "classification":
        names = report["data"].get("class_names") or [str(i) for i in range(y.shape[1])]
        writer.writerow(["prediction", *[f"prob_{name}" for name in names]])
        labels = preprocessor.decode_labels(np.argmax(y, axis=1))
        for label, probs in zip(labels, y, strict=True):
            writer.writerow([label, *[f"{p:.6f}" for p in probs]])
    else:
        values = preprocessor.inverse_targets(y)
        names = report["data"].get("target_names") or [f"target_{i}" for i in range(values.shape[1])]
        writer.writerow(names)
        for row in values:
            writer.writerow([f"{v:.6g}" for v in np.atleast_1d(row)])
    return buffer.getvalue()


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-run the test-split evaluation of a finished run and rewrite its report."""
    report = load_report(run_dir)
    config = load_config(RunDir(run_dir).config)
    data = prepare_data(config.data, config.run.seed, run_dir)
    model = load_run_model(run_dir)
    evaluation = evaluate_test_split(model, data, run_dir)
    write_report(
        run_dir,
        task=data.task,
        evaluation=evaluation,
        training=report["training"],
        data=data.summary(),
        model=report["model"],
        environment=report["environment"],
        config=report["config"],
        command=reproduce_command(run_dir),
    )
    return evaluation
