"""The sweep ledger: one small JSON record per trial, written only by the worker that owns it.

`harness sweep status` reads these files and nothing else (no Optuna, no TensorFlow), so a
sweep of hundreds of trials is listed in well under a second. Each write is atomic (temp file
and rename), so a reader never sees half a record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness import atomic
from harness.envinfo import utc_now
from harness.rundir import RunState
from harness.sweep.sweepdir import SweepDir

RUNNING = RunState.RUNNING
COMPLETED = RunState.COMPLETED
PRUNED = RunState.PRUNED
FAILED = RunState.FAILED
INTERRUPTED = RunState.INTERRUPTED
"""Stopped without an end (a signal, a cancelled or crashed worker): `sweep resume` continues it."""
STATES = (RUNNING, COMPLETED, PRUNED, FAILED, INTERRUPTED)
FINISHED = (COMPLETED, PRUNED, FAILED)


@dataclass
class TrialRecord:
    trial: int
    params: dict[str, Any]
    state: str = RUNNING
    objective: float | None = None
    epochs: int = 0
    requeues: int = 0
    attempts: int = 1
    wall_time_s: float = 0.0
    samples_per_s: float | None = None
    job_id: str | None = None
    worker: str | None = None
    started: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialRecord:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


def write(sweep: SweepDir, record: TrialRecord) -> None:
    record.updated = utc_now()
    atomic.write_json(sweep.ledger_file(record.trial), asdict(record))


def read(sweep: SweepDir, number: int) -> TrialRecord | None:
    try:
        data = json.loads(sweep.ledger_file(number).read_text())
    except (OSError, ValueError):
        return None
    return TrialRecord.from_json(data) if isinstance(data, dict) else None


def read_all(sweep: SweepDir) -> list[TrialRecord]:
    """Every readable record, by trial number; a damaged file is skipped (its trial shows in the journal)."""
    records = []
    for path in sorted(sweep.ledger.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("trial"), int):
            records.append(TrialRecord.from_json(data))
    return sorted(records, key=lambda r: r.trial)


def unreadable(sweep: SweepDir) -> list[str]:
    """Ledger files `read_all` skips (damaged, or not a record), each with why: status names them."""
    found = []
    for path in sorted(sweep.ledger.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            found.append(f"{path} ({type(err).__name__})")
            continue
        if not (isinstance(data, dict) and isinstance(data.get("trial"), int)):
            found.append(f"{path} (not a trial record)")
    return found
