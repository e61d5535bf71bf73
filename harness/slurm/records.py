"""What `harness submit` leaves behind besides the run directory's submission record: a per-user
index of job ids.

The submission record itself (submission.json) belongs to the run-directory contract and is
read and written through `harness.rundir`: status, logs and cancel read it, never submitit's
private files. The index maps job ids back to run directories after Slurm has forgotten the job
(`scontrol` keeps finished jobs only for minutes).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from harness.envinfo import utc_now
from harness.rundir.records import read_submission, update_submission, write_submission

__all__ = ["index_path", "lookup_job", "read_submission", "remember_job", "update_submission", "write_submission"]

INDEX_NAME = "jobs.jsonl"


def index_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "harness" / INDEX_NAME


def remember_job(job_id: str, executor: str, run_dir: Path, environ: Mapping[str, str] | None = None) -> None:
    """Append to the index; a failure to write it only costs lookups by job id later."""
    path = index_path(environ)
    line = json.dumps({"job_id": job_id, "executor": executor, "run_dir": str(run_dir), "submitted": utc_now()})
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
