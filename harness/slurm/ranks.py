"""What every task of a job will see: the Slurm (or local) environment, parsed by the job's own code.

Used by the dry run, which synthesizes each task's variables and reads them with the same
parsers (`harness.distribute.cluster`, which does not import TensorFlow) as the job's tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import SlurmConfig
from harness.distribute.cluster import ClusterEnv, from_slurm, from_submitit_local, single
from harness.errors import ConfigError


@dataclass(frozen=True)
class RankView:
    rank: int
    node: str
    env: ClusterEnv


PLACEHOLDER_JOB_ID = "4242"


def placeholder_nodes(count: int) -> list[str]:
    return [f"node{index + 1}" for index in range(count)]


def task_environment(rank: int, nodes: list[str], tasks_per_node: int, job_id: str) -> dict[str, str]:
    """The SLURM_* variables srun gives task `rank` of the job's step (block distribution)."""
    node = rank // tasks_per_node
    on_node = range(node * tasks_per_node, (node + 1) * tasks_per_node)
    nodelist = ",".join(nodes)
    return {
        "SLURM_JOB_ID": job_id,
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_STEP_NUM_TASKS": str(len(nodes) * tasks_per_node),
        "SLURM_STEP_NODELIST": nodelist,
        "SLURM_STEP_NUM_NODES": str(len(nodes)),
        "SLURM_STEP_TASKS_PER_NODE": f"{tasks_per_node}(x{len(nodes)})",
        "SLURM_DISTRIBUTION": "block",
        "SLURM_NODEID": str(node),
        "SLURM_LOCALID": str(rank - on_node.start),
        "SLURM_GTIDS": ",".join(map(str, on_node)),
        "SLURMD_NODENAME": nodes[node],
    }


def local_task_environment(rank: int, world: int, job_id: str) -> dict[str, str]:
    """The SUBMITIT_LOCAL_* variables submitit's local executor gives task `rank`."""
    return {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": job_id,
        "SUBMITIT_LOCAL_GLOBALID": str(rank),
        "SUBMITIT_LOCAL_LOCALID": str(rank),
        "SUBMITIT_LOCAL_NTASKS": str(world),
    }


def rank_views(slurm: SlurmConfig, job_id: str = PLACEHOLDER_JOB_ID) -> list[RankView]:
    """What `detect` sees in every task, parsed by the same code the job runs."""
    nodes = placeholder_nodes(slurm.nodes)
    tasks_per_node = slurm.tasks_per_node or 1
    views = []
    for rank in range(slurm.nodes * tasks_per_node):
        env = from_slurm(task_environment(rank, nodes, tasks_per_node, job_id))
        if env is None:  # pragma: no cover - the environment above always has SLURM_PROCID
            raise ConfigError("internal: the synthesized Slurm task environment was not recognised")
        views.append(RankView(rank, nodes[env.node_rank], env))
    return views


def local_rank_views(slurm: SlurmConfig, job_id: str = PLACEHOLDER_JOB_ID) -> list[RankView]:
    """Under the local executor every task is a process on this machine, which reads its place
    from submitit's SUBMITIT_LOCAL_* variables as the harness launcher's workers read theirs."""
    world = slurm.tasks_per_node or 1
    if world == 1:
        return [RankView(0, "this machine", single())]
    views = []
    for rank in range(world):
        env = from_submitit_local(local_task_environment(rank, world, job_id))
        if env is None:  # pragma: no cover - the environment above always has several tasks
            raise ConfigError("internal: the synthesized local executor environment was not recognised")
        views.append(RankView(rank, "this machine", env))
    return views


def format_rank_views(views: list[RankView], strategy: str, gpus_per_node: int, local: bool = False) -> str:
    """One line per rank; long jobs are cut to the first and last ranks."""
    world = len(views)
    placeholders = (
        "ports depend on the job id" if local else "node names and ports are placeholders until Slurm allocates the job"
    )
    lines = [f"per-rank environment ({world} task{'s' if world > 1 else ''}, strategy {strategy}; {placeholders}):"]
    shown = views if world <= 8 else [*views[:4], *views[-2:]]
    for index, view in enumerate(shown):
        if world > 8 and index == 4:
            lines.append(f"  ... {world - 6} more ranks ...")
        lines.append("  " + _rank_line(view, gpus_per_node))
    return "\n".join(lines)


def _rank_line(view: RankView, gpus_per_node: int) -> str:
    env = view.env
    gpu = f", GPU {env.local_rank}" if gpus_per_node else ", CPU"
    role = " (chief: writes the run directory)" if env.is_chief else ""
    address = f", worker address {env.worker_addresses()[env.rank]}" if env.is_distributed else ""
    return (
        f"rank {env.rank}: {view.node} (node {env.node_rank}), local rank {env.local_rank} of "
        f"{env.local_world_size}{gpu}, world size {env.world_size}{address}{role}"
    )
