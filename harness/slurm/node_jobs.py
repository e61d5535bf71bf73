"""Jobs pinned to named nodes: one callable per node (or per pair of nodes), for node validation.

Unlike a training job, such a job must run on exactly the nodes it names (`--nodelist` with as
many nodes as named), and its function runs once, in the batch step on the job's first node
(`use_srun=False`): a check that spans several nodes starts its own processes there (`mpirun`
inside the allocation), and a one-node check is one process anyway. The job is not requeued:
a validation that was interrupted is reported as such, not run twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from harness.slurm import scheduler
from harness.slurm.script import export_lines


@dataclass(frozen=True)
class PinnedResources:
    """What each pinned job asks for besides its nodes."""

    time_minutes: int = 30
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    exclusive: bool = True
    """A benchmark shares its node with nobody, or it measures the neighbours."""
    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def pinned_parameters(nodes: Sequence[str], resources: PinnedResources, job_name: str) -> dict[str, Any]:
    """`SlurmExecutor.update_parameters` keywords for one job on exactly `nodes`."""
    if not nodes:
        raise ValueError("a pinned job needs at least one node")
    additional: dict[str, Any] = {"no_requeue": True}
    if resources.reservation:
        additional["reservation"] = resources.reservation
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": resources.time_minutes,
        "nodes": len(nodes),
        "ntasks_per_node": 1,
        "nodelist": ",".join(nodes),
        "use_srun": False,
        "additional_parameters": additional,
    }
    if resources.exclusive:
        params["exclusive"] = True
    optional = {"partition": resources.partition, "account": resources.account, "qos": resources.qos}
    params.update({key: value for key, value in optional.items() if value is not None})
    setup = [*export_lines(dict(resources.env)), *resources.setup]
    if setup:
        params["setup"] = setup
    return params


def submit_pinned(
    folder: Path, function: Callable[[], Any], nodes: Sequence[str], resources: PinnedResources, job_name: str
) -> str:
    """Submit `function` as one job on exactly `nodes`; returns the Slurm job id."""
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(**pinned_parameters(nodes, resources, job_name))
    job = executor.submit(function)
    return str(job.job_id)


def parse_job_states(text: str) -> dict[str, str]:
    """`squeue -h -o '%i|%T'` lines -> {job id: state}."""
    states = {}
    for line in text.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            states[job_id] = state
    return states


def job_states(job_ids: Sequence[str], runner: scheduler.Runner = scheduler.run) -> dict[str, str]:
    """The state of each job still in the queue (PENDING, RUNNING, COMPLETING...), in one squeue call.

    A job missing from the answer has left the queue; SchedulerUnavailable when Slurm cannot be asked.
    """
    if not job_ids:
        return {}
    try:
        text = runner(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T"])
    except scheduler.SchedulerUnavailable as err:
        if "invalid job id" in str(err).lower():
            return {}
        raise
    return parse_job_states(text)


def cancel_jobs(job_ids: Sequence[str]) -> list[str]:
    """scancel each job; returns the messages of those that could not be cancelled (already gone...)."""
    problems = []
    for job_id in job_ids:
        try:
            scheduler.cancel(job_id)
        except scheduler.SchedulerUnavailable as err:
            problems.append(str(err))
    return problems
