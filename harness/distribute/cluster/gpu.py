"""GPU binding: which of the GPUs a process sees it should use, from CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

from collections.abc import Mapping

from harness.distribute.cluster.context import ClusterEnv
from harness.errors import LaunchError


def gpu_index(cluster: ClusterEnv, gpus_visible: int) -> int | None:
    """`visible_gpu_index` for this process, from the CUDA_VISIBLE_DEVICES it was started with."""
    return _gpu_index(cluster.local_rank, cluster.cuda_visible_devices, gpus_visible)


def visible_gpu_index(local_rank: int, env: Mapping[str, str], gpus_visible: int) -> int | None:
    """Which of the GPUs this process sees it should use, or None without GPUs.

    One visible device means Slurm (or the user) already bound a GPU to this task: use it, at
    index 0, whatever the local rank (re-indexing it by local rank is the SlurmClusterResolver
    bug). Several visible devices are shared by the node's processes: take the local rank's.
    CUDA ignores entries from the first invalid one on ("-1", "NoDevFiles"), and so do we.
    """
    return _gpu_index(local_rank, env.get("CUDA_VISIBLE_DEVICES"), gpus_visible)


def _gpu_index(local_rank: int, raw: str | None, gpus_visible: int) -> int | None:
    if gpus_visible <= 0:
        return None
    listed = gpus_visible if raw is None else min(len(cuda_devices(raw)), gpus_visible)
    if listed <= 1:
        return 0 if listed else None
    if local_rank < listed:
        return local_rank
    raise LaunchError(
        f"local rank {local_rank} has no GPU of its own: this process sees {listed} GPUs "
        f"(CUDA_VISIBLE_DEVICES={raw!r}). Hint: start at most one process per GPU, or let Slurm bind "
        "one GPU per task (srun --gpus-per-task=1)"
    )


def cuda_devices(raw: str) -> list[str]:
    """The GPUs a CUDA_VISIBLE_DEVICES value names (indices or UUIDs), up to its first invalid entry."""
    devices = []
    for entry in (item.strip() for item in raw.split(",")):
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        devices.append(entry)
    return devices
