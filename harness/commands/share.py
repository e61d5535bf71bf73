"""Use a finished run: predict new inputs with its saved preprocessing, or re-evaluate it."""

from __future__ import annotations

import csv
import io as stdio
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from harness import atomic
from harness.config import Config, load_config
from harness.data import Preprocessor, fit_data_to_model, prepare_data
from harness.data.fingerprint import check_unchanged
from harness.data.newrows import NewRows, PredictOptions
from harness.errors import HarnessError, RunDirError, UserInputError
from harness.evaluate import load_report, write_report
from harness.imports import import_object, import_roots, is_import_path
from harness.models import describe_model
from harness.models.saved import REGISTER, check_keras_file, lambda_text, load_obstacles, quote_error
from harness.rundir import RunDir, read_metrics, read_object
from harness.train.evaluation import (
    LOGITS,
    as_class_probabilities,
    evaluate_test_split,
    outputs_are_logits,
    predict_array,
    softmax,
)
from harness.train.run import reproduce_command

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def load_run_model(run_dir: Path) -> keras.Model:
    """The trained model of a run directory, with a clear error if it is not there or not loadable.

    The module of the run's `model.name: module:function` is imported first, from the folders
    training imported it from (`code_folders`), so the custom layers it registers are known. The
    model is loaded without its compile state: predictions and the evaluation's metrics need no
    loss, optimizer or compiled metrics, which may be plain functions that cannot be restored.
    """
    path = RunDir(run_dir).model
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise RunDirError(
            f"{run_dir} is not a finished run directory: {path.name} is missing (the run has not finished, failed "
            "before saving its model, or the folder is not a run directory)"
        )
    check_keras_file(path)
    imported = import_user_code(run_dir)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise RunDirError(_load_error(path, err, imported)) from None


def _load_error(path: Path, err: Exception, imported: UserCode) -> str:
    lambdas, unknown = load_obstacles(path)
    unknown_text = f"it uses custom objects Keras does not know: {', '.join(unknown)}"
    if lambdas:
        return (
            f"{path} cannot be loaded: {lambda_text(lambdas)}. Train the model again with the lambda's "
            f"computation in a layer subclass, or in a Lambda over a named function, registered with {REGISTER} "
            "in the module of model.name. To use this run as it is, load it in Python with "
            "keras.saving.load_model(path, safe_mode=False), only if you trust the file"
        )
    if unknown and imported.failed:
        return f"{path} cannot be loaded: {unknown_text}. {imported.text}"
    if unknown:
        return (
            f"{path} cannot be loaded: {unknown_text}. {imported.text} Register each with {REGISTER} (a class "
            f"also needs get_config) in the module of model.name or a module it imports. Keras: {quote_error(err)}"
        )
    return f"{path} cannot be loaded as a Keras model: {quote_error(err)}. {imported.text}"


@dataclass(frozen=True)
class UserCode:
    """What importing a run's code did: `failed` when a module named by the run did not import."""

    text: str
    failed: bool = False


def import_user_code(run_dir: Path) -> UserCode:
    """Import the module of the run's `model.name: module:function`, saying what happened.

    A module that does not import is not an error yet: the model may not need it. If loading
    then fails, the text says why the module was not imported.
    """
    try:
        config = load_config(RunDir(run_dir).config)
    except HarnessError as err:
        return UserCode(f"The run's config could not be read to import its code: {err}", failed=True)
    name = config.model.name
    if not is_import_path(name):
        return UserCode(f"The run's config names no module of user code (model.name: {name!r}).")
    folders = code_folders(run_dir, config)
    try:
        import_object(name, folders)
    except ImportError as err:
        return UserCode(f"They could not be registered: model.name {name!r} does not import: {err}", failed=True)
    return UserCode(f"model.name {name!r} was imported first (from {', '.join(str(f) for f in folders)}).")


def code_folders(run_dir: Path, config: Config) -> tuple[Path, ...]:
    """Where training imported the run's code from, as far as the run shows, then the working directory.

    Training imports from the config file's folder, then its working directory
    (`harness.imports.import_roots`). That working directory is the run directory less its relative
    `run.output_dir/run.name`; the config file is the one the `harness train` command in env.json
    names, relative to it. A run moved elsewhere or started otherwise leaves the working directory.
    """
    recorded = _recorded_code_folders(run_dir)
    if recorded:
        return tuple(dict.fromkeys([*recorded, *import_roots(None)]))
    found: list[Path] = []  # a run from before training recorded its folders
    started_in = _training_cwd(run_dir, config)
    if started_in is not None:
        config_file = _training_config_file(run_dir, started_in)
        if config_file is not None:
            found.append(config_file.parent)
        found.append(started_in)
    return tuple(dict.fromkeys([*found, *import_roots(None)]))


def _recorded_code_folders(run_dir: Path) -> list[Path]:
    """The folders training imported user code from, as it recorded them in env.json."""
    try:
        folders = read_object(RunDir(run_dir).env).get("code_folders")
    except HarnessError:
        return []
    return [Path(folder) for folder in folders if isinstance(folder, str)] if isinstance(folders, list) else []


def _training_cwd(run_dir: Path, config: Config) -> Path | None:
    relative = Path(os.path.normpath(Path(config.run.output_dir) / config.run.name))
    if not relative.parts or relative.is_absolute() or relative.parts[0] == os.pardir:
        return None
    resolved = run_dir.resolve()
    if len(resolved.parts) <= len(relative.parts) or resolved.parts[-len(relative.parts) :] != relative.parts:
        return None
    return resolved.parents[len(relative.parts) - 1]


def _training_config_file(run_dir: Path, started_in: Path) -> Path | None:
    try:
        command = shlex.split(str(read_object(RunDir(run_dir).env).get("command", "")))
    except (HarnessError, ValueError):
        return None
    if "train" not in command:
        return None
    for item in command[command.index("train") + 1 :]:
        candidate = started_in / item  # an absolute item stays itself
        if Path(item).suffix in CONFIG_SUFFIXES and candidate.is_file():
            return candidate.resolve()
    return None


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
    logits = outputs_are_logits(model, preprocessor.task, run_dir)
    y = predict_array(model, rows.x, logits=logits)
    notes = list(rows.notes)
    if preprocessor.task == "classification" and not logits:
        y, note = _as_probabilities(y, run_dir)
        notes.extend([note] if note else [])
    if target.is_file():
        notes.append(f"replaced the existing file {target}")
    atomic.write_text(target, predictions_csv(preprocessor, rows, y))
    return Predictions(target, len(rows.ids), int(rows.predicted.sum()), notes, list(rows.warnings))


def _as_probabilities(y: np.ndarray, run_dir: Path) -> tuple[np.ndarray, str | None]:
    """Class scores as the run's evaluation read them, and a note when they were read as logits.

    A model recorded as ending in probabilities whose test outputs were not probabilities was
    evaluated on their softmax (`as_class_probabilities`); its predictions are too, also for rows
    whose scores happen to lie in [0, 1]. A run without that record is judged by these outputs.
    """
    if _evaluated_as_logits(run_dir):
        return softmax(y), (
            "the model's outputs are not probabilities (its head has no softmax, as the run's test "
            "evaluation found); the prob_* columns are their softmax, as in the run's report"
        )
    return as_class_probabilities(y, logits=False)


def _evaluated_as_logits(run_dir: Path) -> bool:
    """Whether the run's test evaluation turned outputs recorded as probabilities into probabilities.

    The evaluation records `outputs` only when it applied a softmax: to recorded logits, or to
    outputs that could not be probabilities; here the training record says probabilities.
    """
    try:
        report = load_report(run_dir)
    except HarnessError:
        return False
    test, training = report.get("test"), report.get("training")
    recorded = training.get("outputs") if isinstance(training, dict) else None
    return isinstance(test, dict) and bool(test.get("outputs")) and recorded not in (None, LOGITS)


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
    env = _env_or_empty(run)
    check_unchanged(env.get("data_fingerprint"), config.data.path, run_dir)
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
        environment=report.get("environment") or env,
        config=report.get("config") or config.model_dump(mode="json"),
        command=reproduce_command(run_dir),
    )
    return evaluation


def _env_or_empty(run: RunDir) -> dict[str, Any]:
    """env.json, or nothing when it is missing or damaged: the report can do without it."""
    try:
        return read_object(run.env) if run.env.is_file() else {}
    except HarnessError:
        return {}


def _training_from_metrics(run: RunDir) -> dict[str, Any]:
    """The training section of a report that training did not write, from metrics.jsonl."""
    history = read_metrics(run.metrics)
    return {
        "epochs_run": len(history),
        "note": f"rebuilt by harness evaluate from {run.metrics.name}: training ended before writing its report",
    }
