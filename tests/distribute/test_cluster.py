"""Cluster-environment parsing, tested with tables of the values real launchers set.

The Slurm tables copy what slurmstepd exports to a task (srun) and to the batch script
(sbatch): the batch script gets SLURM_PROCID=0 but no SLURM_STEP_ID. The last tests parse the
environments captured from real srun steps in slurm/examples.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest

from harness.distribute.cluster import (
    PORT_SLOT,
    ClusterEnv,
    detect,
    expand_hostlist,
    expand_tasks_per_node,
    from_horovod,
    from_launcher,
    from_slurm,
    from_submitit_local,
    from_tf_config,
    gpu_index,
    job_of,
    launcher_env,
    port_for_job,
    single,
    visible_gpu_index,
)
from harness.errors import LaunchError
from tests.conftest import ROOT

EXAMPLES = ROOT / "slurm" / "examples"

# --------------------------------------------------------------------------- hostlists


@pytest.mark.parametrize(
    ("spec", "hosts"),
    [
        ("n[1-3,10]", ["n1", "n2", "n3", "n10"]),
        ("gpu-a[01-02],gpu-b7", ["gpu-a01", "gpu-a02", "gpu-b7"]),
        ("node[001-003]", ["node001", "node002", "node003"]),
        ("node[9-10]", ["node9", "node10"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("c[1-2]-ib[1-2]", ["c1-ib1", "c1-ib2", "c2-ib1", "c2-ib2"]),
        ("node[1-2]-ib[3-4]", ["node1-ib3", "node1-ib4", "node2-ib3", "node2-ib4"]),
        # Slurm 22.05's recursion: the middle group is the outer loop, the last one the inner.
        (
            "a[1-2]b[3-4]c[5-6]",
            ["a1b3c5", "a1b3c6", "a2b3c5", "a2b3c6", "a1b4c5", "a1b4c6", "a2b4c5", "a2b4c6"],
        ),
        ("single", ["single"]),
        ("a,b,c", ["a", "b", "c"]),
        ("n[3,1]", ["n3", "n1"]),
        ("a, b\tc,,d", ["a", "b", "c", "d"]),
        ("", []),
    ],
)
def test_expand_hostlist(spec: str, hosts: list[str]) -> None:
    assert expand_hostlist(spec) == hosts


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("n[1-", "never closed"),
        ("n[3-1]", "backwards"),
        ("n[]", "not a number"),
        ("n[1,]", "not a number"),
        ("n[a-b]", "not a number"),
        ("n[1--2]", "not a number"),
        ("n[1-2]x", "after the last"),
        ("n1]", "without a matching"),
        ("n[[1]]", "nested"),
        ("n[0-99999]", "more than"),
    ],
)
def test_malformed_hostlist_names_the_spec(spec: str, why: str) -> None:
    with pytest.raises(LaunchError, match=why) as err:
        expand_hostlist(spec)
    assert repr(spec) in str(err.value)


@pytest.mark.parametrize(
    ("spec", "counts"),
    [("2(x3),1", [2, 2, 2, 1]), ("4", [4]), ("1(x2)", [1, 1]), ("3,1(x2),2", [3, 1, 1, 2])],
)
def test_expand_tasks_per_node(spec: str, counts: list[int]) -> None:
    assert expand_tasks_per_node(spec) == counts


@pytest.mark.parametrize("spec", ["", "2(x)", "2x3", "(x2)", "2(x0)", "a"])
def test_malformed_tasks_per_node(spec: str) -> None:
    with pytest.raises(LaunchError, match="tasks-per-node"):
        expand_tasks_per_node(spec)


# --------------------------------------------------------------------------- Slurm


def srun_task(rank: int, **overrides: str) -> dict[str, str]:
    """What `srun -N2 --ntasks-per-node=2` exports to task `rank` in job 4242 on gpu-a[01-02]."""
    node, local = divmod(rank, 2)
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOBID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_STEPID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(local),
        "SLURM_NODEID": str(node),
        "SLURM_GTIDS": f"{2 * node},{2 * node + 1}",
        "SLURM_NTASKS": "4",
        "SLURM_NPROCS": "4",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_NODELIST": "gpu-a[01-02]",
        "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        "SLURM_JOB_NODELIST": "gpu-a[01-02]",
        "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURMD_NODENAME": f"gpu-a0{node + 1}",
    }
    env.update(overrides)
    return env


@pytest.mark.parametrize(
    ("rank", "local_rank", "node_rank"),
    [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1)],
)
def test_slurm_two_nodes_two_tasks(rank: int, local_rank: int, node_rank: int) -> None:
    cluster = from_slurm(srun_task(rank))
    assert cluster is not None
    assert (cluster.source, cluster.rank, cluster.world_size) == ("slurm", rank, 4)
    assert (cluster.local_rank, cluster.local_world_size, cluster.node_rank) == (local_rank, 2, node_rank)
    assert cluster.hosts == ("gpu-a01", "gpu-a01", "gpu-a02", "gpu-a02")
    assert cluster.master_addr == "gpu-a01"
    assert cluster.job_id == "4242"
    assert cluster.port == port_for_job("4242", "0")
    assert cluster.is_distributed and cluster.is_chief == (rank == 0)


def test_slurm_ranks_agree_on_the_cluster_spec() -> None:
    views = [from_slurm(srun_task(rank)) for rank in range(4)]
    specs = {json.dumps(view.tf_config()["cluster"]) for view in views if view}
    assert len(specs) == 1


def test_slurm_keeps_node_order_not_alphabetical() -> None:
    """SlurmClusterResolver sorts node10 before node9; Slurm gives rank 0 to node9."""
    env = {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NODELIST": "node[9-10]",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
    }
    cluster = from_slurm(env)
    assert cluster is not None
    assert cluster.hosts == ("node9", "node10")
    assert cluster.master_addr == "node9"
    assert cluster.node_rank == 1 and cluster.local_rank == 0


def test_slurm_uneven_tasks_per_node_block() -> None:
    env = srun_task(
        5,
        SLURM_NTASKS="7",
        SLURM_STEP_NUM_TASKS="7",
        SLURM_STEP_NUM_NODES="3",
        SLURM_STEP_NODELIST="n[1-3]",
        SLURM_STEP_TASKS_PER_NODE="3,2,2",
        SLURM_NODEID="2",
        SLURM_LOCALID="0",
        SLURM_GTIDS="5,6",
    )
    cluster = from_slurm(env)
    assert cluster is not None
    assert cluster.hosts == ("n1",) * 3 + ("n2",) * 2 + ("n3",) * 2
    assert (cluster.node_rank, cluster.local_rank, cluster.local_world_size) == (2, 0, 2)


def test_slurm_cyclic_distribution() -> None:
    env = srun_task(1, SLURM_DISTRIBUTION="cyclic", SLURM_NODEID="1", SLURM_LOCALID="0", SLURM_GTIDS="1,3")
    cluster = from_slurm(env)
    assert cluster is not None
    assert cluster.hosts == ("gpu-a01", "gpu-a02", "gpu-a01", "gpu-a02")
    assert (cluster.node_rank, cluster.local_rank) == (1, 0)


def test_slurm_plane_distribution() -> None:
    env = srun_task(
        2,
        SLURM_DISTRIBUTION="plane",
        SLURM_DIST_PLANESIZE="2",
        SLURM_STEP_TASKS_PER_NODE="3,2",
        SLURM_NTASKS="5",
        SLURM_STEP_NUM_TASKS="5",
        SLURM_NODEID="1",
        SLURM_LOCALID="0",
        SLURM_GTIDS="2,3",
    )
    cluster = from_slurm(env)
    assert cluster is not None
    assert cluster.hosts == ("gpu-a01", "gpu-a01", "gpu-a02", "gpu-a02", "gpu-a01")


def test_slurm_job_nodelist_fallback() -> None:
    env = srun_task(3)
    for name in (
        "SLURM_STEP_NODELIST",
        "SLURM_STEP_TASKS_PER_NODE",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_STEP_NUM_NODES",
    ):
        del env[name]
    cluster = from_slurm(env)
    assert cluster is not None and cluster.hosts[3] == "gpu-a02"


@pytest.mark.parametrize(
    "step",
    [None, "batch", "4294967291", "4294967294", "4294967290"],
    ids=["no-step-id", "batch", "batch-20.11+", "batch-old", "interactive"],
)
def test_slurm_batch_script_is_single_process(step: str | None) -> None:
    """sbatch -N2 --ntasks-per-node=2: the script sees SLURM_PROCID=0 and SLURM_NTASKS=4 but no step."""
    env = {
        "SLURM_JOB_ID": "77",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_GTIDS": "0",
        "SLURM_NTASKS": "4",
        "SLURM_NPROCS": "4",
        "SLURM_JOB_NODELIST": "n[1-2]",
        "SLURM_NODELIST": "n[1-2]",
        "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURMD_NODENAME": "n1",
    }
    if step is not None:
        env["SLURM_STEP_ID"] = step
    cluster = from_slurm(env)
    assert cluster is not None
    assert (cluster.source, cluster.world_size, cluster.rank, cluster.job_id) == ("slurm", 1, 0, "77")
    assert cluster.hosts == ("n1",) and not cluster.is_distributed


def test_outside_slurm_tasks() -> None:
    assert from_slurm({}) is None
    # salloc's shell without an interactive step has the allocation but no SLURM_PROCID
    assert from_slurm({"SLURM_JOB_ID": "5", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n[1-2]"}) is None


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"SLURM_PROCID": "4"}, ["SLURM_PROCID", "SLURM_STEP_NUM_TASKS"]),
        ({"SLURM_PROCID": "x"}, ["SLURM_PROCID='x'"]),
        ({"SLURM_STEP_NUM_TASKS": "3"}, ["SLURM_STEP_TASKS_PER_NODE='2(x2)'", "SLURM_STEP_NUM_TASKS=3"]),
        ({"SLURM_STEP_NODELIST": "gpu-a[01-03]", "SLURM_STEP_NUM_NODES": "3"}, ["SLURM_STEP_TASKS_PER_NODE"]),
        ({"SLURM_STEP_NUM_NODES": "3"}, ["SLURM_STEP_NUM_NODES='3'", "SLURM_STEP_NODELIST='gpu-a[01-02]'"]),
        ({"SLURM_STEP_NODELIST": "gpu-a[01-"}, ["SLURM_STEP_NODELIST='gpu-a[01-'"]),
        ({"SLURM_STEP_TASKS_PER_NODE": "2(x"}, ["SLURM_STEP_TASKS_PER_NODE='2(x'"]),
        ({"SLURM_NODEID": "0"}, ["SLURM_NODEID='0'", "--distribution=block"]),
        ({"SLURM_LOCALID": "1"}, ["SLURM_LOCALID='1'"]),
        ({"SLURM_DISTRIBUTION": "arbitrary"}, ["SLURM_DISTRIBUTION='arbitrary'"]),
        ({"SLURM_DISTRIBUTION": "plane"}, ["SLURM_DIST_PLANESIZE"]),
    ],
)
def test_inconsistent_slurm_env_names_variables(overrides: dict[str, str], names: list[str]) -> None:
    with pytest.raises(LaunchError) as err:
        from_slurm(srun_task(2, **overrides))
    for name in names:
        assert name in str(err.value)


# --------------------------------------------------------------------------- addresses and ports


def four_ranks_on_two_hosts(rank: int = 0) -> ClusterEnv:
    hosts = ("a", "a", "b", "b")
    return ClusterEnv("slurm", rank, 4, rank % 2, 2, rank // 2, hosts, "a", 23000, "1")


def test_worker_addresses_are_distinct_even_when_hosts_alias_one_machine() -> None:
    addresses = four_ranks_on_two_hosts().worker_addresses()
    assert addresses == ["a:23000", "a:23001", "b:23002", "b:23003"]
    assert len({a.split(":")[1] for a in addresses}) == 4


def test_large_jobs_offset_ports_per_host() -> None:
    from harness.distribute.cluster import PORT_SLOT, _derive_addresses

    hosts = [f"n{i // 4}" for i in range(PORT_SLOT + 4)]
    addresses = _derive_addresses(hosts, 23000)
    assert addresses[:5] == ["n0:23000", "n0:23001", "n0:23002", "n0:23003", "n1:23000"]
    assert len(set(addresses)) == len(hosts)


def test_tf_config_shape() -> None:
    config = four_ranks_on_two_hosts(rank=2).tf_config()
    assert config == {
        "cluster": {"worker": ["a:23000", "a:23001", "b:23002", "b:23003"]},
        "task": {"type": "worker", "index": 2},
    }
    assert json.loads(json.dumps(config)) == config


@pytest.mark.parametrize(
    "fields",
    [
        {"rank": 4},
        {"hosts": ("a", "a", "b")},
        {"local_rank": 2},
        {"port": 70000},
    ],
)
def test_cluster_env_rejects_impossible_views(fields: dict[str, object]) -> None:
    values: dict[str, object] = {
        "source": "slurm",
        "rank": 0,
        "world_size": 4,
        "local_rank": 0,
        "local_world_size": 2,
        "node_rank": 0,
        "hosts": ("a", "a", "b", "b"),
        "master_addr": "a",
        "port": 23000,
        "job_id": None,
    }
    with pytest.raises(LaunchError, match="inconsistent cluster environment"):
        ClusterEnv(**{**values, **fields})  # type: ignore[arg-type]


def test_port_for_job_is_deterministic_and_below_the_ephemeral_range() -> None:
    """Linux hands out 32768-60999 to outgoing connections by default; a port there can be taken."""
    assert port_for_job("123456", "0") == port_for_job("123456", "0")
    for job in ("1", "99", "123456", "4294967295", "array_7", "abc"):
        port = port_for_job(job)
        assert 12000 <= port and port + PORT_SLOT <= 32768
        assert (port - 12000) % PORT_SLOT == 0
    assert max(port_for_job(str(job)) for job in range(2000)) + PORT_SLOT <= 32768
    assert port_for_job(None) == 12000
    assert 30000 <= port_for_job("5", base=30000, span=1000) < 31000


def test_port_for_job_nearby_jobs_and_steps_never_collide() -> None:
    """The documented bound: ids within 161 of each other, steps 0-3, never share a port slot."""
    ports = [port_for_job(str(job), str(step)) for job in range(9_000_000, 9_000_161) for step in range(4)]
    assert len(set(ports)) == len(ports)


def test_port_for_job_collision_rate_for_unrelated_jobs() -> None:
    slots = Counter(port_for_job(str(job)) for job in range(0, 647 * 40, 37))
    assert len(slots) == 647  # every slot used, none favoured


def test_a_taken_port_is_explained_with_the_node_and_the_ephemeral_range(tmp_path: Path) -> None:
    from harness.distribute.cluster import port_taken_message

    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        ranges = tmp_path / "ip_local_port_range"
        ranges.write_text(f"{port - 5}\t{port + 5}\n")
        text = port_taken_message("rank 0's gRPC server", port, "node7", ranges)
        assert text.startswith(f"rank 0's gRPC server could not listen on port {port} on node7: another process")
        assert f"ephemeral range {port - 5}-{port + 5}" in text and f"grep :{port}" in text
        ranges.write_text(f"{port + 1} {port + 5}\n")
        assert "ephemeral" not in port_taken_message("x", port, "node7", ranges)
        assert "ephemeral" not in port_taken_message("x", port, "node7", tmp_path / "missing")
    assert "held only briefly" in port_taken_message("x", port, "node7", ranges)


@pytest.mark.parametrize(("base", "span"), [(80, 1000), (60000, 10000), (20000, 8)])
def test_port_for_job_rejects_bad_ranges(base: int, span: int) -> None:
    with pytest.raises(ValueError, match="port range"):
        port_for_job("1", base=base, span=span)


# --------------------------------------------------------------------------- TF_CONFIG


CHIEF_AND_WORKERS = {"chief": ["host0:2222"], "worker": ["host1:2222", "host1:2223"]}


@pytest.mark.parametrize(
    ("task", "rank", "local_rank", "node_rank"),
    [
        ({"type": "chief", "index": 0}, 0, 0, 0),
        ({"type": "worker", "index": 0}, 1, 0, 1),
        ({"type": "worker", "index": 1}, 2, 1, 1),
    ],
)
def test_tf_config_chief_and_workers(
    task: dict[str, object], rank: int, local_rank: int, node_rank: int
) -> None:
    env = {"TF_CONFIG": json.dumps({"cluster": CHIEF_AND_WORKERS, "task": task})}
    cluster = from_tf_config(env)
    assert cluster is not None
    assert (cluster.source, cluster.rank, cluster.world_size) == ("tf_config", rank, 3)
    assert (cluster.local_rank, cluster.node_rank) == (local_rank, node_rank)
    assert cluster.hosts == ("host0", "host1", "host1")
    assert cluster.master_addr == "host0" and cluster.port == 2222
    assert cluster.tf_config() == {
        "cluster": {"worker": ["host0:2222", "host1:2222", "host1:2223"]},
        "task": {"type": "worker", "index": rank},
    }


def test_tf_config_keeps_given_ports() -> None:
    config = {
        "cluster": {"worker": ["localhost:5000", "localhost:7000"]},
        "task": {"type": "worker", "index": 1},
    }
    cluster = from_tf_config({"TF_CONFIG": json.dumps(config)})
    assert cluster is not None and cluster.worker_addresses() == ["localhost:5000", "localhost:7000"]


@pytest.mark.parametrize("raw", ["", "  ", "{}", '{"cluster": {}}'])
def test_tf_config_without_cluster(raw: str) -> None:
    assert from_tf_config({"TF_CONFIG": raw}) is None
    assert from_tf_config({}) is None


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"cluster": CHIEF_AND_WORKERS}), "no task"),
        (
            json.dumps({"cluster": CHIEF_AND_WORKERS, "task": {"type": "worker", "index": 2}}),
            "task must name",
        ),
        (
            json.dumps({"cluster": CHIEF_AND_WORKERS, "task": {"type": "evaluator", "index": 0}}),
            "task must name",
        ),
        (json.dumps({"cluster": {"ps": ["p:1"], "worker": ["w:1"]}, "task": {"type": "worker"}}), "'ps'"),
        (json.dumps({"cluster": {"worker": ["w"]}, "task": {"type": "worker", "index": 0}}), "host:port"),
        (json.dumps({"cluster": {"worker": ["w:1", "w:1"]}, "task": {"type": "worker"}}), "once"),
        (json.dumps({"cluster": {"worker": "w:1"}, "task": {"type": "worker"}}), "lists"),
    ],
)
def test_bad_tf_config_names_tf_config(config: str, why: str) -> None:
    with pytest.raises(LaunchError, match=why) as err:
        from_tf_config({"TF_CONFIG": config})
    assert "TF_CONFIG" in str(err.value)


# --------------------------------------------------------------------------- horovodrun, mpirun, PMI


def test_horovodrun_gloo_on_one_host() -> None:
    """horovodrun -np 2 -H localhost:2 --gloo."""
    env = {
        "HOROVOD_RANK": "1",
        "HOROVOD_SIZE": "2",
        "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "2",
        "HOROVOD_CROSS_RANK": "0",
        "HOROVOD_CROSS_SIZE": "1",
        "HOROVOD_HOSTNAME": "localhost",
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": "10.0.0.1",
        "HOROVOD_GLOO_RENDEZVOUS_PORT": "41000",
    }
    cluster = from_horovod(env)
    assert cluster is not None
    assert (cluster.source, cluster.rank, cluster.world_size, cluster.local_rank, cluster.node_rank) == (
        "horovod",
        1,
        2,
        1,
        0,
    )
    assert cluster.hosts == ("localhost", "localhost")


def test_horovodrun_across_hosts_marks_hosts_unknown() -> None:
    env = {
        "HOROVOD_RANK": "3",
        "HOROVOD_SIZE": "4",
        "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "2",
        "HOROVOD_CROSS_RANK": "1",
        "HOROVOD_HOSTNAME": "gpu2",
    }
    cluster = from_horovod(env)
    assert cluster is not None
    assert cluster.node_rank == 1 and cluster.hosts == ("localhost",) * 4


def test_mpirun_node_rank_is_not_ompi_node_rank() -> None:
    """mpirun -np 4 on 2 nodes: rank 2 is the first on the second node; OMPI's NODE_RANK is 0 there."""
    env = {
        "OMPI_COMM_WORLD_RANK": "2",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
        "OMPI_COMM_WORLD_NODE_RANK": "0",
        "SLURM_JOB_ID": "900",
    }
    cluster = from_horovod(env)
    assert cluster is not None
    assert (cluster.rank, cluster.world_size, cluster.local_rank, cluster.node_rank) == (2, 4, 0, 1)
    assert cluster.job_id == "900" and cluster.master_addr == "localhost"


def test_mpich_hydra() -> None:
    env = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
    cluster = from_horovod(env)
    assert cluster is not None and (cluster.rank, cluster.local_rank, cluster.local_world_size) == (1, 1, 2)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PMI_RANK": "1", "PMI_SIZE": "2"}, ["MPI_LOCALRANKID", "PMI_RANK='1'"]),
        ({"HOROVOD_RANK": "0", "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "1"}, ["HOROVOD_SIZE"]),
        (
            {"HOROVOD_RANK": "2", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "1"},
            ["HOROVOD_RANK=2", "HOROVOD_SIZE=2"],
        ),
        (
            {
                "OMPI_COMM_WORLD_RANK": "0",
                "OMPI_COMM_WORLD_SIZE": "2",
                "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
            },
            ["OMPI_COMM_WORLD_LOCAL_SIZE=4", "OMPI_COMM_WORLD_SIZE=2"],
        ),
    ],
)
def test_inconsistent_mpi_env_names_variables(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(LaunchError) as err:
        from_horovod(env)
    for name in names:
        assert name in str(err.value)


# --------------------------------------------------------------------------- launcher and detect


def test_launcher_env_round_trip() -> None:
    cluster = from_launcher(launcher_env(1, 3, 29500))
    assert cluster is not None
    assert (cluster.source, cluster.rank, cluster.world_size, cluster.local_rank) == ("launcher", 1, 3, 1)
    assert cluster.worker_addresses() == ["127.0.0.1:29500", "127.0.0.1:29501", "127.0.0.1:29502"]
    assert from_launcher({}) is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"HARNESS_RANK": "0", "HARNESS_PORT": "1"}, "HARNESS_WORLD_SIZE"),
        ({**launcher_env(0, 2, 29500), "HARNESS_LOCAL_RANK": "1"}, "HARNESS_LOCAL_RANK=1"),
        ({**launcher_env(0, 2, 29500), "HARNESS_RANK": "2"}, "HARNESS_RANK=2"),
        ({**launcher_env(0, 2, 29500), "HARNESS_PORT": "x"}, "HARNESS_PORT='x'"),
    ],
)
def test_bad_launcher_env(env: dict[str, str], name: str) -> None:
    with pytest.raises(LaunchError, match=name):
        from_launcher(env)


def test_launcher_env_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank=3"):
        launcher_env(3, 2, 29500)


SLURM_STEP = srun_task(1)
OMPI = {
    "OMPI_COMM_WORLD_RANK": "3",
    "OMPI_COMM_WORLD_SIZE": "8",
    "OMPI_COMM_WORLD_LOCAL_RANK": "3",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
}
TF = {
    "TF_CONFIG": json.dumps({"cluster": {"worker": ["w0:1", "w1:1"]}, "task": {"type": "worker", "index": 1}})
}
SRUN_PMI2 = {**SLURM_STEP, "PMI_RANK": "1", "PMI_SIZE": "4", "PMI_FD": "5", "PMI_JOBID": "4242.0"}
HYDRA_IN_SLURM = {
    **SLURM_STEP,
    "PMI_RANK": "5",
    "PMI_SIZE": "8",
    "MPI_LOCALRANKID": "1",
    "MPI_LOCALNRANKS": "4",
}


SUBMITIT_LOCAL = {
    "SUBMITIT_EXECUTOR": "local",
    "SUBMITIT_LOCAL_NTASKS": "2",
    "SUBMITIT_LOCAL_GLOBALID": "1",
    "SUBMITIT_LOCAL_JOB_ID": "77",
}


def test_submitit_local_tasks_are_launcher_workers() -> None:
    """submitit's local executor numbers its tasks only through SUBMITIT_LOCAL_*: read them as
    the launcher's own variables, with a port every task derives from the job id."""
    cluster = from_submitit_local(SUBMITIT_LOCAL)
    assert cluster == from_launcher(launcher_env(1, 2, port_for_job("77")))
    assert from_submitit_local({**SUBMITIT_LOCAL, "SUBMITIT_LOCAL_NTASKS": "1"}) is None
    assert from_submitit_local({**SUBMITIT_LOCAL, "SUBMITIT_EXECUTOR": "slurm"}) is None
    with pytest.raises(LaunchError, match="SUBMITIT_LOCAL_GLOBALID"):
        from_submitit_local({**SUBMITIT_LOCAL, "SUBMITIT_LOCAL_GLOBALID": "2"})


def test_detect_reads_the_job_around_the_ranks() -> None:
    """One reading gives everything later stages need, so none of them reads the environment."""
    env = {
        **SLURM_STEP,
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_NTASKS": "4",
        "SLURM_RESTART_COUNT": "2",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }
    cluster = detect(env)
    assert (cluster.job_id, cluster.executor, cluster.under_slurm) == ("4242", "slurm", True)
    assert (cluster.task_rank, cluster.task_count) == (int(SLURM_STEP["SLURM_PROCID"]), 4)
    assert cluster.node_name == cluster.slurm_node == SLURM_STEP["SLURMD_NODENAME"]
    assert (cluster.restart_count, cluster.cuda_visible_devices, cluster.horovod_identity) == (2, "0,1", False)
    local = detect(SUBMITIT_LOCAL)
    assert (local.source, local.rank, local.job_id, local.task_rank, local.task_count) == ("launcher", 1, "77", 1, 2)
    assert detect({**launcher_env(0, 2, 29500), "HOROVOD_RANK": "0"}).horovod_identity


def test_job_of_never_fails_on_a_launchers_variables() -> None:
    """`harness cancel` and the like act on a run from outside its job."""
    broken = {**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "nope", "SLURM_JOB_ID": "9", "SLURM_RESTART_COUNT": "x"}
    with pytest.raises(LaunchError):
        detect(broken)
    job = job_of(broken)
    assert (job.source, job.job_id, job.restart_count) == ("single", "9", 0)


@pytest.mark.parametrize(
    ("env", "source", "world"),
    [
        ({}, "single", 1),
        (SUBMITIT_LOCAL, "launcher", 2),
        ({**SLURM_STEP, **SUBMITIT_LOCAL, **launcher_env(0, 3, 29500)}, "launcher", 2),
        (SLURM_STEP, "slurm", 4),
        ({**SLURM_STEP, **launcher_env(0, 2, 29500)}, "launcher", 2),
        ({**SLURM_STEP, **OMPI}, "horovod", 8),
        ({**SLURM_STEP, **TF}, "tf_config", 2),
        ({**OMPI, **TF}, "horovod", 8),
        ({**OMPI, **launcher_env(1, 2, 29500)}, "launcher", 2),
        (SRUN_PMI2, "slurm", 4),
        (HYDRA_IN_SLURM, "horovod", 8),
        ({**SLURM_STEP, "SLURM_STEP_ID": "4294967291"}, "slurm", 1),
    ],
    ids=[
        "nothing",
        "submitit-local",
        "submitit-local-over-everything",
        "srun",
        "launcher-in-slurm",
        "mpirun-in-slurm",
        "tf_config-in-slurm",
        "mpirun-over-tf_config",
        "launcher-over-mpirun",
        "srun-mpi-pmi2",
        "hydra-in-slurm",
        "batch-script",
    ],
)
def test_detect_precedence(env: dict[str, str], source: str, world: int) -> None:
    cluster = detect(env)
    assert (cluster.source, cluster.world_size) == (source, world)


def test_single() -> None:
    cluster = single()
    assert (cluster.rank, cluster.world_size, cluster.hosts) == (0, 1, ("localhost",))
    assert not cluster.is_distributed and cluster.is_chief
    assert cluster.tf_config()["cluster"]["worker"] == [f"localhost:{cluster.port}"]


# --------------------------------------------------------------------------- GPUs


@pytest.mark.parametrize(
    ("local_rank", "cuda_visible", "gpus", "index"),
    [
        (3, "2", 1, 0),  # Slurm bound GPU 2 to this task: it is index 0 here
        (1, "GPU-8f6c", 1, 0),
        (1, "0,1,2,3", 4, 1),
        (3, "4,5,6,7", 4, 3),
        (1, None, 2, 1),  # unset: all GPUs of the node are visible
        (1, None, 1, 0),
        (0, None, 0, None),
        (0, "", 0, None),
        (0, "0", 0, None),  # a CPU build of TensorFlow sees no GPU whatever the variable says
        (1, "0,1,-1,2", 2, 1),  # CUDA stops at the first invalid entry
    ],
)
def test_visible_gpu_index(local_rank: int, cuda_visible: str | None, gpus: int, index: int | None) -> None:
    env = {} if cuda_visible is None else {"CUDA_VISIBLE_DEVICES": cuda_visible}
    assert visible_gpu_index(local_rank, env, gpus) == index


@pytest.mark.parametrize(("cuda_visible", "gpus"), [("0,1", 2), (None, 2), ("0,1,-1,2", 2)])
def test_visible_gpu_index_too_few_gpus(cuda_visible: str | None, gpus: int) -> None:
    env = {} if cuda_visible is None else {"CUDA_VISIBLE_DEVICES": cuda_visible}
    with pytest.raises(LaunchError, match="CUDA_VISIBLE_DEVICES"):
        visible_gpu_index(2, env, gpus)


def test_gpu_index_uses_the_context() -> None:
    local_rank = 1
    cluster = detect({**launcher_env(local_rank, 2, 29500), "CUDA_VISIBLE_DEVICES": "5"})
    assert gpu_index(cluster, 1) == 0  # bound to this process already: index 0, not the local rank
    assert gpu_index(detect(launcher_env(local_rank, 2, 29500)), 2) == local_rank


# --------------------------------------------------------------------------- captured from real srun steps


def captured_tasks(name: str) -> list[dict[str, str]]:
    """The per-task SLURM_* variables captured from real steps in slurm/examples."""
    tasks: list[dict[str, str]] = []
    for line in (EXAMPLES / name).read_text().splitlines():
        if line.startswith("# task"):
            tasks.append({})
        elif "=" in line and not line.startswith("#") and tasks:
            key, _, value = line.partition("=")
            tasks[-1][key] = value
    return tasks


def test_captured_two_node_step_parses_to_one_rank_per_node() -> None:
    tasks = captured_tasks("env-srun-2nodes.txt")
    envs = [from_slurm(task) for task in tasks]
    assert [e.rank for e in envs if e] == [0, 1]
    for env, task in zip(envs, tasks, strict=True):
        assert env is not None
        assert env.world_size == 2 and env.local_rank == 0
        assert env.hosts == ("n1", "n2")
        assert env.hosts[env.rank] == task["SLURMD_NODENAME"]
    assert envs[0] is not None and len(set(envs[0].worker_addresses())) == 2


def test_captured_one_node_two_tasks() -> None:
    envs = [from_slurm(task) for task in captured_tasks("env-srun-1node-2tasks.txt")]
    assert sorted((e.rank, e.local_rank) for e in envs if e) == [(0, 0), (1, 1)]


def test_captured_batch_script_is_one_process() -> None:
    task = captured_tasks("env-batch.txt")[0]
    assert task["SLURM_NTASKS"] == "2"
    assert not detect(task).is_distributed
