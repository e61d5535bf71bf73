"""Where this process sits in a parallel job, read from the environment that started it.

Every way of starting workers (Slurm's srun, a TF_CONFIG, horovodrun or mpirun, our own local
launcher) describes the job in its own environment variables. Each is parsed here by a pure
function over a mapping, so parsers are tested with tables of real values and never read
`os.environ` themselves; `detect` picks one. The result, `ClusterEnv`, is all a strategy needs.

TensorFlow's `SlurmClusterResolver` is deliberately not used (docs/facts.md): it sorts host
names alphabetically (node10 before node9), uses the fixed port 8888 (two jobs on one node
collide) and re-indexes GPUs that Slurm has already bound to a task.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import LaunchError

UNKNOWN_HOST = "localhost"
"""Host marker used where the environment does not say where a rank runs (see `from_horovod`)."""

PORT_SLOT = 32
"""Ports reserved per job on each node by `port_for_job`: room for this many processes per node."""

STEPS_PER_JOB = 4
"""Job steps that get their own port slot before a step shares one with a later job id."""

MAX_HOSTS_PER_RANGE = 64 * 1024
"""Same cap as Slurm's hostlist.c (MAX_RANGE): a typo like n[1-9999999] must not eat memory."""

SLURM_MAX_NORMAL_STEP_ID = 0xFFFFFFF0
"""Slurm step ids above this are special steps (batch 0xfffffffb, extern, interactive, pending)."""

_SPECIAL_STEP_NAMES = frozenset({"batch", "extern", "interactive", "pending"})


@dataclass(frozen=True)
class ClusterEnv:
    """One process's view of the job: its ranks, every rank's host, and the rendezvous port.

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


# --------------------------------------------------------------------------- Slurm syntax


def expand_hostlist(spec: str) -> list[str]:
    """Expand Slurm hostlist syntax in Slurm's own order, like `scontrol show hostnames`.

    Rank placement follows this order, so it must not be sorted: `n[9-10]` is n9, n10.
    Numbers keep the width of the range's lower bound (`node[001-003]`). With several bracket
    groups the last one varies fastest (`c[1-2]-ib[1-2]` is c1-ib1 c1-ib2 c2-ib1 c2-ib2); with
    three or more, the order of Slurm 22.05's recursive expansion is reproduced. Like Slurm,
    text after the last bracket is rejected; unlike Slurm, so is an unclosed bracket (Slurm
    would silently read "n[1-" as the host name "n[1-]").
    """
    hosts: list[str] = []
    for token in _split_hostlist(spec):
        hosts.extend(_expand_token(token, spec))
    return hosts


def _hostlist_error(spec: str, why: str) -> LaunchError:
    return LaunchError(f"malformed Slurm hostlist {spec!r}: {why}")


def _split_hostlist(spec: str) -> list[str]:
    """Split on commas and whitespace outside brackets; empty items are skipped, as Slurm does."""
    tokens, current, inside = [], "", False
    for char in spec:
        if char == "[":
            if inside:
                raise _hostlist_error(spec, "nested '['")
            inside = True
        elif char == "]":
            if not inside:
                raise _hostlist_error(spec, "']' without a matching '['")
            inside = False
        if char in ", \t\n" and not inside:
            tokens.append(current)
            current = ""
        else:
            current += char
    if inside:
        raise _hostlist_error(spec, "'[' is never closed")
    tokens.append(current)
    return [token for token in tokens if token]


def _expand_token(token: str, spec: str) -> list[str]:
    open_at = token.rfind("[")
    if open_at < 0:
        return [token]
    close_at = token.index("]", open_at)
    if close_at != len(token) - 1:
        raise _hostlist_error(spec, f"text after the last ']' in {token!r}")
    numbers = _expand_ranges(token[open_at + 1 : close_at], spec)
    return _expand_prefix(token[:open_at], numbers, spec)


def _expand_prefix(prefix: str, numbers: list[str], spec: str) -> list[str]:
    """Slurm's _push_range_list: the prefix's last bracket is the outer loop, recursively."""
    open_at = prefix.rfind("[")
    if open_at < 0:
        return [prefix + number for number in numbers]
    close_at = prefix.index("]", open_at)
    head, tail = prefix[:open_at], prefix[close_at + 1 :]
    hosts = []
    for value in _expand_ranges(prefix[open_at + 1 : close_at], spec):
        hosts.extend(_expand_prefix(head + value + tail, numbers, spec))
    return hosts


_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def _expand_ranges(text: str, spec: str) -> list[str]:
    """ "1-3,10" -> ["1", "2", "3", "10"]; zero padding follows the lower bound, as in Slurm."""
    values: list[str] = []
    for item in text.split(","):
        match = _RANGE.fullmatch(item)
        if not match:
            raise _hostlist_error(spec, f"{item!r} is not a number or a range lo-hi")
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high:
            raise _hostlist_error(spec, f"range {item!r} runs backwards")
        if high - low + 1 > MAX_HOSTS_PER_RANGE:
            raise _hostlist_error(spec, f"range {item!r} has more than {MAX_HOSTS_PER_RANGE} hosts")
        width = len(match[1])
        values.extend(f"{number:0{width}d}" for number in range(low, high + 1))
    return values


_TASKS_ITEM = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def expand_tasks_per_node(spec: str) -> list[int]:
    """SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE: "2(x3),1" -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for item in spec.split(","):
        match = _TASKS_ITEM.fullmatch(item.strip())
        if not match or match[2] == "0":
            raise LaunchError(f"malformed Slurm tasks-per-node list {spec!r}: {item!r} is not N or N(xM)")
        counts.extend([int(match[1])] * int(match[2] or 1))
    return counts


# --------------------------------------------------------------------------- ports


def port_for_job(job_id: str | None, step_id: str | None = None, base: int = 20000, span: int = 20000) -> int:
    """A rendezvous base port that every process of a job step computes alike, from its ids.

    [base, base+span) is cut into slots of PORT_SLOT ports; a job uses port .. port+k-1 for k
    processes on a node, so each slot ends inside the range. The slot is
    (STEPS_PER_JOB * job + step) mod (span // PORT_SLOT), which gives this collision bound for
    two job steps sharing a node, each with at most PORT_SLOT processes there:
    - never, if their numeric job ids differ by less than span // (PORT_SLOT * STEPS_PER_JOB)
      (156 with the defaults) and both step ids are below STEPS_PER_JOB (steps 0-3 of a job
      never collide with each other either): jobs submitted close together are safe;
    - otherwise only if those keys agree modulo span // PORT_SLOT: about 1 in 625 for
      unrelated jobs with the defaults.
    Non-numeric ids are hashed with BLAKE2 (not `hash()`, which differs between processes).
    No job id (not under a scheduler) gives `base`.
    """
    if base < 1024 or base + span > 65536 or span < PORT_SLOT:
        raise ValueError(
            f"port range must lie in [1024, 65536) and hold at least {PORT_SLOT} ports. "
            f"Received: base={base}, span={span}"
        )
    key = STEPS_PER_JOB * _id_number(job_id) + _id_number(step_id)
    return base + (key % (span // PORT_SLOT)) * PORT_SLOT


def _id_number(value: str | None) -> int:
    if value is None:
        return 0
    text = value.strip()
    if text.isdigit():
        return int(text)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# --------------------------------------------------------------------------- variable helpers


def _int_var(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    value = env.get(name)
    if value is None:
        raise LaunchError(f"{name} is not set, but the other variables of its launcher are")
    try:
        number = int(value.strip())
    except ValueError:
        raise LaunchError(f"{name} must be an integer. Received: {name}={value!r}") from None
    if number < minimum:
        raise LaunchError(f"{name} must be at least {minimum}. Received: {name}={value!r}")
    return number


def _first_var(env: Mapping[str, str], names: Sequence[str]) -> str | None:
    """The first of several equivalent variables that is set (newest name first)."""
    return next((name for name in names if env.get(name, "").strip()), None)


def _first_value(env: Mapping[str, str], names: Sequence[str]) -> str | None:
    name = _first_var(env, names)
    return env[name].strip() if name else None


def _check_rank(rank_name: str, rank: int, size_name: str, size: int) -> None:
    if rank >= size:
        raise LaunchError(
            f"{rank_name} must be smaller than {size_name}. Received: {rank_name}={rank}, {size_name}={size}"
        )


# --------------------------------------------------------------------------- Slurm


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
    job_id = _first_value(env, ("SLURM_JOB_ID", "SLURM_JOBID"))
    if not _in_task_step(env):
        return _slurm_job_shell(env, job_id)
    world_name = _first_var(env, ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"))
    if world_name is None:
        raise LaunchError("SLURM_PROCID is set but none of SLURM_STEP_NUM_TASKS, SLURM_NTASKS, SLURM_NPROCS")
    rank, world = _int_var(env, "SLURM_PROCID"), _int_var(env, world_name, minimum=1)
    _check_rank("SLURM_PROCID", rank, world_name, world)
    nodes = _slurm_nodes(env)
    counts = _slurm_tasks_per_node(env, nodes, world_name, world)
    layout = _slurm_layout(env, counts)
    node = layout[rank]
    on_node = [r for r, n in enumerate(layout) if n == node]
    _check_against_slurm(env, rank, node, on_node)
    hosts = tuple(nodes[n] for n in layout)
    step = _first_value(env, ("SLURM_STEP_ID", "SLURM_STEPID"))
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


def _in_task_step(env: Mapping[str, str]) -> bool:
    name = _first_var(env, ("SLURM_STEP_ID", "SLURM_STEPID"))
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
    name = _first_var(env, [list_var for list_var, _ in _NODELIST_VARS])
    if name is None:
        raise LaunchError("SLURM_PROCID is set but none of SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, SLURM_NODELIST")
    try:
        nodes = expand_hostlist(env[name])
    except LaunchError as err:
        raise LaunchError(f"{name}={env[name]!r}: {err}") from err
    count_name = dict(_NODELIST_VARS)[name]
    if count_name in env and _int_var(env, count_name) != len(nodes):
        raise LaunchError(
            f"{count_name} does not match {name}. "
            f"Received: {count_name}={env[count_name]!r}, {name}={env[name]!r} ({len(nodes)} nodes)"
        )
    return nodes


def _slurm_tasks_per_node(env: Mapping[str, str], nodes: list[str], world_name: str, world: int) -> list[int]:
    name = _first_var(env, ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"))
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


# --------------------------------------------------------------------------- TF_CONFIG


def from_tf_config(env: Mapping[str, str]) -> ClusterEnv | None:
    """The cluster a TF_CONFIG describes; None if TF_CONFIG is unset or has no cluster.

    A "chief" task is rank 0 and workers follow in order, matching how MultiWorkerMirrored
    numbers them. The given addresses are kept as they are (`ClusterEnv.addresses`), so
    `tf_config()` re-states the same cluster with every task typed "worker".
    """
    raw = env.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    config = _load_tf_config(raw)
    cluster = config.get("cluster") or {}
    if not cluster:
        return None
    addresses = _tf_addresses(cluster, raw)
    rank = _tf_rank(config.get("task"), cluster, raw)
    hosts = tuple(_split_address(address, raw)[0] for address in addresses)
    local_rank, local_world, node_rank = _local_view(hosts, rank)
    return ClusterEnv(
        source="tf_config",
        rank=rank,
        world_size=len(addresses),
        local_rank=local_rank,
        local_world_size=local_world,
        node_rank=node_rank,
        hosts=hosts,
        master_addr=hosts[0],
        port=_split_address(addresses[0], raw)[1],
        job_id=None,
        addresses=tuple(addresses),
    )


def _load_tf_config(raw: str) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise LaunchError(
            f"TF_CONFIG is not valid JSON ({err.msg} at char {err.pos}). Received: TF_CONFIG={raw!r}"
        ) from None
    if not isinstance(config, dict):
        raise LaunchError(f"TF_CONFIG must be a JSON object. Received: TF_CONFIG={raw!r}")
    return config


def _tf_addresses(cluster: Any, raw: str) -> list[str]:
    if not isinstance(cluster, dict) or set(cluster) - {"chief", "worker"}:
        kinds = sorted(cluster) if isinstance(cluster, dict) else cluster
        raise LaunchError(
            f"TF_CONFIG cluster may only have 'chief' and 'worker' tasks (MultiWorkerMirroredStrategy). "
            f"Received: {kinds} in TF_CONFIG={raw!r}"
        )
    chief, workers = cluster.get("chief", []), cluster.get("worker", [])
    if not _is_str_list(chief) or not _is_str_list(workers) or len(chief) > 1:
        raise LaunchError(
            f"TF_CONFIG cluster needs lists of 'host:port' strings and at most one chief. Received: TF_CONFIG={raw!r}"
        )
    addresses = [*chief, *workers]
    if not addresses or len(set(addresses)) != len(addresses):
        raise LaunchError(f"TF_CONFIG cluster must list each address once. Received: TF_CONFIG={raw!r}")
    return addresses


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _tf_rank(task: Any, cluster: dict[str, list[str]], raw: str) -> int:
    if not isinstance(task, dict) or "type" not in task:
        raise LaunchError(
            f"TF_CONFIG has a cluster but no task {{'type': ..., 'index': ...}}. Received: TF_CONFIG={raw!r}"
        )
    kind, index = task["type"], task.get("index", 0)
    tasks = cluster.get(kind) if kind in ("chief", "worker") else None
    if tasks is None or not isinstance(index, int) or not 0 <= index < len(tasks):
        raise LaunchError(
            f"TF_CONFIG task must name a 'chief' or 'worker' listed in its cluster. "
            f"Received: task={task!r} in TF_CONFIG={raw!r}"
        )
    return index if kind == "chief" else len(cluster.get("chief", [])) + index


def _split_address(address: str, raw: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise LaunchError(f"TF_CONFIG addresses must be 'host:port'. Received: {address!r} in TF_CONFIG={raw!r}")
    return host, int(port)


def _local_view(hosts: tuple[str, ...], rank: int) -> tuple[int, int, int]:
    """(local rank, processes on this host, node index by first appearance) from hosts per rank."""
    same = [r for r, host in enumerate(hosts) if host == hosts[rank]]
    return same.index(rank), len(same), list(dict.fromkeys(hosts)).index(hosts[rank])


# --------------------------------------------------------------------------- horovodrun / mpirun


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
    rank, size = _int_var(env, rank_name), _int_var(env, size_name, minimum=1)
    local, local_size = _int_var(env, local_name), _int_var(env, local_size_name, minimum=1)
    _check_rank(rank_name, rank, size_name, size)
    _check_rank(local_name, local, local_size_name, local_size)
    if local_size > size:
        raise LaunchError(
            f"{local_size_name} must not exceed {size_name}. "
            f"Received: {local_size_name}={local_size}, {size_name}={size}"
        )
    return rank, size, local, local_size


def _horovodrun_ranks(env: Mapping[str, str]) -> _Ranks:
    names = ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE")
    rank, size, local, local_size = _read_ranks(env, names)
    node = _int_var(env, "HOROVOD_CROSS_RANK") if "HOROVOD_CROSS_RANK" in env else rank // local_size
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
    local_name = _first_var(env, ("MPI_LOCALRANKID", "PMI_LOCAL_RANK"))
    local_size_name = _first_var(env, ("MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"))
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
    if "SLURM_PROCID" not in env or not _in_task_step(env):
        return False
    world_name = _first_var(env, ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"))
    return world_name is not None and env[world_name].strip() == env.get("PMI_SIZE", "").strip()


# --------------------------------------------------------------------------- our launcher


def from_launcher(env: Mapping[str, str]) -> ClusterEnv | None:
    """Workers started by harness's local launcher: all on one host, ports base .. base+N-1."""
    if "HARNESS_RANK" not in env:
        return None
    rank, world = _int_var(env, "HARNESS_RANK"), _int_var(env, "HARNESS_WORLD_SIZE", minimum=1)
    _check_rank("HARNESS_RANK", rank, "HARNESS_WORLD_SIZE", world)
    local = _int_var(env, "HARNESS_LOCAL_RANK") if "HARNESS_LOCAL_RANK" in env else rank
    if local != rank:
        raise LaunchError(
            f"HARNESS_LOCAL_RANK must equal HARNESS_RANK (all workers share one host). "
            f"Received: HARNESS_LOCAL_RANK={local}, HARNESS_RANK={rank}"
        )
    master = env.get("HARNESS_MASTER_ADDR", "").strip() or "127.0.0.1"
    port = _int_var(env, "HARNESS_PORT", minimum=1)
    return ClusterEnv("launcher", rank, world, rank, world, 0, (master,) * world, master, port, None)


def launcher_env(rank: int, world_size: int, port: int, master_addr: str = "127.0.0.1") -> dict[str, str]:
    """The variables `from_launcher` reads, for the launcher to set on each worker."""
    if not 0 <= rank < world_size or not 1 <= port <= 65535 - world_size + 1:
        raise ValueError(
            f"need 0 <= rank < world_size and ports port..port+world_size-1 valid. "
            f"Received: rank={rank}, world_size={world_size}, port={port}"
        )
    return {
        "HARNESS_RANK": str(rank),
        "HARNESS_WORLD_SIZE": str(world_size),
        "HARNESS_LOCAL_RANK": str(rank),
        "HARNESS_MASTER_ADDR": master_addr,
        "HARNESS_PORT": str(port),
    }


# --------------------------------------------------------------------------- choosing one


def single() -> ClusterEnv:
    """One process, not started by any launcher."""
    return ClusterEnv("single", 0, 1, 0, 1, 0, (UNKNOWN_HOST,), UNKNOWN_HOST, port_for_job(None), None)


def detect(env: Mapping[str, str]) -> ClusterEnv:
    """The first environment that describes this process: launcher > horovod/mpirun > tf_config
    > slurm > single.

    The most specific launcher wins. Our launcher run inside a Slurm allocation sets HARNESS_*
    on top of the allocation's SLURM_* variables, which describe the allocation, not the
    processes it started. Likewise mpirun inside Slurm starts its ranks through one srun task
    per node, so SLURM_PROCID counts nodes while OMPI_* count the ranks it started. An explicit
    TF_CONFIG is a deliberate choice of the user. Slurm's variables come last because they
    leak into everything started inside an allocation. One exception: PMI_* exported by
    `srun --mpi=pmi2` itself describe the Slurm step, and Slurm also knows the hosts.
    """
    parsers = (from_launcher, _from_mpi_launcher, from_tf_config, from_slurm)
    for parse in parsers:
        found = parse(env)
        if found is not None:
            return found
    return single()


def _from_mpi_launcher(env: Mapping[str, str]) -> ClusterEnv | None:
    return None if _pmi_from_srun(env) else from_horovod(env)


# --------------------------------------------------------------------------- GPUs


def visible_gpu_index(local_rank: int, env: Mapping[str, str], gpus_visible: int) -> int | None:
    """Which of the GPUs this process sees it should use, or None without GPUs.

    One visible device means Slurm (or the user) already bound a GPU to this task: use it, at
    index 0, whatever the local rank (re-indexing it by local rank is the SlurmClusterResolver
    bug). Several visible devices are shared by the node's processes: take the local rank's.
    CUDA ignores entries from the first invalid one on ("-1", "NoDevFiles"), and so do we.
    """
    if gpus_visible <= 0:
        return None
    raw = env.get("CUDA_VISIBLE_DEVICES")
    listed = gpus_visible if raw is None else min(len(_cuda_devices(raw)), gpus_visible)
    if listed <= 1:
        return 0 if listed else None
    if local_rank < listed:
        return local_rank
    raise LaunchError(
        f"local rank {local_rank} has no GPU of its own: this process sees {listed} GPUs "
        f"(CUDA_VISIBLE_DEVICES={raw!r}). Hint: start at most one process per GPU, or let Slurm bind "
        "one GPU per task (srun --gpus-per-task=1)"
    )


def _cuda_devices(raw: str) -> list[str]:
    devices = []
    for entry in (item.strip() for item in raw.split(",")):
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        devices.append(entry)
    return devices
