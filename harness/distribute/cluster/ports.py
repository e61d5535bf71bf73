"""Rendezvous ports that every process of a job derives alike from the job's ids, without talking."""

from __future__ import annotations

import hashlib

PORT_SLOT = 32
"""Ports reserved per job on each node by `port_for_job`: room for this many processes per node."""

STEPS_PER_JOB = 4
"""Job steps that get their own port slot before a step shares one with a later job id."""


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
