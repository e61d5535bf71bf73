"""The sweep directory: where each part of a sweep lives, and when it may be created or replaced.

SWEEP_DIR/sweep.yaml        the checked spec, self-contained (base config inline, absolute paths)
SWEEP_DIR/study.journal     Optuna's journal: `optuna-dashboard SWEEP_DIR/study.journal`
SWEEP_DIR/ledger/NNNN.json  one record per trial: what `harness sweep status` reads
SWEEP_DIR/trials/NNNN/      one ordinary run directory per trial
SWEEP_DIR/submissions.jsonl one line per submission of workers (job ids)
SWEEP_DIR/workers/          worker logs (local) or submitit's job folder (Slurm)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import atomic
from harness.envinfo import utc_now
from harness.errors import RunDirError

MARKER = ".harness-sweep"
SPEC = "sweep.yaml"
JOURNAL = "study.journal"
STUDY_NAME = "sweep"
LEDGER = "ledger"
TRIALS = "trials"
SUBMISSIONS = "submissions.jsonl"
WORKERS = "workers"
CLAIM_LOCK = "claim"
REPORT = "report"


@dataclass(frozen=True)
class SweepDir:
    """Paths inside one sweep directory (see the module docstring)."""

    path: Path

    @property
    def spec(self) -> Path:
        return self.path / SPEC

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def ledger(self) -> Path:
        return self.path / LEDGER

    @property
    def trials(self) -> Path:
        return self.path / TRIALS

    @property
    def submissions(self) -> Path:
        return self.path / SUBMISSIONS

    @property
    def workers(self) -> Path:
        return self.path / WORKERS

    @property
    def claim_lock(self) -> Path:
        return self.path / CLAIM_LOCK

    @property
    def report(self) -> Path:
        return self.path / REPORT

    def trial_name(self, number: int) -> str:
        return f"{number:04d}"

    def trial_dir(self, number: int) -> Path:
        return self.trials / self.trial_name(number)

    def ledger_file(self, number: int) -> Path:
        return self.ledger / f"{self.trial_name(number)}.json"


def is_sweep_dir(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / SPEC).is_file()


def open_sweep_dir(path: Path) -> SweepDir:
    """An existing sweep directory, or a RunDirError (exit 2) saying what the folder is instead."""
    if not path.is_dir():
        what = "it is a file" if path.exists() else "it does not exist"
        raise RunDirError(f"{path} is not a sweep directory: {what}")
    if not is_sweep_dir(path):
        raise RunDirError(f"{path} is not a sweep directory (no {MARKER} and {SPEC}); `harness sweep SPEC` makes one")
    return SweepDir(path)


def check_new_target(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start over an existing sweep unless told how: `--resume` or `--overwrite`."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other: resume continues a sweep, overwrite deletes it")
    exists = path.exists() or path.is_symlink()
    if resume:
        open_sweep_dir(path)
        return
    if not exists:
        return
    if not overwrite:
        raise RunDirError(
            f"sweep directory {path} already exists. Use --resume to continue it (or `harness sweep resume "
            f"{path}`), --overwrite to replace it, or set another name in the spec (name: NEW_NAME)"
        )
    if path.is_symlink() or not is_sweep_dir(path):
        raise RunDirError(
            f"--overwrite refused: {path} was not deleted because it is not a sweep directory harness made "
            f"(no {MARKER}); delete it yourself if it is no longer needed"
        )


@contextmanager
def new_sweep_dir(path: Path, *, overwrite: bool) -> Iterator[SweepDir]:
    """Assemble a new sweep directory under a temporary name; it appears complete or not at all."""
    atomic.make_dirs(path.parent)
    staging = atomic.temp_dir(path.parent, f".{path.name}.new-")
    try:
        atomic.write_json(staging / MARKER, {"schema_version": 1, "created": utc_now()})
        for folder in (LEDGER, TRIALS, WORKERS):
            (staging / folder).mkdir()
        yield SweepDir(staging)
        if path.exists() and overwrite:
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def record_submission(sweep: SweepDir, record: dict[str, Any]) -> None:
    atomic.append_text(sweep.submissions, json.dumps({"submitted": utc_now(), **record}) + "\n")


def read_submissions(sweep: SweepDir) -> list[dict[str, Any]]:
    if not sweep.submissions.is_file():
        return []
    found = []
    for line in sweep.submissions.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item)
    return found


def pid_alive(pid: int) -> bool:
    """Whether a local worker process still runs; a zombie (ended, not yet reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
