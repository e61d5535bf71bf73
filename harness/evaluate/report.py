"""report.json and its renderings, report.md and report.html, in a run directory.

report.json is the versioned record of a run; the Markdown and HTML files are derived from it
(plus metrics.jsonl and test_predictions.npz) and can be rebuilt at any time with
`render_report`, without TensorFlow, for example on a login node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import atomic
from harness.envinfo import utc_now
from harness.errors import RunDirError
from harness.evaluate import plots as plotting
from harness.evaluate.inputs import Predictions, read_history, read_predictions
from harness.evaluate.metrics import TASKS
from harness.evaluate.model_card import write_model_card
from harness.evaluate.render_html import document_to_html
from harness.evaluate.render_md import document_to_markdown
from harness.evaluate.report_doc import report_document
from harness.evaluate.store import REPORT_SCHEMA_VERSION, jsonable, load_report, part
from harness.rundir.layout import REPORT_HTML, REPORT_MD
from harness.rundir.records import write_report_json

PlotMaker = Callable[[], bytes | None]


def write_report(
    run_dir: Path,
    *,
    task: str,
    evaluation: dict[str, Any],
    training: dict[str, Any],
    data: dict[str, Any],
    model: dict[str, Any],
    environment: dict[str, Any],
    config: dict[str, Any],
    command: str,
) -> dict[str, Any]:
    """Write report.json, then report.md/html and model_card.md from it; return what was written.

    The returned dict is the JSON as stored (NumPy values converted, NaN as null), so callers
    see exactly what `load_report` will give back later. `config["report"]` decides whether
    HTML and plots are produced, as it does for `harness report`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"cannot write a report: run directory {run_dir} does not exist")
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")
    report: dict[str, Any] = jsonable(
        {
            "schema_version": REPORT_SCHEMA_VERSION,
            "run": run_info(run_dir, config, environment, command),
            "task": task,
            "data": data,
            "model": model,
            "training": training,
            "test": evaluation,
            "environment": environment,
            "config": config,
        }
    )
    write_report_json(run_dir, report)
    html, with_plots = report_options(config)
    render_report(run_dir, config_html=html, plots=with_plots)
    write_model_card(run_dir)
    return report


def run_info(
    run_dir: Path, config: Mapping[str, Any], environment: Mapping[str, Any], command: str
) -> dict[str, Any]:
    """Identity of the run: what a reader needs to find it again and to reproduce it."""
    run_config = part(config, "run")
    return {
        "name": run_config.get("name") or run_dir.name,
        "dir": str(run_dir.resolve()),
        "created": utc_now(),
        "command": command,
        "seed": run_config.get("seed"),
        "git_commit": environment.get("git_commit"),
    }


def report_options(config: Mapping[str, Any]) -> tuple[bool, bool]:
    """(html, plots) from the config's `report` section; both default to on."""
    section = part(config, "report")
    return bool(section.get("html", True)), bool(section.get("plots", True))


def render_report(run_dir: Path, config_html: bool = True, plots: bool = True) -> None:
    """(Re)write report.md, and report.html when `config_html`, from report.json.

    Plots live only in the HTML, so they are drawn only when both flags are on. A plot that
    fails is listed in the report instead of stopping it.
    """
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    history = read_history(run_dir)
    problems: list[str] = []
    images: dict[str, bytes] = {}
    if config_html and plots:
        images = report_images(report, history, read_predictions(run_dir), problems)
    document = report_document(report, history, image_keys=images.keys(), problems=problems)
    atomic.write_text(run_dir / REPORT_MD, document_to_markdown(document))
    if config_html:
        atomic.write_text(run_dir / REPORT_HTML, document_to_html(document, images))


def report_images(
    report: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    predictions: Predictions | None,
    problems: list[str],
) -> dict[str, bytes]:
    """Every plot the inputs allow, by key; missing inputs mean a missing plot, not an error."""
    task = report.get("task")
    test = part(report, "test")
    training = part(report, "training")
    best = training.get("best_epoch")
    best_epoch = best if isinstance(best, int) and not isinstance(best, bool) else None
    metric = "accuracy" if task == "classification" else "mae"
    makers: dict[str, PlotMaker] = {
        "learning_curves": lambda: plotting.learning_curves_png(history, metric, best_epoch)
    }
    if task == "classification":
        makers.update(classification_plots(test, predictions))
    elif task == "regression" and predictions is not None:
        makers.update(regression_plots(test, predictions))
    drawn = {key: plotting.safe_plot(key, make, problems) for key, make in makers.items()}
    return {key: png for key, png in drawn.items() if png}


def classification_plots(test: Mapping[str, Any], predictions: Predictions | None) -> dict[str, PlotMaker]:
    matrix = part(test, "confusion_matrix")
    names = [str(name) for name in test.get("class_names") or matrix.get("labels") or []]
    normalized = matrix.get("normalized") or []
    makers: dict[str, PlotMaker] = {
        "confusion_matrix": lambda: plotting.confusion_matrix_png(normalized, names)
    }
    if predictions is not None:
        y_true, y_pred = predictions.y_true, predictions.y_pred
        makers["roc_curves"] = lambda: plotting.roc_curves_png(y_true, y_pred, names)
    return makers


def regression_plots(test: Mapping[str, Any], predictions: Predictions) -> dict[str, PlotMaker]:
    names = [str(name) for name in test.get("target_names") or []]
    y_true, y_pred = predictions.y_true, predictions.y_pred
    return {
        "predicted_vs_true": lambda: plotting.predicted_vs_true_png(y_true, y_pred, names),
        "residuals": lambda: plotting.residuals_png(y_true, y_pred, names),
    }
