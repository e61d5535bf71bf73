"""MPI launchers: horovodrun (HOROVOD_*), Open MPI's mpirun (OMPI_COMM_WORLD_*), MPICH-style PMI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from harness.distribute.cluster.context import UNKNOWN_HOST, ClusterEnv
from harness.distribute.cluster.ports import port_for_job
from harness.distribute.cluster.slurm import TASK_COUNT_VARS, in_task_step
from harness.distribute.cluster.variables import check_rank, first_var, int_var
from harness.errors import LaunchError


@dataclass(frozen=True)
class _Ranks:
    rank: int
    size: int
    local_rank: int
    local_size: int
    node_rank: int


def from_horovod(env: Mapping[str, str]) -> ClusterEnv | None:
    """Processes started by horovodrun (HOROVOD_*), Open MPI's mpirun (OMPI_COMM_WORLD_*) or an
    MPICH-style PMI launcher (PMI_RANK/PMI_SIZE with MPI_LOCALRANKID/MPI_LOCALNRANKS), in that order.

    These launchers do not tell a process where the other ranks run. Unless every rank is on
    this node and HOROVOD_HOSTNAME names it, `hosts` and `master_addr` are the marker
    "localhost": right on one node, placeholders across nodes. That is enough for Horovod,
    which does its own rendezvous; tf.distribute needs Slurm, TF_CONFIG or our launcher.
    """
    if "HOROVOD_RANK" in env:
        ranks = _horovodrun_ranks(env)
    elif "OMPI_COMM_WORLD_RANK" in env:
        ranks = _ompi_ranks(env)
    elif "PMI_RANK" in env:
        ranks = _pmi_ranks(env)
    else:
        return None
    hosts = _mpi_hosts(env, ranks)
    job_id = env.get("SLURM_JOB_ID") or None
    return ClusterEnv(
        source="horovod",
        rank=ranks.rank,
        world_size=ranks.size,
        local_rank=ranks.local_rank,
        local_world_size=ranks.local_size,
        node_rank=ranks.node_rank,
        hosts=hosts,
        master_addr=hosts[0],
        port=port_for_job(job_id),
        job_id=job_id,
    )


def _read_ranks(env: Mapping[str, str], names: tuple[str, str, str, str]) -> tuple[int, int, int, int]:
    rank_name, size_name, local_name, local_size_name = names
    rank, size = int_var(env, rank_name), int_var(env, size_name, minimum=1)
    local, local_size = int_var(env, local_name), int_var(env, local_size_name, minimum=1)
    check_rank(rank_name, rank, size_name, size)
    check_rank(local_name, local, local_size_name, local_size)
    if local_size > size:
        raise LaunchError(
            f"{local_size_name} must not exceed {size_name}. "
            f"Received: {local_size_name}={local_size}, {size_name}={size}"
        )
    return rank, size, local, local_size


def _horovodrun_ranks(env: Mapping[str, str]) -> _Ranks:
    names = ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE")
    rank, size, local, local_size = _read_ranks(env, names)
    node = int_var(env, "HOROVOD_CROSS_RANK") if "HOROVOD_CROSS_RANK" in env else rank // local_size
    return _Ranks(rank, size, local, local_size, node)


def _ompi_ranks(env: Mapping[str, str]) -> _Ranks:
    """OMPI_COMM_WORLD_NODE_RANK is *not* the node index (it is the rank on the node across all
    jobs, e.g. after MPI_Comm_spawn), so the node index assumes mpirun's default by-slot mapping."""
    names = (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    )
    rank, size, local, local_size = _read_ranks(env, names)
    return _Ranks(rank, size, local, local_size, rank // local_size)


def _pmi_ranks(env: Mapping[str, str]) -> _Ranks:
    """MPICH's Hydra exports MPI_LOCALRANKID/MPI_LOCALNRANKS, Cray's PMI PMI_LOCAL_RANK/_SIZE.

    Without either the local rank is unknown, and guessing it would put processes on the wrong GPU.
    """
    local_name = first_var(env, ("MPI_LOCALRANKID", "PMI_LOCAL_RANK"))
    local_size_name = first_var(env, ("MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"))
    if local_name is None or local_size_name is None:
        raise LaunchError(
            "PMI_RANK is set but not the rank on this node (MPI_LOCALRANKID/MPI_LOCALNRANKS or "
            f"PMI_LOCAL_RANK/PMI_LOCAL_SIZE). Received: PMI_RANK={env['PMI_RANK']!r}, "
            f"PMI_SIZE={env.get('PMI_SIZE')!r}. Hint: start with mpiexec (Hydra), srun or horovodrun"
        )
    rank, size, local, local_size = _read_ranks(env, ("PMI_RANK", "PMI_SIZE", local_name, local_size_name))
    return _Ranks(rank, size, local, local_size, rank // local_size)


def _mpi_hosts(env: Mapping[str, str], ranks: _Ranks) -> tuple[str, ...]:
    hostname = env.get("HOROVOD_HOSTNAME", "").strip()
    known = hostname if hostname and ranks.local_size == ranks.size else UNKNOWN_HOST
    return (known,) * ranks.size


def _pmi_from_srun(env: Mapping[str, str]) -> bool:
    """srun --mpi=pmi2 exports PMI_RANK/PMI_SIZE to Slurm tasks: then Slurm's fuller view wins.

    Decided on the sizes, which all ranks share, so every rank takes the same branch.
    """
    if "PMI_RANK" not in env or "HOROVOD_RANK" in env or "OMPI_COMM_WORLD_RANK" in env:
        return False
    if "SLURM_PROCID" not in env or not in_task_step(env):
        return False
    world_name = first_var(env, TASK_COUNT_VARS)
    return world_name is not None and env[world_name].strip() == env.get("PMI_SIZE", "").strip()


def from_mpi_launcher(env: Mapping[str, str]) -> ClusterEnv | None:
    """`from_horovod`, except for the PMI_* that `srun --mpi=pmi2` exports: Slurm describes those."""
    return None if _pmi_from_srun(env) else from_horovod(env)
