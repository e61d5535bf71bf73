"""Sweep workers as one Slurm job array whose `slurm_array_parallelism` caps the running tasks.

Planning checks the per-trial resources as `harness submit` does (profile, strategy against
tasks, partition against sinfo) before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.config import SlurmConfig
from harness.errors import ConfigError
from harness.slurm import backends, scheduler
from harness.slurm.profiles import resolve_profile
from harness.slurm.resources import check_fit, merge, with_tasks
from harness.slurm.scheduler import SchedulerUnavailable
from harness.slurm.submit import SubmitError
from harness.slurm.submit import _first_line as first_line


def plan_array(trials: Sequence[SlurmConfig], strategy: str, job_name: str) -> tuple[SlurmConfig, dict[str, Any]]:
    """The allocation of one array task, large enough for every trial's resources, and submitit's
    parameters for it.

    The task runs one worker process (no srun at the start); the worker starts each trial as an
    `srun` step over the nodes and tasks that trial asks for, so trials may differ in size (a
    scaling study) as long as each fits the allocation.
    """
    profile = resolve_profile(trials[0].profile, None)
    resolved = [with_tasks(merge(profile, slurm, {}), strategy) for slurm in trials]
    for slurm in resolved:
        check_fit(strategy, slurm)
    allocation = resolved[0].model_copy(
        update={
            "nodes": max(s.nodes for s in resolved),
            "tasks_per_node": max(s.tasks_per_node or 1 for s in resolved),
            "gpus_per_node": max(s.gpus_per_node for s in resolved),
        }
    )
    try:
        scheduler.check_partition(allocation, scheduler.query_partitions())
    except SchedulerUnavailable as err:
        raise ConfigError(f"cannot submit to Slurm: {err}. Use --executor local to run the sweep here") from None
    params = backends.parameters_for("slurm", allocation, job_name)
    params["use_srun"] = False
    return allocation, params


def submit_array(
    folder: Path,
    params: dict[str, Any],
    max_requeues: int,
    function: Callable[[int], Any],
    tasks: int,
    parallelism: int,
) -> list[str]:
    """One `sbatch --array=0-(tasks-1)%parallelism`; returns the task job ids (ARRAY_TASK).

    A refusal by the scheduler is a SubmitError naming sbatch's reason."""
    executor = backends.make_executor("slurm", folder, params, max_requeues)
    executor.update_parameters(array_parallelism=parallelism)
    try:
        jobs = executor.map_array(function, list(range(tasks)))
    except Exception as err:  # noqa: BLE001 - sbatch's refusal, as `harness submit` reports it
        raise SubmitError(f"the sweep's job array was not submitted: {first_line(err)}") from err
    return [str(job.job_id) for job in jobs]


def active(job_ids: Sequence[str]) -> list[str]:
    """The jobs among `job_ids` that are still queued or running (SchedulerUnavailable if unknown)."""
    found = []
    for job_id in job_ids:
        info = scheduler.job_info(job_id)
        if info is not None and info.state in scheduler.ACTIVE:
            found.append(job_id)
    return found


def cancel(job_ids: Sequence[str]) -> None:
    for job_id in job_ids:
        scheduler.cancel(job_id)
