"""The job context: one process's place in a parallel job, read once from its environment.

Every part that needs to know where it runs (the strategy, the training entry point, the run
directory, the Slurm task wrapper) is handed a `ClusterEnv`, built once per process by
`detect`, rather than reading `SLURM_*` or `HARNESS_*` variables itself.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.distribute.cluster.ports import PORT_SLOT
from harness.errors import LaunchError

UNKNOWN_HOST = "localhost"
"""Host marker used where the environment does not say where a rank runs (see `from_horovod`)."""


@dataclass(frozen=True)
class ClusterEnv:
    """One process's view of the job: its ranks, every rank's host, the rendezvous port, and the
    job around them (scheduler, job id, node, requeues).

    Every process of a job derives the same `hosts`, `port` and `worker_addresses()` from its
    own environment, so they agree on the cluster spec without talking to each other first.
    """

    source: str  # "single" | "slurm" | "tf_config" | "horovod" | "launcher"
    rank: int  # global process rank
    world_size: int  # number of processes
    local_rank: int  # rank among processes on this node
    local_world_size: int  # processes on this node
    node_rank: int
    hosts: tuple[str, ...]  # one entry PER RANK: the host each rank runs on, in rank order
    master_addr: str  # host of rank 0
    port: int  # base port for this job's rendezvous
    job_id: str | None
    addresses: tuple[str, ...] = ()
    """Explicit "host:port" per rank when the environment fixes them (TF_CONFIG); empty otherwise."""

    # The job around the ranks: filled in by `detect` from the same environment, so that no other
    # module reads it again. Parsers of one launcher leave the defaults.
    executor: str | None = None
    """SUBMITIT_EXECUTOR inside a submitted job: "slurm" or "local"; None otherwise."""
    task_rank: int = 0
    """This task's number as the scheduler counts tasks (SLURM_PROCID, SUBMITIT_LOCAL_GLOBALID).

    The same as `rank` in every task submitit starts; kept apart because the batch shell also
    carries SLURM_PROCID, and the task wrapper must tell rank 0 from the others by it."""
    task_count: int = 1
    """Tasks the scheduler started (SLURM_NTASKS, SUBMITIT_LOCAL_NTASKS)."""
    slurm_node: str | None = None
    """SLURMD_NODENAME: the Slurm node name, which tells apart nodes that share a host name."""
    restart_count: int = 0
    """SLURM_RESTART_COUNT: how many times Slurm requeued this job (preemption or time limit)."""
    cuda_visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as the process started with it (None: unset, every GPU visible)."""
    horovod_identity: bool = False
    """HOROVOD_RANK is set: horovodrun gave this process its identity and serves the rendezvous."""

    def __post_init__(self) -> None:
        _check_invariants(self)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_chief(self) -> bool:
        """Rank 0 writes checkpoints, metrics and reports."""
        return self.rank == 0

    def worker_addresses(self) -> list[str]:
        """Every rank's "host:port", in rank order; no two ranks of a job share a port on a host.

        Small jobs (up to PORT_SLOT ranks) use port + rank, so even node names that alias one
        machine never collide; larger ones use the rank's index among the ranks on its host.
        """
        if self.addresses:
            return list(self.addresses)
        return _derive_addresses(self.hosts, self.port)

    def tf_config(self) -> dict[str, Any]:
        """The TF_CONFIG for MultiWorkerMirroredStrategy: all ranks are workers, worker 0 is chief."""
        cluster = {"worker": self.worker_addresses()}
        return {"cluster": cluster, "task": {"type": "worker", "index": self.rank}}

    @property
    def under_slurm(self) -> bool:
        """A task of a job submitted to Slurm through submitit (not its local executor)."""
        return self.executor == "slurm"

    @property
    def node_name(self) -> str:
        """Where this process runs: the Slurm node name, else the host name."""
        return self.slurm_node or socket.gethostname()


def _check_invariants(env: ClusterEnv) -> None:
    """Catch an impossible view at construction, whoever built it, instead of a hang later."""
    problems = []
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        problems.append(f"rank={env.rank} must be in [0, world_size={env.world_size})")
    if not 0 <= env.local_rank < env.local_world_size <= max(env.world_size, 1):
        problems.append(
            f"local_rank={env.local_rank} must be in [0, local_world_size={env.local_world_size}) "
            f"and local_world_size at most world_size={env.world_size}"
        )
    if len(env.hosts) != env.world_size:
        problems.append(f"hosts must have one entry per rank ({env.world_size}). Received: {len(env.hosts)}")
    if not 1 <= env.port <= 65535:
        problems.append(f"port must be in [1, 65535]. Received: port={env.port}")
    if env.addresses and len(env.addresses) != env.world_size:
        problems.append(f"addresses must have one entry per rank. Received: {len(env.addresses)}")
    if problems:
        raise LaunchError(f"inconsistent cluster environment from {env.source}: " + "; ".join(problems))


def _derive_addresses(hosts: Sequence[str], port: int) -> list[str]:
    """Ports per rank: port + rank for jobs of up to PORT_SLOT ranks, else port + index on host.

    Node names that are aliases of one machine (several slurmd on one host, as in a test
    cluster) would collide with per-host offsets alone, and a job that small fits its slot.
    """
    if len(hosts) <= PORT_SLOT:
        return [f"{host}:{port + rank}" for rank, host in enumerate(hosts)]
    seen: dict[str, int] = {}
    addresses = []
    for host in hosts:
        index = seen.get(host, 0)
        seen[host] = index + 1
        if port + index > 65535:
            raise LaunchError(f"{index + 1} processes on {host} need ports up to {port + index}, above 65535")
        addresses.append(f"{host}:{port + index}")
    return addresses
