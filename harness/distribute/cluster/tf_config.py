"""TF_CONFIG: a cluster of MultiWorkerMirrored workers the user (or a platform) wrote down."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.distribute.cluster.context import ClusterEnv
from harness.errors import LaunchVariableError


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
        raise LaunchVariableError(
            f"TF_CONFIG is not valid JSON ({err.msg} at char {err.pos}). Received: TF_CONFIG={raw!r}"
        ) from None
    if not isinstance(config, dict):
        raise LaunchVariableError(f"TF_CONFIG must be a JSON object. Received: TF_CONFIG={raw!r}")
    return config


def _tf_addresses(cluster: Any, raw: str) -> list[str]:
    if not isinstance(cluster, dict) or set(cluster) - {"chief", "worker"}:
        kinds = sorted(cluster) if isinstance(cluster, dict) else cluster
        raise LaunchVariableError(
            f"TF_CONFIG cluster may only have 'chief' and 'worker' tasks (MultiWorkerMirroredStrategy). "
            f"Received: {kinds} in TF_CONFIG={raw!r}"
        )
    chief, workers = cluster.get("chief", []), cluster.get("worker", [])
    if not _is_str_list(chief) or not _is_str_list(workers) or len(chief) > 1:
        raise LaunchVariableError(
            f"TF_CONFIG cluster needs lists of 'host:port' strings and at most one chief. Received: TF_CONFIG={raw!r}"
        )
    addresses = [*chief, *workers]
    if not addresses or len(set(addresses)) != len(addresses):
        raise LaunchVariableError(f"TF_CONFIG cluster must list each address once. Received: TF_CONFIG={raw!r}")
    return addresses


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _tf_rank(task: Any, cluster: dict[str, list[str]], raw: str) -> int:
    if not isinstance(task, dict) or "type" not in task:
        raise LaunchVariableError(
            f"TF_CONFIG has a cluster but no task {{'type': ..., 'index': ...}}. Received: TF_CONFIG={raw!r}"
        )
    kind, index = task["type"], task.get("index", 0)
    tasks = cluster.get(kind) if kind in ("chief", "worker") else None
    if tasks is None or not isinstance(index, int) or not 0 <= index < len(tasks):
        raise LaunchVariableError(
            f"TF_CONFIG task must name a 'chief' or 'worker' listed in its cluster. "
            f"Received: task={task!r} in TF_CONFIG={raw!r}"
        )
    return index if kind == "chief" else len(cluster.get("chief", [])) + index


def _split_address(address: str, raw: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise LaunchVariableError(
            f"TF_CONFIG addresses must be 'host:port'. Received: {address!r} in TF_CONFIG={raw!r}"
        )
    return host, int(port)


def _local_view(hosts: tuple[str, ...], rank: int) -> tuple[int, int, int]:
    """(local rank, processes on this host, node index by first appearance) from hosts per rank."""
    same = [r for r, host in enumerate(hosts) if host == hosts[rank]]
    return same.index(rank), len(same), list(dict.fromkeys(hosts)).index(hosts[rank])
