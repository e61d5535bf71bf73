"""The run directory's layout: every file name in it, and the states a run goes through.

Training, reports, Slurm, sharing, and the coming sweeps and node validation all read and write
the same folder; the names are defined here once so that no part spells one differently. Nothing
here imports TensorFlow, so the login-node commands (status, report) stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

CONFIG = "config.yaml"
ENV = "env.json"
STATE = "state.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_STATE = "state.json"
"""The loop position inside one checkpoint folder (`checkpoints/step-.../`), not the run's state."""
MODEL = "model.keras"
PREPROCESSING = "preprocessing.json"
PREDICTIONS = "test_predictions.npz"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
MODEL_CARD = "model_card.md"
TENSORBOARD = "tensorboard"
SUBMISSION = "submission.json"
JOB_FOLDER = "slurm"
"""What `harness submit` adds: the scheduler's files and the job's logs (RUN_DIR/slurm/)."""
MARKER = ".harness-run"
"""Says harness made the folder as a run directory: the only kind `--overwrite` deletes."""


class RunDirWarning(UserWarning):
    """Something in a run directory was damaged and repaired, or an older copy is used; the run goes on."""


class RunState(StrEnum):
    """Where a run stands.

    The first seven are what the run records in state.json; the others are what `harness status`
    derives when it combines that record with the scheduler's view (a StrEnum, so each member
    compares equal to, and is written to JSON as, its plain string).
    """

    RUNNING = "running"
    PREEMPTED = "preempted"  # stopped with a checkpoint (SIGTERM); a requeue continues it
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C
    FAILED = "failed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"  # `harness cancel`
    PRUNED = "pruned"  # a sweep trial its pruner stopped, with a checkpoint; not continued
    REQUEUED = "requeued"  # preempted and waiting in the queue again
    PENDING = "pending"  # queued, not started
    STARTING = "starting"  # the job runs, training has not written its state yet
    UNKNOWN = "unknown"  # nothing recorded and the scheduler cannot be asked

    @classmethod
    def parse(cls, text: str) -> RunState | None:
        """The state a recorded string names, or None for a string this harness does not know."""
        try:
            return cls(text)
        except ValueError:
            return None


FINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.PRUNED})
"""States a run never leaves by itself."""
ENDED = FINAL | {RunState.INTERRUPTED}
"""States in which no process of the run is left: a local job's pid may belong to another process."""
STOPPED = ENDED | {RunState.PREEMPTED}
"""States in which the run's clock stopped at its last update."""


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory; the only place that joins a run directory with a file name."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        """The resolved config the run started with (what `--resume` compares against)."""
        return self.path / CONFIG

    @property
    def env(self) -> Path:
        return self.path / ENV

    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def preprocessing(self) -> Path:
        return self.path / PREPROCESSING

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def report(self) -> Path:
        """report.json, the versioned record; report.md and report.html are rendered from it."""
        return self.path / REPORT_JSON

    @property
    def report_md(self) -> Path:
        return self.path / REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.path / REPORT_HTML

    @property
    def model_card(self) -> Path:
        return self.path / MODEL_CARD

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def submission(self) -> Path:
        return self.path / SUBMISSION

    @property
    def job_folder(self) -> Path:
        return self.path / JOB_FOLDER

    @property
    def job_config(self) -> Path:
        """The config saved at submission, which the job (and each requeue of it) trains."""
        return self.job_folder / CONFIG

    @property
    def marker(self) -> Path:
        return self.path / MARKER


def checkpoint_state(folder: Path) -> Path:
    """The loop-state file of one checkpoint folder."""
    return folder / CHECKPOINT_STATE
