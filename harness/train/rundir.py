"""The chief's writer for one run directory: metrics lines, checkpoints, TensorBoard events."""

from __future__ import annotations

import json
import os
import shutil
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
STATE_SCHEMA_VERSION = 1


def check_target(path: Path, *, resume: bool | str, overwrite: bool) -> None:
    """Refuse to clobber an existing run, or to resume one that has nothing to resume from.

    `resume="auto"` (jobs that may be requeued) continues from a checkpoint when there is one
    and otherwise starts in the existing folder, which may hold submission files.
    """
    if resume == "auto":
        return
    if resume and overwrite:
        raise RunDirError(
            "--resume and --overwrite exclude each other: resume continues a run, overwrite deletes it"
        )
    if resume:
        if not path.is_dir():
            raise RunDirError(f"cannot resume: run directory {path} does not exist; start without --resume")
        if checkpoint.resolve(path / CHECKPOINTS) is None:
            raise RunDirError(
                f"cannot resume: run directory {path} has no checkpoint (checkpoints/latest); "
                "start again with --overwrite"
            )
        return
    if path.exists() and not overwrite:
        raise RunDirError(
            f"run directory {path} already exists. Use --resume to continue it, --overwrite to "
            "replace it, or choose another name with run.name=NEW_NAME"
        )


def prepare(path: Path, *, overwrite: bool) -> None:
    """Create the run directory (after every input was validated)."""
    if overwrite and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


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
    record["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
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
        """Metrics of epochs 1..epoch; later lines (from after the checkpoint) are dropped."""
        lines = read_metrics(self.path / METRICS)
        kept = [line for line in lines if int(line.get("epoch", 0)) <= epoch]
        if len(kept) != len(lines):
            io.write_text(self.path / METRICS, "".join(json.dumps(line) + "\n" for line in kept))
        return kept

    def append_metrics(self, logs: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(logs) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
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


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Parse metrics.jsonl, ignoring a last line cut short by a crash."""
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines
