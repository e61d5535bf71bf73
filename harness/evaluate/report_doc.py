"""What a run report says, as a `Document`; `render_md` and `render_html` decide how it looks.

Everything here is a pure function of report.json and the metrics history, so a report can be
rebuilt on a login node long after the run, and tests can check the text without training.
Sections read the report defensively: a key the training code did not write is shown as
missing, never raised on.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import yaml

from harness.evaluate.document import Bullets, Code, Document, Image, Paragraph, Section, Table, key_values
from harness.evaluate.formatting import (
    MISSING,
    fmt_duration,
    fmt_float,
    fmt_int,
    fmt_shape,
    fmt_value,
    humanize_key,
)
from harness.evaluate.store import part
from harness.rundir.layout import REPORT_HTML, REPORT_JSON

CONFUSION_TABLE_MAX_CLASSES = 20
EPOCH_TABLE_MAX_ROWS = 50
NAMES_SHOWN = 20
NAME_LISTS = {"class_names": "classes", "target_names": "targets", "feature_names": "features"}
MODEL_KEYS = ("name", "parameters", "trainable_parameters", "input_shape", "output_shape")
EPOCH_COLUMNS = (
    "loss",
    "val_loss",
    "accuracy",
    "val_accuracy",
    "mae",
    "val_mae",
    "lr",
    "epoch_time_s",
    "samples_per_s",
)
TRAINING_LABELS = {
    "loss": "loss",
    "loss_source": "loss from",
    "optimizer": "optimizer",
    "optimizer_source": "optimizer from",
    "outputs": "model outputs",
    "compiled_metrics_use": "metrics from compile()",
    "epochs_run": "epochs run",
    "best_epoch": "best epoch",
    "best_value": "best monitored value",
    "stopped_early": "stopped early",
    "stop_reason": "stop reason",
    "wall_time_s": "wall time",
    "train_samples_per_s": "training samples/s",
    "global_batch_size": "global batch size",
    "replicas": "replicas",
    "strategy": "strategy",
    "final_lr": "final learning rate",
}
PLOTS = (
    ("learning_curves", "Learning curves: train vs validation per epoch"),
    ("confusion_matrix", "Confusion matrix, each row normalised by the number of true samples"),
    ("roc_curves", "ROC curves, one-vs-rest"),
    ("predicted_vs_true", "Predicted vs true values on the test split"),
    ("residuals", "Residuals on the test split"),
)


def report_document(
    report: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    image_keys: Collection[str] = (),
    problems: Sequence[str] = (),
) -> Document:
    """The full run report; `image_keys` lists the plots that exist and `problems` what went wrong."""
    run = part(report, "run")
    sections = [
        results_section(report),
        *detail_sections(report),
        plots_section(image_keys),
        training_section(part(report, "training"), history),
        epochs_section(history),
        data_section(part(report, "data")),
        model_section(part(report, "model")),
        reproduce_section(run, part(report, "config")),
        environment_section(part(report, "environment")),
        config_section(part(report, "config")),
    ]
    if problems:
        sections.append(Section("Report problems", [Bullets(list(problems))]))
    return Document(
        title=f"Run report: {run.get('name', MISSING)}",
        subtitle=subtitle(report),
        sections=[section for section in sections if section is not None],
    )


def subtitle(report: Mapping[str, Any]) -> str:
    data, model, run = part(report, "data"), part(report, "model"), part(report, "run")
    parts = [
        str(report.get("task", MISSING)),
        f"dataset {data.get('dataset', MISSING)}",
        f"model {model.get('name', MISSING)}",
        f"created {run.get('created', MISSING)}",
    ]
    return " · ".join(parts)


def results_section(report: Mapping[str, Any]) -> Section:
    """Headline test metrics first: the one thing every reader looks for."""
    test = part(report, "test")
    blocks: list[Any] = [key_values(headline_pairs(str(report.get("task")), test))]
    if test.get("roc_auc") is None and test.get("roc_auc_reason"):
        blocks.append(Paragraph(str(test["roc_auc_reason"])))
    return Section("Test results", blocks)


def headline_pairs(task: str, test: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The metric lines shared by the report and the model card."""
    if task == "classification":
        return [
            ("accuracy", fmt_float(test.get("accuracy"))),
            ("macro F1", fmt_float(_nested(test, "macro_avg", "f1-score"))),
            ("weighted F1", fmt_float(_nested(test, "weighted_avg", "f1-score"))),
            (auc_label(test), fmt_float(test.get("roc_auc"))),
            ("log loss", fmt_float(test.get("log_loss"))),
            ("test samples", fmt_int(test.get("n"))),
        ]
    return [
        ("MAE", fmt_float(test.get("mae"))),
        ("RMSE", fmt_float(test.get("rmse"))),
        ("R²", fmt_float(test.get("r2"))),
        ("test samples", fmt_int(test.get("n"))),
        ("targets", fmt_int(test.get("n_targets"))),
    ]


def auc_label(test: Mapping[str, Any]) -> str:
    names = test.get("class_names") or []
    if len(names) == 2:
        return f"ROC-AUC (positive class {names[1]})"
    return "ROC-AUC (one-vs-rest, macro)"


def _nested(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)  # type: ignore[assignment]
    return mapping


def detail_sections(report: Mapping[str, Any]) -> list[Section]:
    test = part(report, "test")
    if report.get("task") == "classification":
        return [per_class_section(test), confusion_section(test)]
    if isinstance(test.get("per_target"), Mapping):
        return [per_target_section(test["per_target"])]
    return []


def per_class_section(test: Mapping[str, Any]) -> Section:
    per_class = part(test, "per_class")
    aucs = part(test, "roc_auc_per_class")
    rows = [_score_cells(str(name), scores, aucs.get(name)) for name, scores in per_class.items()]
    for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        if isinstance(test.get(key), Mapping):
            rows.append(_score_cells(label, test[key], None))
    header = ["class", "precision", "recall", "F1", "support", "ROC-AUC (one-vs-rest)"]
    return Section("Per-class metrics", [Table(header, rows)])


def _score_cells(label: str, scores: Mapping[str, Any], auc: Any) -> list[str]:
    return [
        label,
        fmt_float(scores.get("precision")),
        fmt_float(scores.get("recall")),
        fmt_float(scores.get("f1-score")),
        fmt_int(scores.get("support")),
        fmt_float(auc),
    ]


def confusion_section(test: Mapping[str, Any]) -> Section:
    """Counts as a table while it fits on a page; beyond that the heatmap carries it."""
    matrix = part(test, "confusion_matrix")
    counts = matrix.get("counts") or []
    names = [str(name) for name in matrix.get("labels") or range(len(counts))]
    if not counts:
        return Section("Confusion matrix", [Paragraph("No confusion matrix in the report.")])
    if len(counts) > CONFUSION_TABLE_MAX_CLASSES:
        note = (
            f"{len(counts)} classes are too many for a readable table; the counts are in "
            f"{REPORT_JSON} (test.confusion_matrix) and the heatmap is in {REPORT_HTML}."
        )
        return Section("Confusion matrix", [Paragraph(note)])
    rows = [[names[i], *(fmt_int(value) for value in row)] for i, row in enumerate(counts)]
    return Section(
        "Confusion matrix",
        [
            Paragraph("Rows: true class, columns: predicted class."),
            Table(["true / predicted", *names], rows),
        ],
    )


def per_target_section(per_target: Mapping[str, Any]) -> Section:
    rows = [
        [str(name), fmt_float(scores.get("mae")), fmt_float(scores.get("rmse")), fmt_float(scores.get("r2"))]
        for name, scores in per_target.items()
        if isinstance(scores, Mapping)
    ]
    return Section("Per-target metrics", [Table(["target", "MAE", "RMSE", "R²"], rows)])


def plots_section(image_keys: Collection[str]) -> Section | None:
    images: list[Any] = [Image(key, caption) for key, caption in PLOTS if key in image_keys]
    return Section("Plots", images, html_only=True) if images else None


def training_section(training: Mapping[str, Any], history: Sequence[Mapping[str, float]]) -> Section:
    """Known keys get readable labels and units; keys added later still show up, humanised."""
    labelled = [(key, label) for key, label in TRAINING_LABELS.items() if key in training]
    pairs = [(label, _training_value(key, training[key])) for key, label in labelled]
    pairs += extra_pairs(training, skip=TRAINING_LABELS) + history_pairs(history)
    if not pairs:
        return Section("Training", [Paragraph("No training summary in the report.")])
    return Section("Training", [key_values(pairs)])


def _training_value(key: str, value: Any) -> str:
    if key == "wall_time_s":
        return fmt_duration(value)
    if key == "train_samples_per_s":
        return f"{value:,.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING
    if key == "final_lr":
        return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING
    return short_value(value)


def history_pairs(history: Sequence[Mapping[str, float]]) -> list[tuple[str, str]]:
    """Best validation loss and last training loss, read from metrics.jsonl."""
    pairs: list[tuple[str, str]] = []
    with_val = [row for row in history if "val_loss" in row]
    if with_val:
        best = min(with_val, key=lambda row: row["val_loss"])
        pairs.append(("best val_loss (epoch)", f"{fmt_float(best['val_loss'])} ({int(best['epoch'])})"))
    with_loss = [row for row in history if "loss" in row]
    if with_loss:
        pairs.append(("final training loss", fmt_float(with_loss[-1]["loss"])))
    return pairs


def epochs_section(history: Sequence[Mapping[str, float]]) -> Section | None:
    """Per-epoch numbers for readers of the Markdown, which carries no plots."""
    columns = [key for key in EPOCH_COLUMNS if any(key in row for row in history)]
    if not history or not columns:
        return None
    rows = [[str(int(row["epoch"])), *(_epoch_cell(k, row.get(k)) for k in columns)] for row in thin(history)]
    blocks: list[Any] = [Table(["epoch", *columns], rows)]
    if len(history) > EPOCH_TABLE_MAX_ROWS:
        blocks.insert(0, Paragraph(f"{EPOCH_TABLE_MAX_ROWS} of {len(history)} epochs shown."))
    return Section("Per-epoch metrics", blocks)


def _epoch_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "lr":
        return f"{value:.4g}"
    if key in ("samples_per_s", "epoch_time_s"):
        return f"{value:,.1f}"
    return fmt_float(value)


def thin(history: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]:
    """Evenly spaced epochs, always keeping the first and the last."""
    if len(history) <= EPOCH_TABLE_MAX_ROWS:
        return list(history)
    step = (len(history) - 1) / (EPOCH_TABLE_MAX_ROWS - 1)
    return [history[round(i * step)] for i in range(EPOCH_TABLE_MAX_ROWS)]


def data_section(data: Mapping[str, Any]) -> Section:
    known = ("dataset", "task", "n_train", "n_val", "n_test")
    pairs = [
        ("dataset", short_value(data.get("dataset"))),
        ("task", short_value(data.get("task"))),
        ("train / validation / test", " / ".join(fmt_int(data.get(key)) for key in known[2:])),
    ]
    pairs += [(label, names_summary(data[key])) for key, label in NAME_LISTS.items() if data.get(key)]
    pairs += extra_pairs(data, skip={*known, *NAME_LISTS, "notes"})
    blocks: list[Any] = [key_values(pairs)]
    notes = note_lines(data.get("notes"))
    if notes:
        blocks += [Paragraph("Data notes:"), Bullets(notes)]
    return Section("Data", blocks)


def names_summary(names: Any) -> str:
    """`3: a, b, c`, shortened for a hundred classes or a thousand features."""
    if not isinstance(names, (list, tuple)):
        return short_value(names)
    shown = ", ".join(str(name) for name in names[:NAMES_SHOWN])
    more = f", … ({len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else ""
    return f"{len(names)}: {shown}{more}"


def note_lines(notes: Any) -> list[str]:
    """Data notes as sentences: a dict `{"rows_dropped_missing": 12}` or a list of strings."""
    if isinstance(notes, Mapping):
        return [f"{humanize_key(str(key))}: {short_value(value)}" for key, value in notes.items()]
    if isinstance(notes, (list, tuple)):
        return [str(note) for note in notes]
    return [str(notes)] if notes else []


def model_section(model: Mapping[str, Any]) -> Section:
    pairs = model_pairs(model)
    pairs += extra_pairs(model, skip=MODEL_KEYS)
    return Section("Model", [key_values(pairs)])


def model_pairs(model: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("name", short_value(model.get("name"))),
        ("parameters", fmt_int(model.get("parameters"))),
        ("trainable parameters", fmt_int(model.get("trainable_parameters"))),
        ("input shape", fmt_shape(model.get("input_shape"))),
        ("output shape", fmt_shape(model.get("output_shape"))),
    ]


def reproduce_section(run: Mapping[str, Any], config: Mapping[str, Any]) -> Section:
    pairs = [
        ("seed", short_value(run.get("seed"))),
        ("git commit", short_value(run.get("git_commit"))),
        ("run directory", short_value(run.get("dir"))),
        ("created (UTC)", short_value(run.get("created"))),
    ]
    command = str(run.get("command") or "")
    blocks: list[Any] = [key_values(pairs)]
    if command:
        blocks.append(Code(command, "sh", summary="Command to reproduce this run"))
    return Section("Reproduce", blocks)


def environment_section(environment: Mapping[str, Any]) -> Section:
    versions = part(environment, "versions")
    pairs = extra_pairs(environment, skip={"versions"})
    blocks: list[Any] = [key_values(pairs)] if pairs else []
    if versions:
        blocks.append(Table(["package", "version"], [[str(k), str(v)] for k, v in versions.items()]))
    return Section("Environment", blocks or [Paragraph("No environment information in the report.")])


def config_section(config: Mapping[str, Any]) -> Section | None:
    if not config:
        return None
    return Section("Config", [Code(config_yaml(config), "yaml", collapsed=True, summary="Resolved config")])


def config_yaml(config: Mapping[str, Any]) -> str:
    try:
        return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(config, indent=2, default=str)


def extra_pairs(mapping: Mapping[str, Any], skip: Collection[str]) -> list[tuple[str, str]]:
    """Keys a section has no label for yet: shown humanised, so new facts reach the report."""
    return [(humanize_key(str(key)), short_value(value)) for key, value in mapping.items() if key not in skip]


def short_value(value: Any, limit: int = 200) -> str:
    """A table cell for any value, cut short so a long list (frozen layers) cannot swamp a table."""
    text = fmt_value(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
