"""What `harness submit` leaves behind: RUN_DIR/submission.json and a per-user index of job ids.

submission.json is part of the run-directory contract (docs/architecture.md): status, logs and
cancel read it, never submitit's private files. The index maps job ids back to run directories
after Slurm has forgotten the job (`scontrol` keeps finished jobs only for minutes).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import atomic
from harness.errors import RunDirError

SUBMISSION = "submission.json"
JOB_FOLDER = "slurm"
SCHEMA_VERSION = 1
INDEX_NAME = "jobs.jsonl"


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def invocation(argv: list[str] | None = None) -> str:
    """How this process was started, quoted so it can be pasted into a shell."""
    args = sys.argv if argv is None else argv
    return " ".join(shlex.quote(arg) for arg in [os.path.basename(args[0]), *args[1:]])


def write_submission(run_dir: Path, record: Mapping[str, Any]) -> None:
    atomic.write_json(run_dir / SUBMISSION, {"schema_version": SCHEMA_VERSION, **record})


def read_submission(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUBMISSION
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} is not a submitted run: it has no {SUBMISSION}") from None
    except ValueError as err:
        raise RunDirError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(record, dict):
        raise RunDirError(f"{path} must hold a JSON object")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunDirError(f"{path} has schema version {version!r}; this harness reads version {SCHEMA_VERSION}")
    return record


def update_submission(run_dir: Path, **fields: Any) -> dict[str, Any]:
    record = {**read_submission(run_dir), **fields}
    atomic.write_json(run_dir / SUBMISSION, record)
    return record


def index_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "harness" / INDEX_NAME


def remember_job(job_id: str, executor: str, run_dir: Path, environ: Mapping[str, str] | None = None) -> None:
    """Append to the index; a failure to write it only costs lookups by job id later."""
    path = index_path(environ)
    line = json.dumps({"job_id": job_id, "executor": executor, "run_dir": str(run_dir), "submitted": now_utc()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError as err:
        print(f"warning: could not record job {job_id} in {path}: {err}", file=sys.stderr)


def lookup_job(job_id: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The run directory of the latest submission with this job id, from the index."""
    path = index_path(environ)
    if not path.is_file():
        return None
    found = None
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("job_id")) == job_id:
            found = Path(entry["run_dir"])
    return found
