"""Use a finished run: predict new inputs with its saved preprocessing, or re-evaluate it."""

from __future__ import annotations

import csv
import io as stdio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from harness import atomic
from harness.config import load_config
from harness.data import Preprocessor, fit_data_to_model, prepare_data
from harness.data.newrows import NewRows, PredictOptions
from harness.errors import RunDirError, UserInputError
from harness.evaluate import load_report, write_report
from harness.models import describe_model
from harness.models.saved import MESSAGE_CHARS, check_keras_file
from harness.rundir import RunDir, read_metrics, read_object
from harness.train.evaluation import evaluate_test_split, outputs_are_logits, predict_array
from harness.train.run import reproduce_command


def load_run_model(run_dir: Path) -> keras.Model:
    """The trained model of a run directory, with a clear error if it is not there or not loadable."""
    path = RunDir(run_dir).model
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise RunDirError(
            f"{run_dir} is not a finished run directory: {path.name} is missing (the run has not finished, failed "
            "before saving its model, or the folder is not a run directory)"
        )
    check_keras_file(path)
    try:
        return keras.saving.load_model(path)
    except Exception as err:
        text = str(err)
        text = text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."
        raise RunDirError(
            f"{path} cannot be loaded as a Keras model: {type(err).__name__}: {text}. A model with custom "
            "layers, losses or functions needs them registered (@keras.saving.register_keras_serializable) "
            "in a module that is imported before loading."
        ) from None


@dataclass(frozen=True)
class Predictions:
    """Where predictions were written, how many rows they cover, and what the user should hear."""

    path: Path
    rows: int
    predicted: int
    notes: list[str]
    warnings: list[str]


def default_output(input_path: Path) -> Path:
    """INPUT.predictions.csv beside the input: `new.csv` -> `new.predictions.csv`, `pics/` -> `pics.predictions.csv`."""
    stem = input_path.name if input_path.is_dir() else input_path.stem
    return input_path.parent / f"{stem}.predictions.csv"


def check_output(target: Path, input_path: Path, run_dir: Path) -> None:
    """Refuse an output that would destroy the input or the run, or cannot be written, before any work."""
    if target.is_dir():
        raise UserInputError(f"output {target} is a folder; give a file path such as {target / 'predictions.csv'}")
    if target.exists() and input_path.exists() and target.resolve() == input_path.resolve():
        raise UserInputError(f"output {target} is the input file; give another path with -o")
    if target.exists() and target.resolve().is_relative_to(run_dir.resolve()):
        raise UserInputError(
            f"output {target} is a file of the run directory {run_dir}; write predictions elsewhere with -o"
        )
    out = target.absolute()
    folder = next((path for path in out.parents if path.exists()), None)
    if folder is not None and not folder.is_dir():
        raise UserInputError(f"output {target} cannot be created: {folder} is a file, not a folder")
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise UserInputError(f"output {target} cannot be created: the folder {folder} is not writable")


def predict_file(
    run_dir: Path, input_path: Path, output: Path | None = None, options: PredictOptions | None = None
) -> Predictions:
    """Write predictions for a CSV, NPZ/NPY file or image folder as CSV, one row per input row.

    The first column identifies each row (its row number, `options.id_column`, array index or
    image path), so predictions join back to the input even when rows were skipped.
    """
    run_dir, input_path = Path(run_dir), Path(input_path)
    target = output or default_output(input_path)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    check_output(target, input_path, run_dir)
    preprocessor = Preprocessor.load(RunDir(run_dir).preprocessing)
    rows = preprocessor.read_new(input_path, options)
    model = load_run_model(run_dir)
    y = predict_array(model, rows.x, logits=outputs_are_logits(model, preprocessor.task, run_dir))
    notes = list(rows.notes)
    if target.is_file():
        notes.append(f"replaced the existing file {target}")
    atomic.write_text(target, predictions_csv(preprocessor, rows, y))
    return Predictions(target, len(rows.ids), int(rows.predicted.sum()), notes, list(rows.warnings))


def predictions_csv(preprocessor: Preprocessor, rows: NewRows, y: np.ndarray) -> str:
    """The identifier, then for classification the label and one probability per class; for
    regression the targets in original units. Rows that were not predicted keep empty cells."""
    buffer = stdio.StringIO()
    writer = csv.writer(buffer)
    header, cells = _prediction_cells(preprocessor, y)
    writer.writerow([rows.id_name, *header])
    predicted = iter(cells)
    empty = [""] * len(header)
    for row_id, done in zip(rows.ids, rows.predicted.tolist(), strict=True):
        writer.writerow([row_id, *(next(predicted) if done else empty)])
    return buffer.getvalue()


def _prediction_cells(preprocessor: Preprocessor, y: np.ndarray) -> tuple[list[str], list[list[str]]]:
    if preprocessor.task == "classification":
        probs = _matrix(y)
        names = preprocessor.class_names or [str(i) for i in range(probs.shape[1])]
        if probs.shape[1] == 1 and len(names) == 2:  # one sigmoid unit: the probability of the second class
            probs = np.hstack([1.0 - probs, probs])
        labels = preprocessor.decode_labels(np.argmax(probs, axis=1)) if len(probs) else []
        header = ["prediction", *[f"prob_{name}" for name in names]]
        return header, [[label, *[f"{p:.6f}" for p in row]] for label, row in zip(labels, probs, strict=True)]
    values = _matrix(preprocessor.inverse_targets(y))
    names = preprocessor.target_names or [f"target_{i}" for i in range(values.shape[1])]
    return list(names), [[f"{v:.6g}" for v in row] for row in values]


def _matrix(values: np.ndarray) -> np.ndarray:
    """Model outputs as one row of floats per sample, also for zero samples."""
    values = np.asarray(values, np.float64)
    return values.reshape(len(values), int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1)


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-run the test-split evaluation of a run with a saved model and (re)write its report.

    A run that saved its model but stopped before writing report.json (evaluation failed, the
    job ended) gets a report too: what training recorded is rebuilt from config.yaml, env.json
    and metrics.jsonl, with a note saying so.
    """
    run = RunDir(run_dir)
    model = load_run_model(run_dir)
    report = load_report(run_dir) if run.report.is_file() else {}
    config = load_config(run.config)
    data = prepare_data(config.data, config.run.seed, run_dir)
    data = fit_data_to_model(data, model)  # the same adaptation as in training
    evaluation = evaluate_test_split(model, data, run_dir)
    write_report(
        run_dir,
        task=data.task,
        evaluation=evaluation,
        training=report.get("training") or _training_from_metrics(run),
        data=data.summary(),
        model=report.get("model") or describe_model(model, config.model),
        environment=report.get("environment") or (read_object(run.env) if run.env.is_file() else {}),
        config=report.get("config") or config.model_dump(mode="json"),
        command=reproduce_command(run_dir),
    )
    return evaluation


def _training_from_metrics(run: RunDir) -> dict[str, Any]:
    """The training section of a report that training did not write, from metrics.jsonl."""
    history = read_metrics(run.metrics)
    return {
        "epochs_run": len(history),
        "note": f"rebuilt by harness evaluate from {run.metrics.name}: training ended before writing its report",
    }
