"""Checks before training that every rank runs the same software and that the ranks can talk.

A rank with another TensorFlow or Keras version computes different numbers or deadlocks in a
collective; catching it up front with a message naming the rank and host saves an allocation.
The exchange itself is the connectivity test: a tiny all-gather that must complete within the
watchdog's timeout.
"""

from __future__ import annotations

import json
from typing import Any

from harness.distribute.strategy import Strategy
from harness.envinfo import versions
from harness.errors import LaunchError

MUST_MATCH = ("python", "harness", "tensorflow", "tensorflow-cpu", "keras", "numpy", "horovod")


def rank_info(strategy: Strategy) -> dict[str, Any]:
    found = versions()
    return {
        "rank": strategy.rank,
        "host": strategy.cluster.node_name,
        "versions": {k: found[k] for k in MUST_MATCH if k in found},
    }


def exchange(strategy: Strategy) -> list[dict[str, Any]]:
    """Every rank's info, in rank order (a collective: all ranks call it)."""
    blobs = strategy.gather_bytes(json.dumps(rank_info(strategy)).encode())
    by_rank: dict[int, dict[str, Any]] = {}
    for blob in blobs:
        info = json.loads(blob.decode())
        by_rank[int(info["rank"])] = info
    return [by_rank[r] for r in sorted(by_rank)]


def check_versions(infos: list[dict[str, Any]]) -> None:
    """Raise LaunchError naming every rank whose versions differ from rank 0's."""
    reference = infos[0]
    problems = []
    for info in infos[1:]:
        keys = sorted(set(reference["versions"]) | set(info["versions"]))
        differing = [k for k in keys if reference["versions"].get(k) != info["versions"].get(k)]
        if differing:
            ours, theirs = reference["versions"], info["versions"]
            detail = ", ".join(
                f"{k} {theirs.get(k, 'missing')} (rank 0 has {ours.get(k, 'missing')})" for k in differing
            )
            problems.append(f"rank {info['rank']} on {info['host']}: {detail}")
    if problems:
        raise LaunchError(
            f"software differs between ranks (rank 0 is on {reference['host']}): "
            + "; ".join(problems)
            + ". Use one environment for every node (same virtualenv or container)"
        )


def preflight(strategy: Strategy) -> list[dict[str, Any]]:
    """Exchange rank info, check versions; returns the infos for env.json."""
    infos = exchange(strategy)
    if len(infos) != strategy.world_size:
        seen = {info["rank"] for info in infos}
        missing = [r for r in range(strategy.world_size) if r not in seen]
        raise LaunchError(f"preflight heard from {len(infos)} of {strategy.world_size} ranks; missing {missing}")
    check_versions(infos)
    return infos
