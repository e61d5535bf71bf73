"""The run directory: where it may be created or replaced, and the chief's writer for it.

Only a folder the harness made as a run directory may ever be deleted (`--overwrite`): such a
folder holds a `.harness-run` marker from its first moment, because a new run directory is
assembled under a temporary name, marker first, and renamed into place once its first files
are written. A full disk or a crash during that assembly therefore leaves no half-made run
directory that would block the next attempt.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import io
from harness.envinfo import node_name
from harness.errors import RunDirError
from harness.train import checkpoint
from harness.train.checkpoint import LoopState

METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
STATE = "state.json"
CONFIG = "config.yaml"
MARKER = ".harness-run"
STATE_SCHEMA_VERSION = 1
PRUNED = "pruned"
"""state.json of a sweep trial its pruner stopped: it ended with a checkpoint and is not continued."""
MARKER_SCHEMA_VERSION = 1
SHOWN_BAD_LINES = 5


class RunDirWarning(UserWarning):
    """Something in a run directory was damaged and skipped or repaired; the run goes on."""


# ---- where a run directory may be created, resumed or replaced ---------------------------


def check_target(path: Path, output_dir: Path, *, resume: bool | str, overwrite: bool) -> None:
    """Refuse to clobber an existing run, or to resume one that has nothing to resume from.

    Runs before any data is loaded, so a wrong target costs nothing. `resume="auto"` (jobs that
    may be requeued) continues from a checkpoint when there is one and otherwise starts in the
    existing folder, which may hold submission files.
    """
    if resume and resume != "auto" and overwrite:
        raise RunDirError(
            "--resume and --overwrite exclude each other: resume continues a run, overwrite deletes it"
        )
    check_output_dir(output_dir)
    if resume:
        _check_resume_target(path, auto=resume == "auto")
        return
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise RunDirError(
            f"run directory {path} already exists. Use --resume to continue it, --overwrite to "
            "replace it, or choose another name with run.name=NEW_NAME"
        )
    check_removable(path, output_dir)


def _check_resume_target(path: Path, auto: bool) -> None:
    if auto and not path.exists():
        return
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise RunDirError(f"cannot resume: run directory {path} {what}; start without --resume")
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot resume: run directory {path} is not writable")
    if not auto and not checkpoint.candidates(path / CHECKPOINTS):
        raise RunDirError(
            f"cannot resume: run directory {path} has no checkpoint (checkpoints/latest); "
            "start again with --overwrite"
        )


def check_output_dir(output_dir: Path) -> None:
    """run.output_dir must be a writable folder, or one that can be created (exit 2 before any work).

    What decides is the nearest folder that exists: the output folder itself, or the parent it
    would be created in.
    """
    out = Path(output_dir).absolute()
    folder = next((path for path in (out, *out.parents) if path.exists()), None)
    if folder is None:
        return
    key = f"run.output_dir={str(output_dir)!r}" + ("" if folder == out else " cannot be created")
    if not folder.is_dir():
        raise RunDirError(f"{key}: {folder} is a file, not a folder; choose another run.output_dir")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunDirError(f"{key}: {folder} is not writable (read-only or not yours); choose another run.output_dir")


def is_run_dir(path: Path) -> bool:
    """Whether harness created `path` as a run directory.

    The marker says so; a folder from before the marker existed counts if it holds the harness's
    own state.json (with its schema version) next to config.yaml.
    """
    if (path / MARKER).is_file():
        return True
    state = read_state(path)
    return "schema_version" in state and "state" in state and (path / CONFIG).is_file()


def removal_problem(path: Path, output_dir: Path) -> str | None:
    """Why `path` must not be deleted to make room for a new run, or None if it may be."""
    if path.is_symlink():
        return f"it is a symbolic link (to {os.readlink(path)}), and harness never deletes through a link"
    resolved, out = path.resolve(), Path(output_dir).resolve()
    if resolved == out:
        return f"it is run.output_dir itself ({out}), which holds other runs"
    if resolved.parent != out:
        return f"it ({resolved}) is not a folder directly inside run.output_dir ({out})"
    if not resolved.is_dir():
        return "it is a file, not a run directory"
    if not is_run_dir(resolved):
        return f"it holds no {MARKER} marker, so harness did not create it as a run directory"
    return None


def check_removable(path: Path, output_dir: Path) -> None:
    problem = removal_problem(path, output_dir)
    if problem is not None:
        raise RunDirError(
            f"--overwrite refused: {path} was not deleted because {problem}. Delete it yourself if it "
            "is no longer needed, or choose another name with run.name=NEW_NAME"
        )


def remove_run_dir(path: Path, output_dir: Path) -> None:
    """Delete a run directory, checking again at the last moment that it is one."""
    check_removable(path, output_dir)
    shutil.rmtree(path.resolve())


def write_marker(folder: Path, by: str) -> None:
    """Mark `folder` as a run directory made by harness, the only kind --overwrite deletes."""
    marker = {"schema_version": MARKER_SCHEMA_VERSION, "created": _now(), "by": by}
    io.write_json(folder / MARKER, marker)


@contextmanager
def new_run_dir(path: Path, output_dir: Path, *, overwrite: bool, by: str = "harness train") -> Iterator[Path]:
    """Yield a staging folder for a new run directory; it becomes `path` when the block succeeds.

    The staging folder sits beside `path` and is removed if the block fails, so nothing
    half-made is left. A run `--overwrite` replaces is deleted only then, once the new run's
    first files were written.
    """
    io.make_dirs(path.parent)
    staging = io.temp_dir(path.parent, f".{path.name}.new-")
    try:
        write_marker(staging, by)
        try:
            yield staging
        except io.WriteError as err:
            raise _told_for(err, staging, path) from None
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise RunDirError(f"run directory {path} appeared while this run was starting; nothing was replaced")
            _swap_in(staging, path, output_dir)
        else:
            os.rename(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def set_aside(path: Path, output_dir: Path) -> Path:
    """Move a run that --overwrite replaces to a hidden name beside it; returns where it went.

    The caller deletes it once the new run is in place, or renames it back if that fails.
    """
    check_removable(path, output_dir)
    aside = io.temp_dir(path.parent, f".{path.name}.old-")
    os.rmdir(aside)  # only its unique name is wanted: rename needs a free target
    os.rename(path, aside)
    return aside


def _swap_in(staging: Path, path: Path, output_dir: Path) -> None:
    """Replace the old run at `path` by `staging`: the old one is set aside first and deleted only
    once the new one is in place, so a failed rename loses neither."""
    aside = set_aside(path, output_dir)
    try:
        os.rename(staging, path)
    except OSError:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _told_for(err: io.WriteError, staging: Path, final: Path) -> io.WriteError:
    try:
        return err.moved(final / err.target.relative_to(staging))
    except ValueError:
        return err


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- state.json ---------------------------------------------------------------------------


def write_state(run_dir: Path, state: str, *, starting: bool = False, **fields: Any) -> None:
    """Update state.json, the run's own record of where it stands (sacct is often off or slow).

    After `harness cancel`, what the cancelled job still writes (its start if the cancel came
    early, an epoch's progress, "preempted" on SIGTERM, "failed") must not undo the cancellation;
    only a real completion, or a start by another job or process (`--resume`, a new submission),
    replaces it.
    """
    previous = read_state(run_dir)
    restarted = starting and previous.get("job_id") != current_job_id()
    if previous.get("state") == "cancelled" and state != "completed" and not restarted:
        return
    record = {**previous, **fields, "schema_version": STATE_SCHEMA_VERSION, "state": state}
    record["updated"] = _now()
    if starting:  # where the chief runs now (a requeued job may move to another node)
        record.update(host=node_name(), job_id=current_job_id())
    record.setdefault("host", node_name())
    record.setdefault("job_id", current_job_id())
    io.write_json(run_dir / STATE, record)


def current_job_id() -> str | None:
    """The job this process belongs to: Slurm's id, or the id submitit's local executor gave it."""
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        found = json.loads((run_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


# ---- metrics.jsonl ------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The epoch lines of metrics.jsonl; a damaged line is skipped with one warning naming it.

    A line is damaged when it is not a JSON object with an integer `epoch`, or when it is the
    last line and was cut short by a crash during a write (no newline, not valid JSON).
    """
    records, bad = _parse_metrics(path)
    if bad:
        shown = ", ".join(f"line {number} ({why})" for number, why in bad[:SHOWN_BAD_LINES])
        more = f" and {len(bad) - SHOWN_BAD_LINES} more" if len(bad) > SHOWN_BAD_LINES else ""
        warnings.warn(RunDirWarning(f"{path}: skipped {len(bad)} unreadable line(s): {shown}{more}"), stacklevel=2)
    return records


def _parse_metrics(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    if not path.is_file():
        return [], []
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    records: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _metrics_record(raw)
        if record is not None:
            records.append(record)
        elif number == len(lines):
            bad.append((number, "cut short: no newline at its end"))
        else:
            bad.append((number, "not a JSON object with an integer epoch"))
    return records, bad


def _metrics_record(raw: str) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    epoch = record.get("epoch")
    return record if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def end_with_complete_line(path: Path) -> None:
    """Before appending: a last line without its newline is finished if whole, cut if partial.

    A crash during a write can leave half a line; appended to, it would merge with the next
    epoch's line and lose both.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
    start = data.rfind(b"\n") + 1
    tail = data[start:].decode("utf-8", errors="replace")
    if _metrics_record(tail) is not None:
        io.append_text(path, "\n")
        return
    number = data.count(b"\n") + 1
    warnings.warn(
        RunDirWarning(f"{path}: line {number} was cut short by a crash; removed it: {tail[:200]!r}"), stacklevel=2
    )
    io.write_bytes(path, data[:start])


# ---- the chief's writer -------------------------------------------------------------------


class RunWriter:
    """Everything the training loop writes into the run directory goes through here."""

    def __init__(self, path: Path, tensorboard: bool = False) -> None:
        self.path = path
        self._tb_writer: Any = None
        if tensorboard:
            import tensorflow as tf

            self._tb_writer = tf.summary.create_file_writer(str(path / "tensorboard"))

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def history_until(self, epoch: int) -> list[dict[str, Any]]:
        """Metrics of epochs 1..epoch; later lines (from after the checkpoint) are dropped.

        Damaged lines are dropped too (after a warning), so the file the run appends to holds
        only whole lines.
        """
        path = self.path / METRICS
        lines = read_metrics(path)
        kept = [line for line in lines if int(line["epoch"]) <= epoch]
        text = "".join(json.dumps(line) + "\n" for line in kept)
        if path.is_file() and path.read_bytes() != text.encode("utf-8"):
            io.write_text(path, text)
        return kept

    def append_metrics(self, logs: dict[str, Any]) -> None:
        path = self.path / METRICS
        end_with_complete_line(path)
        io.append_text(path, json.dumps(logs) + "\n")
        self._tensorboard(logs)
        write_state(self.path, "running", epoch=int(logs["epoch"]), global_step=int(logs["step"]))

    def save_checkpoint(self, trainer: Any, state: LoopState, best: bool) -> Path:
        return checkpoint.save(
            self.checkpoints, trainer.model.variables, trainer.optimizer.variables, state, best
        )

    def latest_checkpoint(self) -> Path | None:
        return checkpoint.resolve(self.checkpoints)

    def _tensorboard(self, logs: dict[str, Any]) -> None:
        if self._tb_writer is None:
            return
        import tensorflow as tf

        with self._tb_writer.as_default(step=int(logs["epoch"])):
            for key, value in logs.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    tf.summary.scalar(key, value)
        self._tb_writer.flush()
