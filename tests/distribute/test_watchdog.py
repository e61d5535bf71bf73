"""Preflight version checks, the watchdog and heartbeat files (pure parts, no peers needed)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from harness.distribute.preflight import check_versions
from harness.distribute.watchdog import EXIT_STALLED, Heartbeats, Watchdog
from harness.errors import LaunchError


def info(rank: int, host: str, **versions: str) -> dict:
    return {"rank": rank, "host": host, "versions": {"python": "3.11.7", "tensorflow": "2.21.0", **versions}}


def test_matching_versions_pass() -> None:
    check_versions([info(0, "n1", keras="3.15.1"), info(1, "n2", keras="3.15.1")])


def test_version_mismatch_names_rank_host_and_versions() -> None:
    with pytest.raises(LaunchError) as err:
        check_versions([info(0, "n1", keras="3.15.1"), info(1, "n2", keras="3.15.1"), info(2, "gpu-b7", keras="3.9.0")])
    text = str(err.value)
    assert "rank 2 on gpu-b7" in text and "keras 3.9.0 (rank 0 has 3.15.1)" in text
    assert "rank 1" not in text


def test_a_package_missing_on_one_rank_is_a_mismatch() -> None:
    with pytest.raises(LaunchError, match="horovod missing"):
        check_versions([info(0, "n1", horovod="0.28.1"), info(1, "n2")])


def test_watchdog_exits_when_no_beat_arrives(tmp_path: Path) -> None:
    exits: list[int] = []
    beats = Heartbeats(tmp_path, rank=0, world_size=2, host="n1")
    dog = Watchdog(0.8, lambda: "ranks: 0 on n1, 1 on n2.", beats, exit_fn=exits.append).start()
    try:
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        dog.stop()
    assert exits == [EXIT_STALLED]


def test_watchdog_stays_quiet_while_beating(tmp_path: Path) -> None:
    exits: list[int] = []
    dog = Watchdog(0.8, lambda: "", None, exit_fn=exits.append).start()
    try:
        for step in range(12):
            dog.beat(f"step {step}")
            time.sleep(0.1)
        dog.pause()
        time.sleep(1.2)  # a paused watchdog does not fire (evaluation on the chief alone)
    finally:
        dog.stop()
    assert exits == []


def test_heartbeats_name_the_silent_rank(tmp_path: Path) -> None:
    me = Heartbeats(tmp_path, rank=0, world_size=3, host="n1")
    me.write(10, "epoch 2")
    Heartbeats(tmp_path, rank=1, world_size=3, host="n2").write(10, "epoch 2")
    old = {"rank": 2, "host": "n3", "time": time.time() - 60, "progress": 4, "what": "epoch 1"}
    (tmp_path / "rank-2").write_text(json.dumps(old))
    culprits = me.culprits(dead_after_s=5)
    assert len(culprits) == 1 and culprits[0].startswith("rank 2 on n3 (silent for 60s")


def test_heartbeats_name_a_rank_that_is_alive_but_behind(tmp_path: Path) -> None:
    me = Heartbeats(tmp_path, rank=0, world_size=2, host="n1")
    me.write(10, "epoch 2")
    Heartbeats(tmp_path, rank=1, world_size=2, host="n2").write(3, "epoch 1, loading data")
    assert me.culprits(dead_after_s=5) == ["rank 1 on n2 (alive but behind: epoch 1, loading data)"]
    assert me.culprits(dead_after_s=5, include_behind=False) == []
    assert Heartbeats(tmp_path / "none", 0, 2, "n1").culprits(5) == ["rank 1 (never reported)"]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_heartbeat_folder_goes_when_the_last_rank_retires(tmp_path: Path, order: tuple[int, int]) -> None:
    folder = tmp_path / ".run.heartbeats"
    dogs = {}
    for rank in (0, 1):
        beats = Heartbeats(folder, rank=rank, world_size=2, host="n1")
        dogs[rank] = Watchdog(0.8, lambda: "", beats, exit_fn=lambda code: None).start()
        dogs[rank].pause()  # keep beating files, never fire
    time.sleep(0.5)  # both threads have written (every 0.2 s)
    first, last = order
    dogs[first].stop()
    assert dogs[first].heartbeats is not None
    dogs[first].heartbeats.retire()
    time.sleep(0.5)  # the other rank keeps beating; its file, and the folder, stay
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("rank-")) == [f"rank-{last}"]
    dogs[last].stop()
    assert dogs[last].heartbeats is not None
    dogs[last].heartbeats.retire()
    time.sleep(0.5)  # a stopped watchdog writes nothing more
    assert not folder.exists()


def test_horovod_layout_for_srun_started_ranks() -> None:
    from harness.distribute.gloo import layout

    slots = layout(("n1", "n1", "n2", "n2", "n3"))
    assert [(s.local_rank, s.local_size) for s in slots] == [(0, 2), (1, 2), (0, 2), (1, 2), (0, 1)]
    # cross ranks group the processes with the same local rank across hosts
    assert [(s.cross_rank, s.cross_size) for s in slots] == [(0, 3), (0, 2), (1, 3), (1, 2), (2, 3)]


def test_gloo_environment_points_every_rank_at_rank_zero() -> None:
    from harness.distribute.cluster import ClusterEnv
    from harness.distribute.gloo import gloo_environment, needs_own_rendezvous

    cluster = ClusterEnv(
        source="slurm",
        rank=1,
        world_size=2,
        local_rank=0,
        local_world_size=1,
        node_rank=1,
        hosts=("n1", "n2"),
        master_addr="n1",
        port=21000,
        job_id="7",
    )
    env = gloo_environment(cluster, timeout_s=60)
    assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "n1" and env["HOROVOD_GLOO_RENDEZVOUS_PORT"] == "21002"
    assert (env["HOROVOD_RANK"], env["HOROVOD_SIZE"], env["HOROVOD_HOSTNAME"]) == ("1", "2", "n2")
    assert needs_own_rendezvous(cluster, {})
    assert not needs_own_rendezvous(cluster, {"HOROVOD_RANK": "1"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_rank_waits_for_a_rendezvous_that_starts_late() -> None:
    from harness.distribute.gloo import wait_for_rendezvous

    port = _free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def serve_later() -> None:
        time.sleep(1.5)  # longer than Horovod's own retries would wait
        server.bind(("127.0.0.1", port))
        server.listen()

    thread = threading.Thread(target=serve_later)
    thread.start()
    try:
        started = time.monotonic()
        wait_for_rendezvous("127.0.0.1", port, timeout_s=20, poll_s=0.1)
        assert time.monotonic() - started >= 1.0  # it really waited for the listener
    finally:
        thread.join()
        server.close()


def test_a_rendezvous_that_never_starts_names_the_address() -> None:
    from harness.distribute.gloo import wait_for_rendezvous

    port = _free_port()
    with pytest.raises(LaunchError, match=rf"rendezvous at 127\.0\.0\.1:{port} did not answer within 1s"):
        wait_for_rendezvous("127.0.0.1", port, timeout_s=1, poll_s=0.1)
