"""What a sweep reads from and writes to its trials' run directories, through `harness.rundir`.

Trials are ordinary run directories, so every run command works on them; the sweep touches them
only here, through the run directory's own layout, readers and writers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from harness import atomic
from harness.distribute.cluster import ClusterEnv
from harness.errors import RunDirError
from harness.rundir import RunDir, RunDirWarning, RunState, write_state, write_submission
from harness.rundir import read_metrics as _read_metrics
from harness.rundir.lifecycle import write_marker
from harness.rundir.records import read_report as _read_report
from harness.rundir.records import read_state as _read_state
from harness.train import checkpoint

PRUNED = RunState.PRUNED
COMPLETED = RunState.COMPLETED


def prepare(run_dir: Path, submission: dict[str, Any]) -> None:
    """Make the trial's run directory as `harness submit` makes a job's (marker, submission.json),
    so `harness status`, `logs` and `cancel` follow a trial like any submitted run."""
    if not run_dir.is_dir():
        atomic.make_dirs(run_dir)
        write_marker(run_dir, "harness sweep")
    write_submission(run_dir, submission)


def read_state(run_dir: Path) -> dict[str, Any]:
    """state.json of a trial; empty when it has none yet or it cannot be read."""
    try:
        return dict(_read_state(run_dir))
    except RunDirError:
        return {}


def write_pruned(run_dir: Path, epoch: int, job: ClusterEnv) -> None:
    write_state(run_dir, PRUNED, current_job=job.job_id, host=job.node_name, epoch=epoch, error=None)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The trial's epoch lines; damaged lines are skipped quietly (the trial's own status names them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunDirWarning)
        warnings.simplefilter("ignore", UserWarning)
        return [dict(line) for line in _read_metrics(RunDir(run_dir).metrics)]


def read_report(run_dir: Path) -> dict[str, Any] | None:
    if not RunDir(run_dir).report.is_file():
        return None
    try:
        return _read_report(run_dir)
    except RunDirError:
        return None


def has_checkpoint(run_dir: Path) -> bool:
    return bool(checkpoint.candidates(RunDir(run_dir).checkpoints))


def saved_config(run_dir: Path) -> Path:
    return RunDir(run_dir).config


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
