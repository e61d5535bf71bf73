"""model_card.md: what someone receiving the model needs, written from report.json alone.

Sharing a model means architecture + weights + how it was made and measured; the card puts the
last two next to the files, including the exact command that reproduces the run.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import atomic
from harness.evaluate.document import Bullets, Code, Document, Paragraph, Section, Table, key_values
from harness.evaluate.formatting import MISSING, fmt_int, fmt_shape
from harness.evaluate.render_md import document_to_markdown
from harness.evaluate.report_doc import headline_pairs, names_summary, note_lines, short_value
from harness.evaluate.store import load_report, part
from harness.rundir.layout import CONFIG, MODEL, MODEL_CARD, PREPROCESSING, REPORT_HTML, REPORT_JSON, REPORT_MD


def write_model_card(run_dir: Path) -> None:
    """(Re)write model_card.md in `run_dir` from its report.json."""
    run_dir = Path(run_dir)
    atomic.write_text(run_dir / MODEL_CARD, document_to_markdown(model_card_document(load_report(run_dir))))


def model_card_document(report: Mapping[str, Any]) -> Document:
    run, model, data = part(report, "run"), part(report, "model"), part(report, "data")
    task = str(report.get("task", MISSING))
    return Document(
        title=f"Model card: {model.get('name', MISSING)}",
        subtitle=f"run {run.get('name', MISSING)} · {task} · created {run.get('created', MISSING)}",
        sections=[
            model_part(model, task, part(report, "training")),
            interface_part(model, data, task, part(report, "training")),
            data_part(data),
            Section("Test metrics", [key_values(headline_pairs(task, part(report, "test")))]),
            Section("Limitations", [Paragraph(limitations(report))]),
            files_part(),
            usage_part(run),
            reproduce_part(run),
            versions_part(part(report, "environment")),
        ],
    )


def model_part(model: Mapping[str, Any], task: str, training: Mapping[str, Any] | None = None) -> Section:
    pairs = [
        ("architecture", short_value(model.get("name"))),
        ("task", task),
        ("parameters", fmt_int(model.get("parameters"))),
        ("trainable parameters", fmt_int(model.get("trainable_parameters"))),
    ]
    training = training or {}
    for key in ("loss", "optimizer"):
        if training.get(key):
            source = training.get(f"{key}_source")
            pairs.append((f"trained with {key}", f"{training[key]}" + (f" (from {source})" if source else "")))
    return Section("Model", [key_values(pairs)])


def interface_part(
    model: Mapping[str, Any], data: Mapping[str, Any], task: str, training: Mapping[str, Any] | None = None
) -> Section:
    """Inputs and outputs: the contract a user of the model must meet and can rely on."""
    pairs = [("input shape", fmt_shape(model.get("input_shape")))]
    if data.get("feature_names"):
        pairs.append(("input features", names_summary(data["feature_names"])))
    pairs.append(("output shape", fmt_shape(model.get("output_shape"))))
    if task == "classification" and (training or {}).get("outputs") == "logits":
        pairs.append(
            ("outputs", "one logit (unnormalised score) per class, in this order; softmax gives the "
             "probabilities (harness predict and harness evaluate apply it)")
        )  # fmt: skip
        pairs.append(("classes", names_summary(data.get("class_names") or [])))
    elif task == "classification":
        pairs.append(("outputs", "one probability per class, in this order"))
        pairs.append(("classes", names_summary(data.get("class_names") or [])))
    else:
        pairs.append(("outputs", "one value per target, in original units after inverse scaling"))
        pairs.append(("targets", names_summary(data.get("target_names") or [])))
    return Section("Inputs and outputs", [key_values(pairs)])


def data_part(data: Mapping[str, Any]) -> Section:
    pairs = [
        ("dataset", short_value(data.get("dataset"))),
        ("train samples", fmt_int(data.get("n_train"))),
        ("validation samples", fmt_int(data.get("n_val"))),
        ("test samples", fmt_int(data.get("n_test"))),
    ]
    blocks: list[Any] = [key_values(pairs)]
    notes = note_lines(data.get("notes"))
    if notes:
        blocks += [Paragraph("Data notes:"), Bullets(notes)]
    return Section("Training data", blocks)


def limitations(report: Mapping[str, Any]) -> str:
    """One honest sentence on what the numbers do and do not cover."""
    data, test = part(report, "data"), part(report, "test")
    text = (
        f"Measured only on the held-out test split of {data.get('dataset', MISSING)} "
        f"({fmt_int(test.get('n', data.get('n_test')))} samples) drawn from the same source as the "
        "training data; expect different results on data from another source, population or time."
    )
    if test.get("roc_auc_reason"):
        text += f" {test['roc_auc_reason']}."
    return text


def files_part() -> Section:
    items = [
        f"{MODEL}: Keras 3 model (architecture and weights).",
        f"{PREPROCESSING}: preprocessing fitted on the training split; inputs must go through it "
        "before the model.",
        f"{REPORT_JSON}, {REPORT_MD}, {REPORT_HTML}: test evaluation and training history.",
        f"{CONFIG}: the resolved experiment config.",
    ]
    return Section("Files", [Bullets(items)])


def usage_part(run: Mapping[str, Any]) -> Section:
    folder = str(run.get("dir") or ".")
    load = f"import keras\n\nmodel = keras.saving.load_model({str(Path(folder) / MODEL)!r})\n"
    predict = f"harness predict {shlex.quote(folder)} inputs.csv"
    return Section(
        "How to use it",
        [
            Code(load, "python", summary="Load the model in Python"),
            Code(predict, "sh", summary=f"Predict raw inputs with {PREPROCESSING} applied"),
        ],
    )


def reproduce_part(run: Mapping[str, Any]) -> Section:
    pairs = [("seed", short_value(run.get("seed"))), ("git commit", short_value(run.get("git_commit")))]
    blocks: list[Any] = [key_values(pairs)]
    if run.get("command"):
        blocks.append(Code(str(run["command"]), "sh", summary="Command to reproduce"))
    return Section("Reproduce", blocks)


def versions_part(environment: Mapping[str, Any]) -> Section:
    versions = part(environment, "versions")
    if not versions:
        return Section("Versions", [Paragraph("No version information in the report.")])
    rows = [[str(name), str(version)] for name, version in versions.items()]
    return Section("Versions", [Table(["package", "version"], rows)])
