"""Horovod over Gloo without horovodrun: for tasks started by srun or the local launcher.

horovodrun normally starts a rendezvous server and gives every process its HOROVOD_* identity.
Inside a Slurm step the processes already exist, so rank 0 starts the same server (Horovod's
own `RendezvousHTTPServer`) on a port every rank derives from the job, and each rank sets its
identity from the cluster environment before `hvd.init()`. Without this, Horovod started by
srun silently runs every process as its own one-rank job.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.distribute.cluster import ClusterEnv, port_taken_message
from harness.errors import LaunchError


@dataclass(frozen=True)
class Slot:
    """One rank's place in Horovod's host layout."""

    hostname: str
    rank: int
    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int


def layout(hosts: tuple[str, ...]) -> list[Slot]:
    """Horovod's view of ranks: local ranks per host, and cross ranks across hosts.

    The cross rank of a process is the index of its host among the hosts that have a process
    with the same local rank (Horovod's hierarchical collectives use these groups).
    """
    order: list[str] = []
    local_index: list[int] = []
    counts: dict[str, int] = {}
    for host in hosts:
        if host not in counts:
            order.append(host)
        local_index.append(counts.get(host, 0))
        counts[host] = counts.get(host, 0) + 1
    slots = []
    for rank, host in enumerate(hosts):
        local = local_index[rank]
        peers = [h for h in order if counts[h] > local]
        slots.append(Slot(host, rank, local, counts[host], peers.index(host), len(peers)))
    return slots


def rendezvous_port(cluster: ClusterEnv) -> int:
    """Past the block of ports the job's workers may use, so the two never collide."""
    return cluster.port + cluster.world_size


def gloo_environment(cluster: ClusterEnv, timeout_s: float) -> dict[str, str]:
    """The HOROVOD_* variables with which `hvd.init()` joins the job's Gloo rendezvous."""
    slot = layout(cluster.hosts)[cluster.rank]
    return {
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": cluster.master_addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(rendezvous_port(cluster)),
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(int(max(timeout_s, 30))),
        "HOROVOD_HOSTNAME": slot.hostname,
        "HOROVOD_RANK": str(slot.rank),
        "HOROVOD_SIZE": str(cluster.world_size),
        "HOROVOD_LOCAL_RANK": str(slot.local_rank),
        "HOROVOD_LOCAL_SIZE": str(slot.local_size),
        "HOROVOD_CROSS_RANK": str(slot.cross_rank),
        "HOROVOD_CROSS_SIZE": str(slot.cross_size),
    }


def start_rendezvous(cluster: ClusterEnv) -> Any:
    """Rank 0 serves the rendezvous; returns the server (stop it with `.shutdown()`)."""
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    port = rendezvous_port(cluster)
    try:
        server = RendezvousHTTPServer(("", port), RendezvousHandler, False)
    except OSError:
        raise LaunchError(port_taken_message("Horovod's rendezvous", port, cluster.node_name)) from None
    plan = [
        SlotInfo(
            hostname=s.hostname,
            rank=s.rank,
            local_rank=s.local_rank,
            cross_rank=s.cross_rank,
            size=cluster.world_size,
            local_size=s.local_size,
            cross_size=s.cross_size,
        )
        for s in layout(cluster.hosts)
    ]
    server.init(plan)
    threading.Thread(target=server.serve_forever, name="horovod-rendezvous", daemon=True).start()
    return server


def wait_for_rendezvous(addr: str, port: int, timeout_s: float, poll_s: float = 0.2) -> None:
    """Block until rank 0's rendezvous server accepts connections.

    Horovod's HTTP store gives up after a few retries half a second apart, so a rank that
    reaches `hvd.init()` before rank 0 has imported TensorFlow and started the server would
    abort the launch; waiting here for the port makes start order irrelevant.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((addr, port), timeout=max(poll_s, 1.0)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"rank 0's Horovod rendezvous at {addr}:{port} did not answer within {timeout_s:g}s "
                    f"({err.strerror or err}); rank 0 may have failed to start (see its output: `harness logs "
                    "RUN_DIR --rank 0` for a submitted job), or the port is blocked between the nodes "
                    "(distribute.timeout_s sets how long to wait)"
                ) from None
            time.sleep(poll_s)


def needs_own_rendezvous(cluster: ClusterEnv, environ: Mapping[str, str] | None = None) -> bool:
    """True when processes were started without horovodrun or mpirun (srun, our launcher).

    Whether horovodrun gave this process its identity comes from the job context, or from
    `environ` for a view built by hand.
    """
    given = cluster.horovod_identity if environ is None else "HOROVOD_RANK" in environ
    return cluster.is_distributed and cluster.source in ("slurm", "launcher") and not given
