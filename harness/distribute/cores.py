"""Each worker that `harness train --workers N` starts gets its own share of this machine's cores.

Why: TensorFlow sizes its thread pools to the cores a process may run on. N workers started
side by side each see every core, so N x cores compute threads, plus each worker's collective
and gRPC threads, compete for the same cores; a synchronous step then waits for whichever rank
was descheduled last. On a 2-core machine, two workers of the benchmark CNN trained 25-30%
faster per worker with multiworker (10-20% with Horovod over Gloo) when each had one core
(docs/benchmarks.md, "Local workers and their cores"). Slurm does the same for its tasks where
the site binds CPUs. horovodrun's mpirun starts its ranks unbound; those pin themselves
(`pin_from_environment`).

The shares split the launcher's own CPU set (what `taskset`, a cgroup or a Slurm allocation
left it) into N contiguous groups of nearly equal size. With fewer cores than workers nothing
is pinned. A child inherits the affinity of the thread that starts it, so the launcher sets
its own thread's affinity around each start: the worker is pinned before its first instruction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager


def core_shares(workers: int, cores: Sequence[int]) -> list[list[int]] | None:
    """`workers` disjoint, contiguous groups of `cores` (sizes differ by at most one), or None
    when there is nothing to split: one worker, or fewer cores than workers."""
    if workers < 2 or len(cores) < workers:
        return None
    ordered = sorted(cores)
    size, extra = divmod(len(ordered), workers)
    shares, start = [], 0
    for rank in range(workers):
        end = start + size + (1 if rank < extra else 0)
        shares.append(ordered[start:end])
        start = end
    return shares


def available_cores() -> list[int] | None:
    """The cores this process may run on, or None where the platform cannot pin (macOS, Windows)."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def worker_shares(workers: int) -> list[list[int]] | None:
    """This launcher's cores split among `workers` workers; None when they are not pinned."""
    cores = available_cores()
    return core_shares(workers, cores) if cores is not None else None


def describe(shares: Sequence[Sequence[int]]) -> str:
    """`rank 0: cores 0-3, rank 1: cores 4-7` for the line the launcher prints."""
    return ", ".join(f"rank {rank}: {_cores(share)}" for rank, share in enumerate(shares))


def _cores(share: Sequence[int]) -> str:
    if len(share) == 1:
        return f"core {share[0]}"
    if list(share) == list(range(share[0], share[-1] + 1)):
        return f"cores {share[0]}-{share[-1]}"
    return "cores " + ",".join(map(str, share))


@contextmanager
def inherited_affinity(cores: Sequence[int] | None) -> Iterator[None]:
    """Run the body with this thread pinned to `cores` (None: unchanged), then restore it.

    On Linux the affinity belongs to the calling thread and a forked child inherits it, so a
    process started inside the body starts pinned, with no window in which TensorFlow could
    size its pools to every core.
    """
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


SHARES_VARIABLE = "HARNESS_CORE_SHARES"
"""Cores per local rank ("0,1;2,3"), for ranks that a launcher other than ours starts.

horovodrun's mpirun starts Horovod's MPI ranks unbound (`-bind-to none`), so the launcher cannot
pin them at their start; it hands the shares down instead, and each rank pins itself by its local
rank as the interpreter starts, before TensorFlow sizes its thread pools."""

LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "HOROVOD_LOCAL_RANK")


def shares_value(shares: Sequence[Sequence[int]]) -> str:
    return ";".join(",".join(map(str, share)) for share in shares)


def pin_from_environment(env: Mapping[str, str]) -> list[int] | None:
    """Pin this process to its local rank's share from SHARES_VARIABLE; the cores, or None if
    nothing says which (no shares, no local rank, a platform that cannot pin).

    Runs first in every `python -m harness`, so a value it cannot use (malformed, more ranks than
    shares, cores this process may not use) leaves the process unpinned rather than failing it."""
    text = env.get(SHARES_VARIABLE, "").strip()
    rank = next((int(env[name]) for name in LOCAL_RANK_VARIABLES if env.get(name, "").strip().isdigit()), None)
    if not text or rank is None or available_cores() is None:
        return None
    try:
        shares = [[int(core) for core in share.split(",")] for share in text.split(";")]
        os.sched_setaffinity(0, shares[rank])
    except (ValueError, IndexError, OSError):
        return None
    return shares[rank]
