"""Rendezvous ports that every process of a job derives alike from the job's ids, without talking."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

PORT_SLOT = 32
"""Ports reserved per job on each node by `port_for_job`: room for this many processes per node."""

STEPS_PER_JOB = 4
"""Job steps that get their own port slot before a step shares one with a later job id."""

PORT_BASE = 12000
PORT_SPAN = 20704
"""Derived ports lie in [12000, 32704): below 32768, where Linux's default ephemeral range starts.

A port inside the ephemeral range can be held, at any moment, by the local end of any outgoing
connection on the node (a package mirror, a file system client, another job's gRPC channel), and a
worker that cannot listen on its port kills the whole job. 20704 is 647 slots of PORT_SLOT: a slot
count that shares no factor with STEPS_PER_JOB, or the first steps of unrelated jobs would crowd
into a fraction of the slots."""

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def port_for_job(job_id: str | None, step_id: str | None = None, base: int = PORT_BASE, span: int = PORT_SPAN) -> int:
    """A rendezvous base port that every process of a job step computes alike, from its ids.

    [base, base+span) is cut into slots of PORT_SLOT ports; a job uses port .. port+k-1 for k
    processes on a node, so each slot ends inside the range. The slot is
    (STEPS_PER_JOB * job + step) mod (span // PORT_SLOT), which gives this collision bound for
    two job steps sharing a node, each with at most PORT_SLOT processes there:
    - never, if their numeric job ids differ by less than span // (PORT_SLOT * STEPS_PER_JOB)
      (161 with the defaults) and both step ids are below STEPS_PER_JOB (steps 0-3 of a job
      never collide with each other either): jobs submitted close together are safe;
    - otherwise only if those keys agree modulo span // PORT_SLOT: about 1 in 647 for
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


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """This node's range for outgoing connections' local ports, or None where it cannot be read."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def port_taken_message(what: str, port: int, node: str, path: Path = EPHEMERAL_RANGE_FILE) -> str:
    """Why `what` could not listen on `port` on `node`, and what to do, for an error message.

    A failed bind surfaces from TensorFlow as a bare "Could not start gRPC server"; the user
    needs the port, the node and whether another process holds the port now.
    """
    holder = "another process holds it" if not port_free(port) else "it is free again, so it was held only briefly"
    text = f"{what} could not listen on port {port} on {node}: {holder}"
    found = ephemeral_range(path)
    if found and found[0] <= port <= found[1]:
        text += (
            f". The port lies in this node's ephemeral range {found[0]}-{found[1]} "
            f"({path}), where any outgoing connection may hold it"
        )
    return (
        f"{text}. Find the holder with `ss -tanp | grep :{port}`; a new job id derives another port, "
        "so submitting the job again moves it"
    )


def port_free(port: int, host: str = "") -> bool:
    """Whether a listener could bind `port` on `host` ("": every address) right now."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
