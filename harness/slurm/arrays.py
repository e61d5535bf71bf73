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
from harness.slurm.resources import check_fit, merge, total_tasks, with_tasks
from harness.slurm.scheduler import SchedulerUnavailable
from harness.slurm.submit import SubmitError
from harness.slurm.submit import _first_line as first_line


def plan_array(slurm: SlurmConfig, strategy: str, job_name: str) -> tuple[SlurmConfig, dict[str, Any]]:
    """The resolved resources of one array task and submitit's parameters for them."""
    profile = resolve_profile(slurm.profile, None)
    resolved = with_tasks(merge(profile, slurm, {}), strategy)
    check_fit(strategy, resolved)
    if total_tasks(resolved) > 1:
        raise ConfigError(
            f"sweep trials run one process each (slurm.nodes={resolved.nodes}, tasks_per_node="
            f"{resolved.tasks_per_node} ask for {total_tasks(resolved)}): several trials share one worker "
            "process, and a multi-process strategy can be set up only once per process. Use slurm.nodes: 1 "
            "and one task (a single-process strategy: single or mirrored over the node's GPUs)"
        )
    try:
        scheduler.check_partition(resolved, scheduler.query_partitions())
    except SchedulerUnavailable as err:
        raise ConfigError(f"cannot submit to Slurm: {err}. Use --executor local to run the sweep here") from None
    return resolved, backends.parameters_for("slurm", resolved, job_name)


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
