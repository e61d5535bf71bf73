"""The training side of the run directory: whether it may start there, and the chief's writer.

The layout, the records and the lifecycle (creation, marker, `--overwrite`) belong to
`harness.rundir`; this module adds what only training knows: checkpoints to resume from, the
job and node the chief runs on, and TensorBoard. Its names are re-exported for existing callers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.distribute.cluster import ClusterEnv, job_of
from harness.errors import RunDirError
from harness.rundir import RunDir, RunDirWarning, RunState
from harness.rundir.lifecycle import (
    check_output_dir,
    check_removable,
    is_run_dir,
    new_run_dir,
    removal_problem,
    remove_run_dir,
    set_aside,
    write_marker,
)
from harness.rundir.metrics import append_metrics, end_with_complete_line, metrics_until, read_metrics
from harness.rundir.records import read_state
from harness.rundir.records import write_state as _write_state_record
from harness.train import checkpoint
from harness.train.checkpoint import LoopState

if TYPE_CHECKING:
    from harness.train.loop import Trainer

__all__ = [
    "RunDirWarning",
    "RunWriter",
    "check_output_dir",
    "check_removable",
    "check_target",
    "end_with_complete_line",
    "is_run_dir",
    "new_run_dir",
    "read_metrics",
    "read_state",
    "remove_run_dir",
    "removal_problem",
    "set_aside",
    "write_marker",
    "write_state",
]


# ---- where a run may start ----------------------------------------------------------------


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
    if not auto and not checkpoint.candidates(RunDir(path).checkpoints):
        raise RunDirError(
            f"cannot resume: run directory {path} has no checkpoint (checkpoints/latest); "
            "start again with --overwrite"
        )


# ---- state.json ---------------------------------------------------------------------------


def write_state(
    run_dir: Path, state: RunState, *, starting: bool = False, job: ClusterEnv | None = None, **fields: Any
) -> None:
    """Update state.json as this process (its job and node); see `harness.rundir.records.write_state`.

    `job` is the writing process's job context (default: read from its environment).
    """
    job = job_of(os.environ) if job is None else job
    _write_state_record(run_dir, state, current_job=job.job_id, host=job.node_name, starting=starting, **fields)


# ---- the chief's writer -------------------------------------------------------------------


class RunWriter:
    """Everything the training loop writes into the run directory goes through here."""

    def __init__(self, path: Path, tensorboard: bool = False, job: ClusterEnv | None = None) -> None:
        self.path = path
        self.job = job
        self.run = RunDir(path)
        self._tb_writer: Any = None
        if tensorboard:
            import tensorflow as tf

            self._tb_writer = tf.summary.create_file_writer(str(self.run.tensorboard))

    @property
    def checkpoints(self) -> Path:
        return self.run.checkpoints

    def history_until(self, epoch: int) -> list[dict[str, Any]]:
        """Metrics of epochs 1..epoch; later lines (from after the checkpoint) are dropped.

        Damaged lines are dropped too (after a warning), so the file the run appends to holds
        only whole lines.
        """
        return metrics_until(self.run.metrics, epoch)

    def append_metrics(self, logs: dict[str, Any]) -> None:
        append_metrics(self.run.metrics, logs)
        self._tensorboard(logs)
        write_state(self.path, RunState.RUNNING, job=self.job, epoch=int(logs["epoch"]), global_step=int(logs["step"]))

    def save_checkpoint(self, trainer: Trainer, state: LoopState, best: bool) -> Path:
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
