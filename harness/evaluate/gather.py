"""One comparison across runs (a sweep, or any hand-picked set): JSON, Markdown and HTML.

Everything is read from each run's report.json and metrics.jsonl, the run-directory contract,
so runs from different machines, tasks or harness builds of the same schema can be compared.

The output folder is written only if harness made it: a new or empty folder gets a marker file,
and a folder is written into again only when it has that marker (or holds nothing but an older
comparison). Nothing in it is ever deleted.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import atomic
from harness.envinfo import utc_now
from harness.errors import RunDirError
from harness.evaluate import plots as plotting
from harness.evaluate.document import Bullets, Document, Image, Paragraph, Section, Table
from harness.evaluate.formatting import MISSING, fmt_duration, fmt_float
from harness.evaluate.inputs import read_history
from harness.evaluate.render_html import document_to_html
from harness.evaluate.render_md import document_to_markdown
from harness.evaluate.store import REPORT_SCHEMA_VERSION, load_report, part

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
COMPARISON_HTML = "comparison.html"
COMPARISON_MARKER = ".harness-comparison"
SHOWN_CHARS = 200
COMPARISON_FILES = frozenset({COMPARISON_JSON, COMPARISON_MD, COMPARISON_HTML, COMPARISON_MARKER})
IGNORED_CONFIG_KEYS = frozenset({"run.name"})
VALIDATION_KEYS = ("val_loss", "val_accuracy", "val_mae")
LOWER_IS_BETTER = frozenset({"val_loss", "val_mae"})
TEST_COLUMNS = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro F1"),
    ("roc_auc", "ROC-AUC"),
    ("mae", "MAE"),
    ("rmse", "RMSE"),
    ("r2", "R²"),
)
_UNSET = "<unset>"


def gather_reports(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write comparison.json, comparison.md and comparison.html into `out_dir`; return the .md path.

    Every run must have a report; the first one without names its directory in the error.
    Everything is read and checked before anything is written.
    """
    if not run_dirs:
        raise RunDirError("gathering needs at least one run directory. Received: none")
    dirs = [Path(run_dir) for run_dir in run_dirs]
    out_dir = Path(out_dir)
    check_out_dir(out_dir, dirs)
    reports = [load_report(run_dir) for run_dir in dirs]
    histories = [read_history(run_dir) for run_dir in dirs]
    labels = run_labels(reports, dirs)
    differing = differing_keys([compared_keys(report) for report in reports])
    rows = [
        comparison_row(label, run_dir, report, history, differing)
        for label, run_dir, report, history in zip(labels, dirs, reports, histories, strict=True)
    ]
    comparison = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": utc_now(),
        "differing_config_keys": differing,
        "runs": rows,
    }
    problems: list[str] = []
    images = comparison_images(rows, dict(zip(labels, histories, strict=True)), problems)
    document = comparison_document(comparison, images.keys(), problems)
    write_comparison(
        out_dir,
        {
            COMPARISON_JSON: _json_text(comparison),
            COMPARISON_MD: document_to_markdown(document),
            COMPARISON_HTML: document_to_html(document, images),
        },
    )
    return out_dir / COMPARISON_MD


def check_out_dir(out_dir: Path, run_dirs: Sequence[Path]) -> None:
    """Refuse an output folder that is not harness's to write into, before anything is read or written.

    Refused: an existing file; the current folder or one of its parents; a run directory or a
    folder holding one; a non-empty folder that `harness report` did not make.
    """
    shown = str(out_dir)[:SHOWN_CHARS]
    try:
        _check_out_dir(out_dir, shown, run_dirs)
    except OSError as err:  # e.g. a name too long for the filesystem, or a folder that cannot be listed
        raise RunDirError(f"--out {shown}: {err.strerror or err}; choose another folder for the comparison") from None


def _check_out_dir(out_dir: Path, shown: str, run_dirs: Sequence[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out {shown} is an existing file, not a folder; choose a new folder for the comparison")
    target = out_dir.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise RunDirError(
            f"--out {shown} is the current folder or one of its parents; choose a new folder for the comparison, "
            "e.g. --out comparison"
        )
    for run_dir in run_dirs:
        resolved = run_dir.resolve()
        if target == resolved or target in resolved.parents:
            raise RunDirError(
                f"--out {shown} is run directory {run_dir} or holds it; choose a new folder for the comparison"
            )
    if out_dir.is_dir() and not _ours(out_dir):
        raise RunDirError(
            f"--out {shown} is a folder that `harness report` did not create (it has no {COMPARISON_MARKER} "
            "and is not empty); choose a new folder for the comparison, or empty this one"
        )


def _ours(folder: Path) -> bool:
    """Empty, marked by harness, or holding only the files of an older comparison."""
    names = {path.name for path in folder.iterdir()}
    return not names or COMPARISON_MARKER in names or (COMPARISON_JSON in names and names <= COMPARISON_FILES)


def write_comparison(out_dir: Path, files: Mapping[str, str]) -> None:
    """Mark the folder as a comparison, then write each file atomically; a failure names the file.

    Folders this call created are removed again if writing fails, so no half-made folder
    blocks the next attempt; in an existing folder only files that did not exist before are removed.
    """
    created = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]
    written: list[Path] = []
    path = out_dir
    try:
        for name, text in {COMPARISON_MARKER: _marker_text(), **files}.items():
            path = out_dir / name
            existed = path.exists()
            atomic.write_text(path, text)
            if not existed:
                written.append(path)
    except OSError as err:
        for done in written:
            done.unlink(missing_ok=True)
        _remove_empty(created)
        raise RunDirError(f"cannot write {path}: {err.strerror or err}") from None


def _marker_text() -> str:
    return _json_text({"created_by": "harness report", "created": utc_now()})


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders this call created, innermost first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def run_labels(reports: Sequence[Mapping[str, Any]], dirs: Sequence[Path]) -> list[str]:
    """Run names, made unique with the directory name (then a number) where two runs share one."""
    pairs = list(zip(reports, dirs, strict=True))
    names = [str(part(report, "run").get("name") or run_dir.name) for report, run_dir in pairs]
    labels = [
        name if names.count(name) == 1 else f"{name} ({run_dir.name})"
        for name, run_dir in zip(names, dirs, strict=True)
    ]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return unique


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys (`training.optimizer.learning_rate`); lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def compared_keys(report: Mapping[str, Any]) -> dict[str, Any]:
    """The config's dotted keys plus how the run was actually set up (`setup.*`).

    Two runs with the same config can still differ in what matters for their results: the
    strategy `auto` resolved to, the number of replicas, the global batch and the harness build.
    """
    env, training = part(report, "environment"), part(report, "training")
    distribute, versions = part(env, "distribute"), part(env, "versions")
    setup = {
        "setup.strategy": distribute.get("strategy"),
        "setup.replicas": distribute.get("replicas"),
        "setup.global_batch": training.get("global_batch_size"),
        "setup.harness_version": versions.get("harness"),
    }
    return {**flatten(part(report, "config")), **{k: v for k, v in setup.items() if v is not None}}


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dotted keys whose value is not the same in every run; a key some runs lack counts as differing."""
    keys = sorted({key for config in configs for key in config} - IGNORED_CONFIG_KEYS)
    return [key for key in keys if len({_canonical(config.get(key, _UNSET)) for config in configs}) > 1]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def comparison_row(
    label: str,
    run_dir: Path,
    report: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    differing: Sequence[str],
) -> dict[str, Any]:
    """One run's line of the comparison; fields that do not apply to its task are None."""
    data, model, training = part(report, "data"), part(report, "model"), part(report, "training")
    flat = compared_keys(report)
    return {
        "run": label,
        "dir": str(run_dir.resolve()),
        "task": report.get("task"),
        "dataset": data.get("dataset"),
        "model": model.get("name"),
        "parameters": model.get("parameters"),
        "test": test_metrics(part(report, "test")),
        "headline": headline(part(report, "test")),
        "best_val": best_validation(history),
        "epochs_run": training.get("epochs_run", len(history) or None),
        "wall_time_s": training.get("wall_time_s"),
        "train_samples_per_s": training.get("train_samples_per_s"),
        "config": {key: flat[key] for key in differing if key in flat},
    }


def test_metrics(test: Mapping[str, Any]) -> dict[str, Any]:
    macro = part(test, "macro_avg")
    return {
        "accuracy": test.get("accuracy"),
        "macro_f1": macro.get("f1-score"),
        "roc_auc": test.get("roc_auc"),
        "mae": test.get("mae"),
        "rmse": test.get("rmse"),
        "r2": test.get("r2"),
    }


def headline(test: Mapping[str, Any]) -> dict[str, Any]:
    """The metric a bar plot compares: accuracy for classification, MAE for regression."""
    value = test.get("headline")
    if isinstance(value, Mapping) and value.get("metric"):
        return {"metric": value["metric"], "value": value.get("value")}
    return {"metric": None, "value": None}


def best_validation(history: Sequence[Mapping[str, float]]) -> dict[str, float | None]:
    """Best value per validation metric over all epochs: minimum for losses/errors, maximum otherwise."""
    best: dict[str, float | None] = {}
    for key in VALIDATION_KEYS:
        values = [row[key] for row in history if key in row]
        best[key] = (min(values) if key in LOWER_IS_BETTER else max(values)) if values else None
    return best


def comparison_images(
    rows: Sequence[Mapping[str, Any]],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    problems: list[str],
) -> dict[str, bytes]:
    """A bar plot of each run's headline test metric and the validation curves overlaid."""
    groups: dict[str, list[tuple[str, float]]] = {}
    for row in rows:
        metric, value = row["headline"]["metric"], row["headline"]["value"]
        if metric and isinstance(value, (int, float)):
            groups.setdefault(str(metric), []).append((row["run"], float(value)))
    drawn = {
        "headline": plotting.safe_plot("headline", lambda: plotting.headline_bars_png(groups), problems),
        "validation": plotting.safe_plot(
            "validation curves", lambda: plotting.validation_curves_png(histories, VALIDATION_KEYS), problems
        ),
    }
    return {key: png for key, png in drawn.items() if png}


def comparison_document(
    comparison: Mapping[str, Any], image_keys: Collection[str], problems: Sequence[str]
) -> Document:
    rows: list[Mapping[str, Any]] = comparison["runs"]
    differing: list[str] = comparison["differing_config_keys"]
    sections = [Section("Runs", [runs_table(rows, differing)])]
    if differing:
        sections.append(Section("Config keys that differ", [Bullets(differing)]))
    else:
        sections.append(Section("Config keys that differ", [Paragraph("All runs share the same config and setup.")]))
    images = [
        Image(key, caption)
        for key, caption in (
            ("headline", "Headline test metric per run"),
            ("validation", "Validation curves per epoch, all runs overlaid"),
        )
        if key in image_keys
    ]
    if images:
        sections.append(Section("Plots", list(images), html_only=True))
    sections.append(Section("Run directories", [Bullets([f"{row['run']}: {row['dir']}" for row in rows])]))
    if problems:
        sections.append(Section("Report problems", [Bullets(list(problems))]))
    return Document(
        title=f"Comparison of {len(rows)} run{'s' if len(rows) != 1 else ''}",
        subtitle=f"created {comparison.get('created', MISSING)}",
        sections=sections,
    )


def runs_table(rows: Sequence[Mapping[str, Any]], differing: Sequence[str]) -> Table:
    """One line per run; metric columns no run has are dropped, others stay blank where n/a."""
    metric_columns = [(key, title) for key, title in TEST_COLUMNS if _any_value(rows, "test", key)]
    val_columns = [key for key in VALIDATION_KEYS if _any_value(rows, "best_val", key)]
    header = [
        "run",
        "task",
        "dataset",
        "model",
        *(title for _, title in metric_columns),
        *(f"best {key}" for key in val_columns),
        "epochs",
        "wall time",
        "samples/s",
        "config differences",
    ]
    body = [
        [
            str(row["run"]),
            _blank(row["task"]),
            _blank(row["dataset"]),
            _blank(row["model"]),
            *(_metric(row["test"].get(key)) for key, _ in metric_columns),
            *(_metric(row["best_val"].get(key)) for key in val_columns),
            _blank(row["epochs_run"]),
            fmt_duration(row["wall_time_s"]) if row["wall_time_s"] is not None else "",
            _rate(row["train_samples_per_s"]),
            config_cell(row["config"], differing),
        ]
        for row in rows
    ]
    return Table(header, body)


def config_cell(values: Mapping[str, Any], differing: Sequence[str]) -> str:
    """`key=value` for every differing key; `unset` where this run's config lacks the key."""
    return "; ".join(f"{key}={_config_value(values[key]) if key in values else 'unset'}" for key in differing)


def _config_value(value: Any) -> str:
    """Config values exactly as written (a learning rate of 1e-05 must not read 0.0000)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _any_value(rows: Sequence[Mapping[str, Any]], part: str, key: str) -> bool:
    return any(row[part].get(key) is not None for row in rows)


def _rate(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _metric(value: Any) -> str:
    return "" if value is None else fmt_float(value)


def _blank(value: Any) -> str:
    return "" if value is None else str(value)
