"""The JSON records of a run directory: state.json, submission.json and report.json.

They are read as untrusted (a crash, a full disk or a person may have damaged them): a file that
is not a JSON object, was written under another schema version, or has a field of the wrong
type is refused with a RunDirError that names the file, the key and the value (exit 2), never a
traceback. A missing state.json is not an error: a run has none before its first write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

from harness import atomic
from harness.envinfo import utc_now
from harness.errors import RunDirError
from harness.rundir.layout import REPORT_JSON, SUBMISSION, RunDir, RunState

STATE_SCHEMA_VERSION = 1
SUBMISSION_SCHEMA_VERSION = 1
REPORT_SCHEMA_VERSION = 1
SHOWN_CHARS = 200

_WHOLE = "a whole number >= 0"
_TEXT = "a string"
Fields = Mapping[str, tuple[str, tuple[type, ...]]]
"""Dotted key -> (what it must be, in words; the types it may have). None always passes."""


class StateRecord(TypedDict, total=False):
    """state.json: the run's own record of where it stands (sacct is often off or slow)."""

    schema_version: int
    state: str
    updated: str
    host: str
    job_id: str | None
    epoch: int
    epochs: int
    global_step: int
    requeues: int
    error: str | None
    cancelled: str


class SubmissionRecord(TypedDict, total=False):
    """submission.json: which job runs the run, written by `harness submit`."""

    schema_version: int
    job_id: str
    executor: str
    submitted: str
    command: str
    run_dir: str
    config: str
    script: str | None
    job_folder: str
    strategy: str
    tasks: int
    epochs: int
    partition: str | None
    resources: dict[str, Any]
    cancelled: str | None


STATE_FIELDS: Fields = {
    "state": (_TEXT, (str,)),
    "epoch": (_WHOLE, (int,)),
    "epochs": (_WHOLE, (int,)),
    "requeues": (_WHOLE, (int,)),
    "updated": (_TEXT, (str,)),
    "error": (_TEXT, (str,)),
}
SUBMISSION_FIELDS: Fields = {
    "job_id": ("a job id", (str, int)),
    "executor": (_TEXT, (str,)),
    "job_folder": (_TEXT, (str,)),
    "tasks": (_WHOLE, (int,)),
    "epochs": (_WHOLE, (int,)),
    "submitted": (_TEXT, (str,)),
    "cancelled": (_TEXT, (str,)),
    "resources": ("an object", (dict,)),
    "resources.max_requeues": (_WHOLE, (int,)),
}


# ---- any JSON record ----------------------------------------------------------------------


def read_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} if there is no such file. A damaged one is an error naming it."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise RunDirError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise RunDirError(f"{path} is damaged: not UTF-8 text (byte {err.start})") from None
    try:
        found = json.loads(text)
    except ValueError as err:
        raise RunDirError(f"{path} is damaged: it is not valid JSON ({err})") from None
    if not isinstance(found, dict):
        raise RunDirError(f"{path} is damaged: it must hold a JSON object. Received: {type(found).__name__}")
    return found


def check_fields(path: Path, record: Mapping[str, Any], fields: Fields) -> None:
    """Refuse a record whose fields have the wrong type, naming the file, the key and the value."""
    for dotted, (expected, types) in fields.items():
        value: Any = record
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            continue
        wrong_type = isinstance(value, bool) or not isinstance(value, types)
        if wrong_type or (expected == _WHOLE and value < 0):
            raise RunDirError(
                f"{path} is damaged: {dotted} must be {expected}. Received: {value!r:.{SHOWN_CHARS}}; "
                "fix or remove the value"
            )


def _check_version(path: Path, record: Mapping[str, Any], expected: int, what: str) -> None:
    version = record.get("schema_version")
    if version != expected:
        raise RunDirError(
            f"{path} has {what} schema_version {version!r}, but this harness reads schema_version {expected}; "
            "use the harness version that wrote it"
        )


# ---- state.json ---------------------------------------------------------------------------


def read_state(run_dir: Path) -> StateRecord:
    """state.json with its fields checked; {} before the run has written it."""
    path = RunDir(run_dir).state
    record = read_object(path)
    if "schema_version" in record:  # records from before the version was written have none
        _check_version(path, record, STATE_SCHEMA_VERSION, "state")
    check_fields(path, record, STATE_FIELDS)
    return cast(StateRecord, record)


def recorded_state(record: Mapping[str, Any]) -> RunState | None:
    """The state a record names, or None if it names none (or one this harness does not know)."""
    value = record.get("state")
    return RunState.parse(value) if isinstance(value, str) else None


def write_state(
    run_dir: Path,
    state: RunState,
    *,
    current_job: str | None,
    host: str,
    starting: bool = False,
    **fields: Any,
) -> None:
    """Update state.json with `state` and `fields`, keeping what earlier writes recorded.

    `current_job` and `host` say which job and node write: the process that starts the run
    (`starting`) records them as where the chief runs now (a requeued job may move to another
    node). After `harness cancel`, what the cancelled job still writes (its start if the cancel
    came early, an epoch's progress, "preempted" on SIGTERM, "failed") must not undo the
    cancellation; only a real completion, or a start by another job or process (`--resume`, a
    new submission), replaces it. A damaged record is replaced rather than stopping the run.
    """
    try:
        previous: dict[str, Any] = dict(read_state(run_dir))
    except RunDirError:
        previous = {}
    restarted = starting and previous.get("job_id") != current_job
    if recorded_state(previous) is RunState.CANCELLED and state is not RunState.COMPLETED and not restarted:
        return
    record = {**previous, **fields, "schema_version": STATE_SCHEMA_VERSION, "state": str(state)}
    record["updated"] = utc_now()
    if starting:
        record.update(host=host, job_id=current_job)
    record.setdefault("host", host)
    record.setdefault("job_id", current_job)
    atomic.write_json(RunDir(run_dir).state, record)


# ---- submission.json ----------------------------------------------------------------------


def read_submission(run_dir: Path) -> SubmissionRecord:
    """submission.json with its version and fields checked; a run never submitted is an error."""
    path = RunDir(run_dir).submission
    if not (path.exists() or path.is_symlink()):
        raise RunDirError(f"{run_dir} is not a submitted run: it has no {SUBMISSION}")
    record = read_object(path)
    _check_version(path, record, SUBMISSION_SCHEMA_VERSION, "submission")
    check_fields(path, record, SUBMISSION_FIELDS)
    return cast(SubmissionRecord, record)


def write_submission(run_dir: Path, record: Mapping[str, Any]) -> None:
    atomic.write_json(RunDir(run_dir).submission, {"schema_version": SUBMISSION_SCHEMA_VERSION, **record})


def update_submission(run_dir: Path, **fields: Any) -> SubmissionRecord:
    record = cast(SubmissionRecord, {**read_submission(run_dir), **fields})
    atomic.write_json(RunDir(run_dir).submission, record)
    return record


# ---- report.json --------------------------------------------------------------------------


def read_report(run_dir: Path) -> dict[str, Any]:
    """report.json, refusing one written under another schema version rather than misreading it.

    Its sections (run, task, data, model, training, test, environment, config) are read with
    `.get`, so a reader shows a gap where a section is missing instead of failing.
    """
    run_dir = Path(run_dir)
    path = RunDir(run_dir).report
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise RunDirError(
            f"run directory {run_dir} has no {REPORT_JSON}: the run has not finished, or it failed before "
            f"evaluation (`harness evaluate {run_dir}` writes it from a saved model)"
        )
    report = read_object(path)
    version = report.get("schema_version")
    if version != REPORT_SCHEMA_VERSION:
        raise RunDirError(
            f"{path} has report schema_version {version!r}, but this harness reads schema_version "
            f"{REPORT_SCHEMA_VERSION}; use the harness version that wrote it, or re-evaluate the run"
        )
    return report


def write_report_json(run_dir: Path, report: Mapping[str, Any]) -> None:
    """Write report.json with its schema version (the caller makes the values plain JSON)."""
    atomic.write_json(RunDir(run_dir).report, {"schema_version": REPORT_SCHEMA_VERSION, **report})
