"""`harness report SWEEP_DIR`: the gathered report of a sweep.

Writes SWEEP_DIR/report/: leaderboard.json (every trial with its state, parameters, objective and
time; Optuna's parameter importances; the scaling table when resource keys vary), report.md,
report.html (with plots) and best_config.yaml, the best trial's config as a runnable file.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness import atomic
from harness.config import load_config, to_yaml
from harness.envinfo import utc_now
from harness.evaluate import plots as run_plots
from harness.evaluate.document import Block, Bullets, Code, Document, Image, Paragraph, Section, Table
from harness.evaluate.formatting import MISSING, fmt_duration, fmt_float
from harness.evaluate.render_html import document_to_html
from harness.evaluate.render_md import document_to_markdown
from harness.imports import is_import_path
from harness.sweep import ledger, plots, trials
from harness.sweep.spec import Spec, load_spec
from harness.sweep.sweepdir import SweepDir, open_sweep_dir

REPORT_SCHEMA_VERSION = 1
TOP_CURVES = 3
RESOURCE_KEYS = ("training.batch_size", "distribute.cpu_replicas", "slurm.nodes", "slurm.gpus_per_node")
"""Keys that change how much hardware a trial uses: when one varies, the report adds scaling."""
STATE_ORDER: dict[str, int] = {
    ledger.COMPLETED: 0, ledger.PRUNED: 1, ledger.INTERRUPTED: 2, ledger.RUNNING: 3, ledger.FAILED: 4
}


def write_sweep_report(path: Path) -> Path:
    sweep = open_sweep_dir(path)
    spec = load_spec(sweep.spec)
    metric, direction = spec.model.objective.metric, spec.model.objective.direction
    rows = leaderboard(ledger.read_all(sweep), direction)
    problems: list[str] = []
    importances = param_importances(sweep, spec, problems)
    scaling = scaling_rows(sweep, spec, rows)
    best = next((r for r in rows if r["state"] == ledger.COMPLETED and r["objective"] is not None), None)
    best_yaml = best_config(sweep, best["trial"], spec.code_dir) if best else None
    summary = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": utc_now(),
        "sweep_dir": str(sweep.path),
        "objective": {"metric": metric, "direction": direction},
        "budget": spec.model.budget.trials,
        "sampler": spec.sampler_name,
        "pruner": spec.model.pruner.name,
        "best_trial": best["trial"] if best else None,
        "importances": importances,
        "scaling": scaling,
        "trials": rows,
    }
    images = _images(sweep, spec, rows, scaling, problems)
    document = _document(summary, spec, images.keys(), problems, best_yaml)
    atomic.make_dirs(sweep.report)
    atomic.write_text(sweep.report / "leaderboard.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic.write_text(sweep.report / "report.md", document_to_markdown(document))
    atomic.write_text(sweep.report / "report.html", document_to_html(document, images))
    if best_yaml is not None:
        atomic.write_text(sweep.report / "best_config.yaml", best_yaml)
    return sweep.report / "report.md"


def leaderboard(records: Sequence[ledger.TrialRecord], direction: str) -> list[dict[str, Any]]:
    """Every trial: completed ones best first, then pruned, interrupted, running and failed ones."""
    sign = -1.0 if direction == "max" else 1.0

    def order(record: ledger.TrialRecord) -> tuple[int, float, int]:
        value = record.objective if record.objective is not None else float("inf") * -sign
        return STATE_ORDER.get(record.state, 5), sign * value, record.trial

    rows = []
    for rank, record in enumerate(sorted(records, key=order), start=1):
        rows.append(
            {
                "rank": rank,
                "trial": record.trial,
                "state": record.state,
                "objective": record.objective,
                "params": record.params,
                "epochs": record.epochs,
                "attempts": record.attempts,
                "requeues": record.requeues,
                "wall_time_s": record.wall_time_s,
                "samples_per_s": record.samples_per_s,
                "job_id": record.job_id,
                "error": record.error,
            }
        )
    return rows


def param_importances(sweep: SweepDir, spec: Spec, problems: list[str]) -> dict[str, float]:
    """Optuna's importances (fANOVA) over the completed trials; empty with a note when not computable."""
    import optuna

    from harness.sweep.study import load_study

    try:
        study = load_study(sweep, spec)
        return {key: round(float(v), 6) for key, v in optuna.importance.get_param_importances(study).items()}
    except Exception as err:  # noqa: BLE001 - too few or identical trials: the report goes on
        problems.append(f"parameter importances not computed: {type(err).__name__}: {err}")
        return {}


def best_config(sweep: SweepDir, number: int, code_dir: Path) -> str | None:
    """The best trial's saved config, renamed to train as its own run: `harness train best_config.yaml`.

    User code named in it (`model.name: models:build`, callbacks) is imported from the config's
    folder and the working directory, as for any config; the header says where the trials found it.
    """
    path = trials.saved_config(sweep.trial_dir(number))
    if not path.is_file():
        return None
    config = load_config(path)
    run = config.run.model_copy(update={"name": f"{sweep.path.name}-best", "output_dir": "runs"})
    header = f"# The best trial ({number:04d}) of sweep {sweep.path}: harness train best_config.yaml\n"
    code = [name for name in (config.model.name, *config.training.callbacks) if is_import_path(name)]
    if code:
        header += (
            f"# {', '.join(code)}: imported from {code_dir} in the trials; run `harness train` from there,\n"
            "# or keep this file beside that code\n"
        )
    return header + to_yaml(config.model_copy(update={"run": run}))


def scaling_rows(sweep: SweepDir, spec: Spec, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Samples/s per replica and efficiency against the smallest configuration, when resources vary."""
    keys = [p.key for p in spec.parameters if p.key in RESOURCE_KEYS]
    if not keys:
        return []
    groups: dict[str, list[tuple[float, int]]] = {}
    for row in rows:
        if row["state"] != ledger.COMPLETED or not row.get("samples_per_s"):
            continue
        report = trials.read_report(sweep.trial_dir(int(row["trial"]))) or {}
        replicas = int(report.get("training", {}).get("replicas", 1) or 1)
        label = ", ".join(f"{key.rsplit('.', 1)[-1]}={json.dumps(row['params'].get(key))}" for key in keys)
        groups.setdefault(label, []).append((float(row["samples_per_s"]), replicas))
    table: list[dict[str, Any]] = []
    for label, items in groups.items():
        replicas = items[0][1]
        rate = statistics.median(rate for rate, _ in items)
        table.append(
            {
                "config": label,
                "replicas": replicas,
                "trials": len(items),
                "samples_per_s": rate,
                "samples_per_s_per_replica": rate / replicas,
            }
        )
    table.sort(key=lambda r: (r["replicas"], r["config"]))
    if table:
        base = table[0]["samples_per_s_per_replica"] or 1.0
        for row in table:
            row["efficiency"] = round(row["samples_per_s_per_replica"] / base, 3)
    return table


def _images(
    sweep: SweepDir,
    spec: Spec,
    rows: Sequence[Mapping[str, Any]],
    scaling: Sequence[Mapping[str, Any]],
    problems: list[str],
) -> dict[str, bytes]:
    metric, direction = spec.model.objective.metric, spec.model.objective.direction
    keys = [p.key for p in spec.parameters]
    log_keys = {p.key for p in spec.parameters if p.kind == "loguniform"}
    top = [r for r in rows if r["state"] == ledger.COMPLETED][:TOP_CURVES]
    histories = {f"trial {r['trial']:04d}": trials.read_metrics(sweep.trial_dir(int(r["trial"]))) for r in top}
    curve_keys = [k for k in ("val_loss", trials.epoch_metric(metric)) if k]
    makers = {
        "objective_vs_params": lambda: plots.objective_vs_params_png(rows, keys, metric, log_keys),
        "history": lambda: plots.history_png(rows, metric, direction),
        "parallel": lambda: plots.parallel_coordinates_png(rows, keys, metric, log_keys),
        "curves": lambda: run_plots.validation_curves_png(histories, list(dict.fromkeys(curve_keys))),
        "scaling": lambda: plots.scaling_png(scaling),
    }
    images = {}
    for name, make in makers.items():
        png = run_plots.safe_plot(name, make, problems)
        if png is not None:
            images[name] = png
    return images


CAPTIONS = {
    "objective_vs_params": "Objective against each parameter (orange: pruned, last reported value)",
    "history": "Optimisation history: each completed trial and the best so far",
    "parallel": "Parallel coordinates of the completed trials",
    "curves": f"Learning curves of the top {TOP_CURVES} trials",
    "scaling": "Scaling: samples/s per replica and efficiency against the smallest configuration",
}


def _document(
    summary: Mapping[str, Any], spec: Spec, image_keys: Any, problems: Sequence[str], best_yaml: str | None
) -> Document:
    sections = [_leaderboard_section(summary, [p.key for p in spec.parameters])]
    if summary["importances"]:
        table = [[key, fmt_float(value, 3)] for key, value in summary["importances"].items()]
        sections.append(Section("Parameter importances (Optuna, fANOVA)", [Table(["parameter", "importance"], table)]))
    if summary["scaling"]:
        sections.append(_scaling_section(summary["scaling"]))
    if best_yaml is not None:
        note = f"Trial {summary['best_trial']:04d}, saved as best_config.yaml: harness train best_config.yaml"
        code = Code(best_yaml, "yaml", collapsed=True, summary="best_config.yaml")
        sections.append(Section("Best trial's config", [Paragraph(note), code]))
    failed = [f"trial {r['trial']:04d}: {r['error']}" for r in summary["trials"] if r["state"] == ledger.FAILED]
    if failed:
        sections.append(Section("Failed trials", [Bullets(failed)]))
    images: list[Block] = [Image(key, caption) for key, caption in CAPTIONS.items() if key in image_keys]
    if images:
        sections.append(Section("Plots", images, html_only=True))
    if problems:
        sections.append(Section("Notes", [Bullets(list(problems))]))
    title = f"Sweep {Path(summary['sweep_dir']).name}"
    return Document(title, subtitle=f"{summary['sweep_dir']} · {summary['created']}", sections=sections)


def _leaderboard_section(summary: Mapping[str, Any], keys: Sequence[str]) -> Section:
    metric = summary["objective"]["metric"]
    header = ["#", "trial", "state", metric, *[k.rsplit(".", 1)[-1] for k in keys], "epochs", "attempts", "wall"]
    rows = [
        [
            str(r["rank"]),
            f"{r['trial']:04d}",
            r["state"],
            fmt_float(r["objective"]) if r["objective"] is not None else MISSING,
            *[param_text(r["params"].get(k)) for k in keys],
            str(r["epochs"]),
            str(r["attempts"]),
            fmt_duration(r["wall_time_s"]),
        ]
        for r in summary["trials"]
    ]
    counts = {s: sum(1 for r in summary["trials"] if r["state"] == s) for s in ledger.STATES}
    overview = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    text = (
        f"{len(rows)} of {summary['budget']} trials ({overview}); objective {metric} "
        f"({summary['objective']['direction']}); sampler {summary['sampler']}, pruner {summary['pruner']}."
    )
    return Section("Leaderboard", [Paragraph(text), Table(header, rows)])


def param_text(value: Any) -> str:
    """A parameter value as a cell: floats with 4 significant digits, the rest as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value)


def _scaling_section(scaling: Sequence[Mapping[str, Any]]) -> Section:
    header = ["configuration", "replicas", "trials", "samples/s", "samples/s per replica", "efficiency"]
    rows = [
        [
            r["config"],
            str(r["replicas"]),
            str(r["trials"]),
            fmt_float(r["samples_per_s"], 1),
            fmt_float(r["samples_per_s_per_replica"], 1),
            fmt_float(r["efficiency"], 3),
        ]
        for r in scaling
    ]
    return Section("Scaling", [Table(header, rows)])


def load_leaderboard(path: Path) -> dict[str, Any]:
    data = yaml.safe_load((path / "report" / "leaderboard.json").read_text())
    return dict(data)
