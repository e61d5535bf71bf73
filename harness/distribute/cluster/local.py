"""harness's own local launcher (`harness train --workers N`) and submitit's local executor.

Both start every worker on this machine; submitit's local executor tells its tasks their rank
only through SUBMITIT_LOCAL_*, which is read here as the launcher's own variables would be.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.distribute.cluster.context import ClusterEnv
from harness.distribute.cluster.ports import port_for_job
from harness.distribute.cluster.variables import check_rank, int_var
from harness.errors import LaunchError


def from_launcher(env: Mapping[str, str]) -> ClusterEnv | None:
    """Workers started by harness's local launcher: all on one host, ports base .. base+N-1."""
    if "HARNESS_RANK" not in env:
        return None
    rank, world = int_var(env, "HARNESS_RANK"), int_var(env, "HARNESS_WORLD_SIZE", minimum=1)
    check_rank("HARNESS_RANK", rank, "HARNESS_WORLD_SIZE", world)
    local = int_var(env, "HARNESS_LOCAL_RANK") if "HARNESS_LOCAL_RANK" in env else rank
    if local != rank:
        raise LaunchError(
            f"HARNESS_LOCAL_RANK must equal HARNESS_RANK (all workers share one host). "
            f"Received: HARNESS_LOCAL_RANK={local}, HARNESS_RANK={rank}"
        )
    master = env.get("HARNESS_MASTER_ADDR", "").strip() or "127.0.0.1"
    port = int_var(env, "HARNESS_PORT", minimum=1)
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


def from_submitit_local(env: Mapping[str, str]) -> ClusterEnv | None:
    """A task of several started by submitit's local executor, seen as a launcher worker would
    see itself; None outside such a task (one task alone is a single process)."""
    if env.get("SUBMITIT_EXECUTOR") != "local" or not env.get("SUBMITIT_LOCAL_NTASKS", "").strip():
        return None
    world = int_var(env, "SUBMITIT_LOCAL_NTASKS", minimum=1)
    if world == 1:
        return None
    rank = int_var(env, "SUBMITIT_LOCAL_GLOBALID") if env.get("SUBMITIT_LOCAL_GLOBALID", "").strip() else 0
    check_rank("SUBMITIT_LOCAL_GLOBALID", rank, "SUBMITIT_LOCAL_NTASKS", world)
    return from_launcher(launcher_env(rank, world, port_for_job(env.get("SUBMITIT_LOCAL_JOB_ID"))))
