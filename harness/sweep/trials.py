"""What a sweep reads from its trials' run directories: the one place that knows their files.

Trials are ordinary run directories; this adapter goes through the run directory's own readers
(state.json, metrics.jsonl, report.json), so a change of that contract is made here only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from harness import io
from harness.errors import RunDirError
from harness.train import checkpoint, rundir

PRUNED = rundir.PRUNED


def prepare(run_dir: Path, submission: dict[str, Any]) -> None:
    """Make the trial's run directory as `harness submit` makes a job's (marker, submission.json),
    so `harness status`, `logs` and `cancel` follow a trial like any submitted run."""
    from harness.slurm import records

    if not run_dir.is_dir():
        io.make_dirs(run_dir)
        rundir.write_marker(run_dir, "harness sweep")
    records.write_submission(run_dir, submission)


def read_state(run_dir: Path) -> dict[str, Any]:
    return rundir.read_state(run_dir)


def write_pruned(run_dir: Path, epoch: int) -> None:
    rundir.write_state(run_dir, PRUNED, epoch=epoch, error=None)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rundir.RunDirWarning)
        return rundir.read_metrics(run_dir / rundir.METRICS)


def read_report(run_dir: Path) -> dict[str, Any] | None:
    from harness.evaluate import load_report

    if not (run_dir / "report.json").is_file():
        return None
    try:
        return load_report(run_dir)
    except RunDirError:
        return None


def has_checkpoint(run_dir: Path) -> bool:
    return bool(checkpoint.candidates(run_dir / rundir.CHECKPOINTS))


def objective_value(run_dir: Path, metric: str) -> float | None:
    """The trial's objective: a test metric from report.json, or the last epoch's metrics line."""
    if metric.startswith("test_"):
        report = read_report(run_dir)
        value = (report or {}).get("test", {}).get(metric.removeprefix("test_"))
    else:
        history = read_metrics(run_dir)
        value = history[-1].get(metric) if history else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def epoch_metric(metric: str) -> str | None:
    """The metrics.jsonl key reported each epoch for pruning: the metric itself, or val_ of a test metric."""
    if not metric.startswith("test_"):
        return metric
    name = metric.removeprefix("test_")
    return f"val_{name}" if name in ("accuracy", "mae") else ("val_loss" if name == "log_loss" else None)
