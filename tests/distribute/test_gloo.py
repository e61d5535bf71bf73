"""Horovod's Gloo rendezvous for ranks that srun started: the layout, the environment, waiting for rank 0."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from harness.errors import LaunchError


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
