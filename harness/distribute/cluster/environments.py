"""Choosing the environment that describes this process, and reading the job around it, once.

Each launcher's variables are parsed by one module of this package (`slurm`, `tf_config`,
`mpi`, `local`), each a pure function over a mapping that returns None when its launcher did
not start this process. `detect` asks them in order of precedence, like Lightning Fabric's
cluster environments, and is the one place that reads a process's environment: the training
entry point calls it once and hands the result down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from harness.distribute.cluster.context import UNKNOWN_HOST, ClusterEnv
from harness.distribute.cluster.local import from_launcher, from_submitit_local
from harness.distribute.cluster.mpi import from_mpi_launcher
from harness.distribute.cluster.ports import port_for_job
from harness.distribute.cluster.slurm import from_slurm
from harness.distribute.cluster.tf_config import from_tf_config
from harness.distribute.cluster.variables import first_value

Parser = Callable[[Mapping[str, str]], ClusterEnv | None]

ENVIRONMENTS: tuple[Parser, ...] = (from_submitit_local, from_launcher, from_mpi_launcher, from_tf_config, from_slurm)
"""The launchers in order of precedence (see `detect`)."""

JOB_ID_VARS = ("SLURM_JOB_ID", "SLURM_JOBID", "SUBMITIT_LOCAL_JOB_ID")


def single() -> ClusterEnv:
    """One process, not started by any launcher."""
    return ClusterEnv("single", 0, 1, 0, 1, 0, (UNKNOWN_HOST,), UNKNOWN_HOST, port_for_job(None), None)


def detect(env: Mapping[str, str]) -> ClusterEnv:
    """This process's job context: the first environment that describes its ranks, submitit's
    local executor > launcher > horovod/mpirun > tf_config > slurm > single, and the job around it.

    The most specific launcher wins. Our launcher run inside a Slurm allocation sets HARNESS_*
    on top of the allocation's SLURM_* variables, which describe the allocation, not the
    processes it started. Likewise mpirun inside Slurm starts its ranks through one srun task
    per node, so SLURM_PROCID counts nodes while OMPI_* count the ranks it started. An explicit
    TF_CONFIG is a deliberate choice of the user. Slurm's variables come last because they
    leak into everything started inside an allocation. One exception: PMI_* exported by
    `srun --mpi=pmi2` itself describe the Slurm step, and Slurm also knows the hosts.
    """
    ranks = next((found for parse in ENVIRONMENTS if (found := parse(env)) is not None), None)
    return _with_job(ranks or single(), env)


def job_of(env: Mapping[str, str]) -> ClusterEnv:
    """The job around a process that is not one of its ranks (a command acting on a run from
    outside, like `harness cancel`): its id, node and requeues on a single-process view, which
    never fails on a launcher's variables the way `detect` rightly does."""
    return _with_job(single(), env)


def _with_job(ranks: ClusterEnv, env: Mapping[str, str]) -> ClusterEnv:
    """Add what the scheduler says about the job: its id, this task's number, node and requeues."""
    return replace(
        ranks,
        job_id=ranks.job_id or first_value(env, JOB_ID_VARS),
        executor=env.get("SUBMITIT_EXECUTOR", "").strip() or None,
        task_rank=_count(first_value(env, ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID")), 0),
        task_count=_count(first_value(env, ("SLURM_NTASKS", "SUBMITIT_LOCAL_NTASKS")), 1),
        slurm_node=env.get("SLURMD_NODENAME", "").strip() or None,
        restart_count=_count(env.get("SLURM_RESTART_COUNT"), 0),
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        horovod_identity="HOROVOD_RANK" in env,
    )


def _count(value: str | None, default: int) -> int:
    """A count the scheduler sets for information only: a missing or odd value gives the default."""
    text = (value or "").strip()
    return int(text) if text.isdigit() else default
