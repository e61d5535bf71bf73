"""submitit executors, chosen by name so tests and dry runs go through the production path."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import submitit
from submitit.core.core import Job

from harness.slurm.script import local_parameters, slurm_parameters

Kind = Literal["slurm", "local"]

DRY_RUN_UID = "dry-run"


class _RenderingSlurmExecutor(submitit.SlurmExecutor):
    """A SlurmExecutor that renders scripts where `srun` is not installed (a dry run on a laptop).

    It never submits: only `batch_script` uses it.
    """

    @classmethod
    def affinity(cls) -> int:
        return 2


def make_executor(kind: Kind, folder: Path, params: dict[str, Any], max_requeues: int) -> submitit.Executor:
    """A configured executor; `max_requeues` also bounds submitit's own time-out requeues."""
    executor: submitit.Executor
    if kind == "slurm":
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    else:
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=max_requeues)
    executor.update_parameters(**params)
    return executor


def batch_script(folder: Path, params: dict[str, Any], python: str | None = None) -> str:
    """The sbatch script submitit writes for these parameters, rendered without submitting."""
    executor = _RenderingSlurmExecutor(folder=folder, python=python)
    executor.update_parameters(**params)
    return executor._make_submission_file_text(executor._submitit_command_str, DRY_RUN_UID)


def submit(kind: Kind, folder: Path, params: dict[str, Any], max_requeues: int, function: Any) -> Job[Any]:
    executor = make_executor(kind, folder, params, max_requeues)
    if kind == "local":
        with interruptible_children():
            return executor.submit(function)
    return executor.submit(function)


@contextmanager
def interruptible_children() -> Iterator[None]:
    """Children started here stop on SIGINT even if we ignore it.

    `harness cancel` stops a local job by sending SIGINT to submitit's controller, which then stops
    its tasks. A process started from a background shell, `nohup` or cron ignores SIGINT, and an
    ignored signal stays ignored in its children: the cancel would be reported but the job would
    keep running. A handled signal is reset to its default in a child, so handle it meanwhile.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def parameters_for(kind: Kind, slurm: Any, job_name: str) -> dict[str, Any]:
    return slurm_parameters(slurm, job_name) if kind == "slurm" else local_parameters(slurm)
