"""`harness sweep status`: the ledger as a table, from small JSON files only.

Nothing here imports Optuna, TensorFlow or Keras, and the scheduler is not asked: hundreds of
trials are listed in well under a second, also from a login node.
"""

from __future__ import annotations

import json
import math
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import RunDirError
from harness.sweep import ledger
from harness.sweep.ledger import TrialRecord
from harness.sweep.sweepdir import SweepDir, open_sweep_dir, pid_alive, read_submissions

PARAM_WIDTH = 60


@dataclass(frozen=True)
class SweepStatus:
    sweep: SweepDir
    budget: int
    metric: str
    direction: str
    records: list[TrialRecord]
    jobs: list[str]
    unreadable: list[str] = field(default_factory=list)

    def best(self) -> TrialRecord | None:
        done = [r for r in self.records if r.state == ledger.COMPLETED and r.objective is not None]
        if not done:
            return None
        pick = max if self.direction == "max" else min
        return pick(done, key=lambda r: float(r.objective or 0.0))


def read_status(sweep: SweepDir | Path) -> SweepStatus:
    sweep = sweep if isinstance(sweep, SweepDir) else open_sweep_dir(Path(sweep))
    spec = _read_spec(sweep)
    jobs: list[str] = []
    for record in read_submissions(sweep):
        jobs.append(str(record.get("array_job_id") or ",".join(f"pid {p}" for p in record.get("pids", []))))
    return SweepStatus(
        sweep,
        int(spec["budget"]["trials"]),
        str(spec["objective"]["metric"]),
        str(spec["objective"]["direction"]),
        ledger.read_all(sweep),
        jobs,
        ledger.unreadable(sweep),
    )


def _read_spec(sweep: SweepDir) -> dict[str, Any]:
    """The sweep's own spec copy, read as plain YAML (it was checked when the sweep was made)."""
    try:
        data = yaml.safe_load(sweep.spec.read_text())
        data["budget"]["trials"], data["objective"]["metric"]  # noqa: B018 - the keys status needs
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise RunDirError(f"{sweep.spec} cannot be read ({type(err).__name__}: {err})") from None
    return dict(data)


def format_status(status: SweepStatus) -> str:
    counts = Counter(r.state for r in status.records)
    summary = ", ".join(f"{counts[s]} {s}" for s in ledger.STATES if counts[s])
    lines = [
        f"sweep {status.sweep.path}: {len(status.records)} of {status.budget} trials ({summary or 'none started'})",
        f"objective: {status.metric} ({status.direction})   workers: {'; '.join(status.jobs) or 'none submitted'}",
    ]
    best = status.best()
    if best is not None:
        lines.append(f"best: trial {best.trial} {status.metric}={_num(best.objective)} {_params(best.params)}")
    header = ("trial", "state", status.metric, "epochs", "requeues", "attempts", "wall", "job", "params")
    lost = [r.trial for r in status.records if r.state == ledger.RUNNING and worker_gone(r.worker)]
    rows = [header] + [_row(r, r.trial in lost) for r in status.records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    lines.extend(f"trial {r.trial}: {r.error}" for r in status.records if r.state == ledger.FAILED and r.error)
    lines.extend(
        f"warning: {path} cannot be read: its trial is left out above (the study journal keeps it)"
        for path in status.unreadable
    )
    if lost:
        lines.append(
            f"* the local worker of trial(s) {', '.join(map(str, lost))} is gone: "
            f"`harness sweep resume {status.sweep.path}` continues them"
        )
    return "\n".join(lines) + "\n"


def worker_gone(worker: str | None) -> bool:
    """A local worker (`local:HOST:PID`) of this host that no longer runs; Slurm workers are not asked."""
    if not worker or not worker.startswith("local:"):
        return False
    _, host, pid = worker.split(":", 2)
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def _row(record: TrialRecord, lost: bool = False) -> tuple[str, ...]:
    return (
        f"{record.trial:04d}",
        record.state + ("*" if lost else ""),
        _num(record.objective),
        str(record.epochs),
        str(record.requeues),
        str(record.attempts),
        _duration(record.wall_time_s),
        record.job_id or (record.worker or "-").rsplit(":", 1)[-1],
        _params(record.params),
    )


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def _params(params: dict[str, Any]) -> str:
    text = " ".join(f"{key.rsplit('.', 1)[-1]}={_value(value)}" for key, value in params.items())
    return text if len(text) <= PARAM_WIDTH else text[: PARAM_WIDTH - 3] + "..."
