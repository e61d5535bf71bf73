"""Following a submitted job: `harness status`, `harness logs`, `harness cancel`.

The run directory is the first source: the chief keeps state.json current (state, epoch,
error, requeues) and submission.json says which job runs it. The scheduler (squeue, then
scontrol) is the second: it tells a queued job from a running one, and notices a job that
ended without the run recording an end (killed at its time limit, a node failure). sacct is
never needed, since accounting is often off or slow.

Those files are read as untrusted: a damaged submission.json or state.json (not JSON, or a
field of the wrong type) is reported by file, key and value (exit 2) instead of a traceback,
and a bad line of metrics.jsonl is skipped.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.distribute.watchdog import last_error_line
from harness.envinfo import node_name, utc_now
from harness.errors import RunDirError
from harness.rundir import (
    ENDED,
    FINAL,
    STOPPED,
    RunDir,
    RunState,
    SubmissionRecord,
    last_metrics,
    read_state,
    recorded_state,
    write_state,
)
from harness.rundir.layout import JOB_FOLDER
from harness.slurm import records, scheduler
from harness.slurm.scheduler import ACTIVE, JobInfo, SchedulerUnavailable
from harness.train.progress import format_logs

SHOWN_CHARS = 200
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")


@dataclass(frozen=True)
class Run:
    """A submitted run: its directory and its submission record."""

    run_dir: Path
    submission: SubmissionRecord

    @property
    def job_id(self) -> str:
        return str(self.submission.get("job_id", ""))

    @property
    def executor(self) -> str:
        return str(self.submission.get("executor", "slurm"))

    def log_path(self, rank: int, err: bool = False) -> Path:
        folder = Path(self.submission.get("job_folder") or RunDir(self.run_dir).job_folder)
        return folder / f"{self.job_id}_{rank}_log.{'err' if err else 'out'}"


def locate(target: str, environ: Mapping[str, str] | None = None) -> Run:
    """A run directory, or a job id looked up in the index and then in Slurm itself."""
    path = Path(target)
    try:
        is_dir = path.is_dir()
    except OSError as err:  # e.g. a name too long for the filesystem
        raise RunDirError(f"{target[:SHOWN_CHARS]!r} is not a usable path: {err.strerror or err}") from None
    if is_dir:
        return Run(path, read_submission(path))
    if not target.replace("_", "").isdigit():
        raise RunDirError(f"{target[:SHOWN_CHARS]!r} is neither a run directory nor a job id")
    run_dir = _lookup_job(target, environ) or _run_dir_from_slurm(target)
    if run_dir is None:
        raise RunDirError(
            f"job {target} is not in this user's submission index ({records.index_path(environ)}) and Slurm "
            "does not know it (any more); pass the run directory instead"
        )
    return Run(run_dir, read_submission(run_dir))


def read_submission(run_dir: Path) -> SubmissionRecord:
    """submission.json, with the job id checked too: it reaches scancel and kill."""
    path = RunDir(run_dir).submission
    record = records.read_submission(run_dir)
    job_id = str(record.get("job_id", ""))
    if not JOB_ID.fullmatch(job_id):  # it reaches scancel and kill: never an option or a process group
        raise RunDirError(
            f"{path} is damaged: job_id must be a Slurm job id or a process id (digits). "
            f"Received: {record.get('job_id')!r:.{SHOWN_CHARS}}"
        )
    if record.get("executor") == "local" and local_pid(job_id) is None:
        raise RunDirError(
            f"{path} is damaged: job_id of a local job must be its process id (1 or more). "
            f"Received: {job_id!r:.{SHOWN_CHARS}}"
        )
    return record


def _lookup_job(job_id: str, environ: Mapping[str, str] | None) -> Path | None:
    try:
        return records.lookup_job(job_id, environ)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(
            f"cannot read the submission index {records.index_path(environ)} ({type(err).__name__}: "
            f"{str(err)[:SHOWN_CHARS]}); pass the run directory instead"
        ) from None


def _run_dir_from_slurm(job_id: str) -> Path | None:
    """Jobs submitted by harness log to RUN_DIR/slurm/<job>_<task>_log.out."""
    try:
        info = scheduler.job_info(job_id)
    except SchedulerUnavailable:
        return None
    if info is None or not info.stdout:
        return None
    folder = Path(info.stdout).parent
    return folder.parent if folder.name == JOB_FOLDER else None


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Status:
    state: RunState
    detail: str
    run_dir: Path
    job_id: str
    executor: str
    elapsed_s: float | None
    epoch: int | None
    epochs: int | None
    last_metrics: str | None
    error: str | None
    requeues: int
    max_requeues: int | None
    scheduler: str | None
    report: Path | None


def status(target: str, environ: Mapping[str, str] | None = None) -> Status:
    run = locate(target, environ)
    state = read_state(run.run_dir)
    metrics = last_metrics(RunDir(run.run_dir).metrics)
    job, scheduler_note = _job(run)
    return derive_status(run, state, job, scheduler_note, metrics, _now())


def _now() -> datetime:
    return datetime.now(UTC)


def _job(run: Run) -> tuple[JobInfo | None, str | None]:
    """The scheduler's view, or a note saying why there is none."""
    if run.executor == "local":
        alive = _pid_alive(run.job_id)
        return JobInfo(run.job_id, "RUNNING" if alive else "ENDED"), None
    try:
        return scheduler.job_info(run.job_id), None
    except SchedulerUnavailable as err:
        return None, f"unavailable ({err})"


def _pid_alive(job_id: str) -> bool:
    pid = local_pid(job_id)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def local_pid(job_id: str) -> int | None:
    """The process id a local job id stands for; None unless it is one (0 or -1 would signal a group)."""
    if not job_id.isdigit():
        return None
    pid = int(job_id)
    return pid if 0 < pid < 2**31 else None


def derive_status(
    run: Run,
    state: Mapping[str, Any],
    job: JobInfo | None,
    scheduler_note: str | None,
    metrics: Mapping[str, Any] | None,
    now: datetime,
) -> Status:
    """Combine the run's own record with the scheduler's; pure, so every case is tested."""
    recorded = recorded_state(state)
    name, detail, error = _classify(run, recorded, state, job, scheduler_note)
    epochs = state.get("epochs") or run.submission.get("epochs")
    epoch = state.get("epoch") if state.get("epoch") is not None else (metrics or {}).get("epoch")
    requeues = max(int(state.get("requeues") or 0), (job.restarts or 0) if job else 0)
    report = RunDir(run.run_dir).report_html
    return Status(
        state=name,
        detail=detail,
        run_dir=run.run_dir,
        job_id=run.job_id,
        executor=run.executor,
        elapsed_s=_elapsed(run.submission, state, name, now),
        epoch=int(epoch) if epoch is not None else None,
        epochs=int(epochs) if epochs is not None else None,
        last_metrics=_metrics_line(metrics),
        error=error,
        requeues=requeues,
        max_requeues=(run.submission.get("resources") or {}).get("max_requeues"),
        scheduler=scheduler_note or _scheduler_line(job),
        report=report if name is RunState.COMPLETED and report.is_file() else None,
    )


def _classify(
    run: Run, recorded: RunState | None, state: Mapping[str, Any], job: JobInfo | None, note: str | None
) -> tuple[RunState, str, str | None]:
    """(state, one-line explanation, error)."""
    active = job is not None and job.state in ACTIVE
    if recorded is not None and recorded in FINAL:
        return recorded, "", state.get("error") if recorded is RunState.FAILED else None
    if run.submission.get("cancelled"):
        return RunState.CANCELLED, f"cancelled at {run.submission.get('cancelled')}", None
    if recorded is RunState.INTERRUPTED and not active:
        resume = f"harness train {RunDir(run.run_dir).config} --resume"
        return RunState.INTERRUPTED, f"stopped by Ctrl-C; continue it with `{resume}`", None
    if recorded is RunState.PREEMPTED:
        if active and job is not None and job.state == "PENDING":
            return RunState.REQUEUED, f"checkpoint saved; waiting in the queue ({job.reason or 'pending'})", None
        if active:
            return RunState.RUNNING, "resuming from its checkpoint after a requeue", None
        return (
            RunState.PREEMPTED,
            "stopped with a checkpoint and not requeued (requeue limit, or the requeue failed)",
            None,
        )
    if recorded is RunState.RUNNING:
        return _running(job, active, note, state)
    return _not_started(run, job, active, note)


def _running(
    job: JobInfo | None, active: bool, note: str | None, state: Mapping[str, Any]
) -> tuple[RunState, str, str | None]:
    if active or note is not None:
        detail = "" if active else f"last update {state.get('updated')}; scheduler not reachable"
        return RunState.RUNNING, detail, None
    ended = f"ended as {job.state}" if job is not None else "is no longer known to the scheduler"
    return (
        RunState.FAILED,
        "",
        f"the job {ended} while the run was training (last update {state.get('updated')}): "
        "killed at its time limit, cancelled, or its node failed; no final state was recorded",
    )


def _not_started(
    run: Run, job: JobInfo | None, active: bool, note: str | None
) -> tuple[RunState, str, str | None]:
    if job is not None and job.state == "PENDING":
        return RunState.PENDING, f"waiting in the queue ({job.reason or 'pending'})", None
    if active:
        return RunState.STARTING, "the job runs; training has not written its state yet", None
    if note is not None:
        return RunState.UNKNOWN, "no state recorded yet and the scheduler is not reachable", None
    return RunState.FAILED, "", _log_error(run) or "the job ended before training started (see harness logs --err)"


def _log_error(run: Run) -> str | None:
    """The last line of the chief's stderr that names an error (a traceback's last line)."""
    path = run.log_path(0, err=True)
    try:
        return last_error_line(path.read_text(errors="replace")) if path.is_file() else None
    except OSError:
        return None


def _elapsed(
    submission: Mapping[str, Any], state: Mapping[str, Any], name: RunState, now: datetime
) -> float | None:
    start = _parse_time(submission.get("submitted"))
    if start is None:
        return None
    end = _parse_time(state.get("updated")) if name in STOPPED else now
    return max(0.0, ((end or now) - start).total_seconds())


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _scheduler_line(job: JobInfo | None) -> str | None:
    if job is None:
        return "not in the queue"
    parts = [job.state]
    if job.reason and job.state == "PENDING":
        parts.append(f"({job.reason})")
    if job.nodes:
        parts.append(f"on {job.nodes}")
    if job.run_time:
        parts.append(f"for {job.run_time}")
    return " ".join(parts)


def _metrics_line(metrics: Mapping[str, Any] | None) -> str | None:
    if not metrics:
        return None
    values = {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"
    }
    values.pop("step", None)
    return f"epoch {metrics.get('epoch')}: {format_logs(values)}"


def format_status(status: Status) -> str:
    rows = [
        ("run", str(status.run_dir)),
        ("job", f"{status.job_id} ({status.executor})"),
        ("state", status.state + (f": {status.detail}" if status.detail else "")),
        ("progress", _progress(status)),
        ("scheduler", status.scheduler),
        ("elapsed", _duration(status.elapsed_s) + " since submission" if status.elapsed_s is not None else None),
        (
            "requeues",
            f"{status.requeues}" + (f" (at most {status.max_requeues})" if status.max_requeues is not None else ""),
        ),
        ("last epoch", status.last_metrics),
        ("error", status.error),
        ("report", str(status.report) if status.report else None),
    ]
    return "\n".join(f"{name + ':':<12}{value}" for name, value in rows if value)


def _progress(status: Status) -> str | None:
    if status.epoch is None:
        return None
    return f"epoch {status.epoch}/{status.epochs}" if status.epochs else f"epoch {status.epoch}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


# --------------------------------------------------------------------------- logs and cancel


def log_text(target: str, rank: int = 0, tail: int | None = None, err: bool = False) -> str:
    """A task's stdout (or stderr) from the job folder; requeued runs append to the same file."""
    run = locate(target)
    tasks = int(run.submission.get("tasks") or 1)
    if not 0 <= rank < tasks:
        raise RunDirError(
            f"--rank must be in [0, {tasks}) for job {run.job_id}, which has {tasks} tasks. Received: {rank}"
        )
    path = run.log_path(rank, err)
    if not path.is_file():
        raise RunDirError(f"no log yet for rank {rank} of job {run.job_id} ({path}): has the job started?")
    try:
        lines = path.read_text(errors="replace").splitlines(keepends=True)
    except OSError as err:
        raise RunDirError(f"cannot read {path}: {err.strerror or err}") from None
    return "".join(lines[-tail:] if tail else lines)


def cancel(target: str) -> tuple[Run, str]:
    """Cancel the job; the run then reads as cancelled (the chief cannot record it once killed)."""
    run = locate(target)
    try:
        state = recorded_state(read_state(run.run_dir))
    except RunDirError:
        state = None  # a damaged state.json must not keep a job from being cancelled
    if state in ENDED:  # ended: a local job's pid may belong to another process by now
        return run, f"job {run.job_id} already ended: the run is {state}; nothing to cancel"
    if run.submission.get("cancelled"):
        return run, f"job {run.job_id} was already cancelled at {run.submission.get('cancelled')}"
    if run.executor == "local":
        if not _pid_alive(run.job_id):  # it failed before it could record that: keep what status says
            return run, f"job {run.job_id} already ended (its process is gone); nothing to cancel"
        _interrupt_local(run.job_id)
    else:
        scheduler.cancel(run.job_id)
    when = utc_now()
    try:
        records.update_submission(run.run_dir, cancelled=when)
        if run.run_dir.is_dir():  # also before the job wrote anything: its start must not undo this
            write_state(
                run.run_dir, RunState.CANCELLED, current_job=None, host=node_name(), cancelled=when, job_id=run.job_id
            )
    except OSError as err:  # the job is cancelled all the same; say what could not be noted
        return run, (
            f"cancelled job {run.job_id}, but could not record it in {run.run_dir} ({err.strerror or err}); "
            "`harness status` will show how the job ended"
        )
    return run, f"cancelled job {run.job_id} ({run.run_dir})"


def _interrupt_local(job_id: str) -> None:
    """submitit's local controller stops its tasks on SIGINT (on SIGTERM they would only checkpoint and stop).

    With setup lines (`slurm.setup`, `distribute.huge_pages`) the job id is the shell that runs
    them before the controller, and a shell waiting for its command does not pass SIGINT on.
    """
    pid = local_pid(job_id)
    if pid is None:
        return
    for target in [pid, *(child for child in child_pids(pid) if _is_local_controller(child))]:
        try:
            os.kill(target, signal.SIGINT)
        except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to someone else
            pass


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc; none where there is no /proc)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # the fields after the command's closing parenthesis: state, then the parent's pid
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
    return found


def _is_local_controller(pid: int) -> bool:
    try:
        return b"submitit.local._local" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
