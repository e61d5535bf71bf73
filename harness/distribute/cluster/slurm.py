"""Slurm: a task started by srun (or the batch shell itself), from the SLURM_* variables.

TensorFlow's `SlurmClusterResolver` is deliberately not used: it sorts host names
alphabetically (node10 before node9), uses the fixed port 8888 (two jobs on one node collide)
and re-indexes GPUs that Slurm has already bound to a task.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.distribute.cluster.context import UNKNOWN_HOST, ClusterEnv
from harness.distribute.cluster.hostlist import expand_hostlist, expand_tasks_per_node
from harness.distribute.cluster.ports import port_for_job
from harness.distribute.cluster.variables import check_rank, first_value, first_var, int_var
from harness.errors import LaunchError

SLURM_MAX_NORMAL_STEP_ID = 0xFFFFFFF0
"""Slurm step ids above this are special steps (batch 0xfffffffb, extern, interactive, pending)."""

_SPECIAL_STEP_NAMES = frozenset({"batch", "extern", "interactive", "pending"})

TASK_COUNT_VARS = ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")


def from_slurm(env: Mapping[str, str]) -> ClusterEnv | None:
    """This task's place in a Slurm job step, or None outside Slurm tasks (no SLURM_PROCID).

    The batch script itself (sbatch, no srun) and an salloc interactive step also carry
    SLURM_PROCID=0, with SLURM_NTASKS counting the tasks srun *would* start. Waiting there for
    peers would hang, so they give a single-process view (source "slurm", job id kept). They
    are told apart by SLURM_STEP_ID: slurmstepd exports it only for normal steps (its batch
    step id 0xfffffffb, or 0xfffffffe before 20.11, is negative as a signed int and skipped).
    String or special values ("batch", 4294967291, ...) are treated the same way.

    Ranks are placed as srun places them: by SLURM_DISTRIBUTION's node level (block by
    default, cyclic, plane) over the step's node list in Slurm's order with the per-node task
    counts; the result is checked against this task's SLURM_NODEID, SLURM_LOCALID and
    SLURM_GTIDS, so an unexpected layout fails here rather than as a rendezvous hang.
    """
    if "SLURM_PROCID" not in env:
        return None
    job_id = first_value(env, ("SLURM_JOB_ID", "SLURM_JOBID"))
    if not in_task_step(env):
        return _slurm_job_shell(env, job_id)
    world_name = first_var(env, TASK_COUNT_VARS)
    if world_name is None:
        raise LaunchError("SLURM_PROCID is set but none of SLURM_STEP_NUM_TASKS, SLURM_NTASKS, SLURM_NPROCS")
    rank, world = int_var(env, "SLURM_PROCID"), int_var(env, world_name, minimum=1)
    check_rank("SLURM_PROCID", rank, world_name, world)
    nodes = _slurm_nodes(env)
    counts = _slurm_tasks_per_node(env, nodes, world_name, world)
    layout = _slurm_layout(env, counts)
    node = layout[rank]
    on_node = [r for r, n in enumerate(layout) if n == node]
    _check_against_slurm(env, rank, node, on_node)
    hosts = tuple(nodes[n] for n in layout)
    step = first_value(env, ("SLURM_STEP_ID", "SLURM_STEPID"))
    return ClusterEnv(
        source="slurm",
        rank=rank,
        world_size=world,
        local_rank=on_node.index(rank),
        local_world_size=len(on_node),
        node_rank=node,
        hosts=hosts,
        master_addr=hosts[0],
        port=port_for_job(job_id, step),
        job_id=job_id,
    )


def in_task_step(env: Mapping[str, str]) -> bool:
    name = first_var(env, ("SLURM_STEP_ID", "SLURM_STEPID"))
    if name is None:
        return False
    step = env[name].strip()
    if step.lower() in _SPECIAL_STEP_NAMES:
        return False
    return not step.isdigit() or int(step) <= SLURM_MAX_NORMAL_STEP_ID


def _slurm_job_shell(env: Mapping[str, str], job_id: str | None) -> ClusterEnv:
    host = env.get("SLURMD_NODENAME") or UNKNOWN_HOST
    return ClusterEnv("slurm", 0, 1, 0, 1, 0, (host,), host, port_for_job(job_id, "batch"), job_id)


_NODELIST_VARS = (
    ("SLURM_STEP_NODELIST", "SLURM_STEP_NUM_NODES"),
    ("SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES"),
    ("SLURM_NODELIST", "SLURM_NNODES"),
)


def _slurm_nodes(env: Mapping[str, str]) -> list[str]:
    """The step's nodes in Slurm's order; the job's list only if srun did not export the step's."""
    name = first_var(env, [list_var for list_var, _ in _NODELIST_VARS])
    if name is None:
        raise LaunchError("SLURM_PROCID is set but none of SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, SLURM_NODELIST")
    try:
        nodes = expand_hostlist(env[name])
    except LaunchError as err:
        raise LaunchError(f"{name}={env[name]!r}: {err}") from err
    count_name = dict(_NODELIST_VARS)[name]
    if count_name in env and int_var(env, count_name) != len(nodes):
        raise LaunchError(
            f"{count_name} does not match {name}. "
            f"Received: {count_name}={env[count_name]!r}, {name}={env[name]!r} ({len(nodes)} nodes)"
        )
    return nodes


def _slurm_tasks_per_node(env: Mapping[str, str], nodes: list[str], world_name: str, world: int) -> list[int]:
    name = first_var(env, ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"))
    if name is None:
        if world % len(nodes):
            raise LaunchError(
                f"SLURM_STEP_TASKS_PER_NODE is not set and {world_name}={world} is not a multiple "
                f"of the {len(nodes)} nodes"
            )
        return [world // len(nodes)] * len(nodes)
    try:
        counts = expand_tasks_per_node(env[name])
    except LaunchError as err:
        raise LaunchError(f"{name}={env[name]!r}: {err}") from err
    if len(counts) != len(nodes):
        raise LaunchError(
            f"{name} lists {len(counts)} nodes but the node list has {len(nodes)}. "
            f"Received: {name}={env[name]!r}, nodes={','.join(nodes)}"
        )
    if sum(counts) != world:
        raise LaunchError(
            f"{name} must add up to {world_name}. Received: {name}={env[name]!r} (sum {sum(counts)}), "
            f"{world_name}={world}"
        )
    return counts


def _slurm_layout(env: Mapping[str, str], counts: list[int]) -> list[int]:
    """Node index of every rank, dealt the way srun deals tasks to nodes."""
    chunk = _distribution_chunk(env)
    return _deal(counts, chunk if chunk else max(counts))


def _distribution_chunk(env: Mapping[str, str]) -> int | None:
    """Tasks given to a node per turn: None for block (all at once), 1 for cyclic, N for plane=N."""
    raw = env.get("SLURM_DISTRIBUTION", "")
    kind = raw.split(",")[0].split(":")[0].strip().lower()
    if kind in ("", "block", "*", "unknown"):
        return None
    if kind == "cyclic":
        return 1
    if kind.startswith("plane"):
        size = kind.partition("=")[2] or env.get("SLURM_DIST_PLANESIZE", "")
        if size.strip().isdigit() and int(size) > 0:
            return int(size)
        raise LaunchError(
            f"plane distribution without a plane size. Received: SLURM_DISTRIBUTION={raw!r}, "
            f"SLURM_DIST_PLANESIZE={env.get('SLURM_DIST_PLANESIZE')!r}"
        )
    raise LaunchError(
        f"SLURM_DISTRIBUTION must be block, cyclic or plane at node level to place ranks on hosts. "
        f"Received: SLURM_DISTRIBUTION={raw!r}. Hint: drop --distribution or use srun --distribution=block"
    )


def _deal(counts: list[int], chunk: int) -> list[int]:
    remaining = list(counts)
    layout: list[int] = []
    while any(remaining):
        for node, left in enumerate(remaining):
            take = min(chunk, left)
            layout.extend([node] * take)
            remaining[node] -= take
    return layout


def _check_against_slurm(env: Mapping[str, str], rank: int, node: int, on_node: list[int]) -> None:
    """Slurm tells each task its node, local id and the node's ranks: they must match the layout."""
    expected = {
        "SLURM_NODEID": str(node),
        "SLURM_LOCALID": str(on_node.index(rank)),
        "SLURM_GTIDS": ",".join(map(str, on_node)),
    }
    wrong = {name: env[name] for name, value in expected.items() if name in env and env[name].replace(" ", "") != value}
    if wrong:
        told = ", ".join(f"{name}={value!r}" for name, value in wrong.items())
        wanted = ", ".join(f"{name}={expected[name]!r}" for name in wrong)
        raise LaunchError(
            f"Slurm placed SLURM_PROCID={rank} differently than its node list and tasks per node imply "
            f"(SLURM_DISTRIBUTION={env.get('SLURM_DISTRIBUTION', 'block')!r}): expected {wanted}, "
            f"received {told}. Hint: launch with srun --distribution=block"
        )
