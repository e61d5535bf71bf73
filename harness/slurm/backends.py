"""submitit executors, chosen by name so tests and dry runs go through the production path."""

from __future__ import annotations

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
    return make_executor(kind, folder, params, max_requeues).submit(function)


def parameters_for(kind: Kind, slurm: Any, job_name: str) -> dict[str, Any]:
    return slurm_parameters(slurm, job_name) if kind == "slurm" else local_parameters(slurm)
