"""What the Slurm controller says: partitions (sinfo), a job's state (squeue, scontrol), scancel.

Parsers are pure functions over the commands' text so they are tested with captured output;
`run` is the one place that starts the commands, and it turns every failure into a message.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from harness.config import SlurmConfig
from harness.errors import ConfigError, LaunchError
from harness.registry import closest
from harness.slurm.resources import format_time, parse_time

COMMAND_TIMEOUT_S = 30.0
SINFO_FORMAT = "%P|%D|%a|%l|%s"

Runner = Callable[[Sequence[str]], str]


class SchedulerUnavailable(LaunchError):
    """A Slurm command is missing or did not answer."""


def run(command: Sequence[str]) -> str:
    """stdout of a Slurm client command; SchedulerUnavailable with its stderr if it fails."""
    if shutil.which(command[0]) is None:
        raise SchedulerUnavailable(f"{command[0]} is not on PATH: is this a Slurm login node?")
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SchedulerUnavailable(f"{' '.join(command)} did not answer within {COMMAND_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise SchedulerUnavailable(f"{' '.join(command)} failed: {detail[-1] if detail else done.returncode}")
    return done.stdout


# --------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: int
    default: bool
    available: str  # up, down, drain, inact
    max_time_minutes: int | None  # None: infinite
    max_nodes: int | None  # largest job in nodes; None: no limit


def parse_sinfo(text: str) -> list[Partition]:
    """`sinfo -h -o '%P|%D|%a|%l|%s'` lines; a partition listed on several lines adds up its nodes."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        raw_name, count, available, limit, size = fields
        name = raw_name.rstrip("*")
        nodes = int(count) if count.isdigit() else 0
        if name in found:
            nodes += found[name].nodes
        found[name] = Partition(name, nodes, raw_name.endswith("*"), available, _limit_minutes(limit), _max_nodes(size))
    return list(found.values())


def _limit_minutes(text: str) -> int | None:
    if text.strip() in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    try:
        return parse_time(text)
    except ConfigError:
        return None


def _max_nodes(text: str) -> int | None:
    high = text.strip().rpartition("-")[2]
    return int(high) if high.isdigit() else None


def query_partitions(runner: Runner = run) -> list[Partition]:
    return parse_sinfo(runner(["sinfo", "-h", "-o", SINFO_FORMAT]))


def check_partition(slurm: SlurmConfig, partitions: list[Partition]) -> Partition:
    """The partition the job will run in; an unknown one, or one too small or too short, is an error."""
    names = sorted(p.name for p in partitions)
    if slurm.partition is None:
        chosen = next((p for p in partitions if p.default), None)
        if chosen is None:
            raise ConfigError(
                f"no partition given and the cluster has no default partition; choose one with --partition or "
                f"slurm.partition. Known: {', '.join(names) or 'none'}"
            )
    else:
        chosen = _named(slurm.partition, partitions, names)
    _check_size(slurm, chosen)
    return chosen


def _named(name: str, partitions: list[Partition], names: list[str]) -> Partition:
    for partition in partitions:
        if partition.name == name:
            return partition
    hint = closest(name, names)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    raise ConfigError(f"unknown partition {name!r} (from sinfo).{did_you_mean} Known: {', '.join(names) or 'none'}")


def _check_size(slurm: SlurmConfig, partition: Partition) -> None:
    if slurm.nodes > partition.nodes:
        raise ConfigError(
            f"slurm.nodes={slurm.nodes} but partition {partition.name!r} has {partition.nodes} node"
            f"{'s' if partition.nodes != 1 else ''}"
        )
    if partition.max_nodes is not None and slurm.nodes > partition.max_nodes:
        raise ConfigError(
            f"slurm.nodes={slurm.nodes} but partition {partition.name!r} allows jobs of at most "
            f"{partition.max_nodes} nodes"
        )
    limit = partition.max_time_minutes
    if limit is not None and slurm.time_minutes > limit:
        raise ConfigError(
            f"time limit {format_time(slurm.time_minutes)} is longer than partition {partition.name!r} "
            f"allows ({format_time(limit)})"
        )


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobInfo:
    """The controller's view of one job; None fields are unknown."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    reason: str | None = None
    run_time: str | None = None
    nodes: str | None = None
    restarts: int | None = None
    stdout: str | None = None


ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"})


def parse_squeue(job_id: str, text: str) -> JobInfo | None:
    """`squeue -h -j ID -o '%T|%r|%M|%N'`: None when the job is no longer in the queue."""
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 4:
            state, reason, used, nodes = fields
            return JobInfo(job_id, state, _none(reason), _none(used), _none(nodes))
    return None


def scontrol_pairs(text: str) -> dict[str, str]:
    """`scontrol show job -o ID`: key=value pairs on one line (values may hold spaces)."""
    return dict(re.findall(r"(\w+)=(.*?)(?=\s+[\w:/]+=|$)", text.strip()))


def parse_scontrol(text: str) -> JobInfo | None:
    pairs = scontrol_pairs(text)
    if "JobId" not in pairs or "JobState" not in pairs:
        return None
    restarts = pairs.get("Restarts", "")
    return JobInfo(
        pairs["JobId"],
        pairs["JobState"],
        _none(pairs.get("Reason")),
        _none(pairs.get("RunTime")),
        _none(pairs.get("NodeList")),
        int(restarts) if restarts.isdigit() else None,
        _none(pairs.get("StdOut")),
    )


def _none(value: str | None) -> str | None:
    return None if value in (None, "", "None", "(null)", "n/a") else value


def job_info(job_id: str, runner: Runner = run) -> JobInfo | None:
    """squeue first (cheap), scontrol for restarts and for jobs that just left the queue.

    None when the controller does not know the job (any more); SchedulerUnavailable when it
    cannot be asked, so callers can tell "gone" from "cannot tell".
    """
    queued_text = _unless_unknown(runner, ["squeue", "-h", "-j", job_id, "-o", "%T|%r|%M|%N"])
    detail_text = _unless_unknown(runner, ["scontrol", "show", "job", "-o", job_id])
    queued = parse_squeue(job_id, queued_text) if queued_text else None
    detail = parse_scontrol(detail_text) if detail_text else None
    if queued is None or detail is None:
        return queued or detail
    return JobInfo(job_id, queued.state, queued.reason, queued.run_time, queued.nodes, detail.restarts, detail.stdout)


def _unless_unknown(runner: Runner, command: list[str]) -> str | None:
    try:
        return runner(command)
    except SchedulerUnavailable as err:
        if "invalid job id" in str(err).lower():
            return None
        raise


def chosen_for_preemption(job_id: str, runner: Runner = run) -> bool:
    """True when Slurm has chosen this run of the job for preemption.

    Slurm then sends SIGTERM, as it does for `scancel`; only `PreemptTime` tells the two apart.
    It survives a requeue, so it counts only when it is later than the current run's start.
    """
    # sbatch passes the user's SLURM_TIME_FORMAT on to the job; ask for ISO times explicitly.
    command = ["env", "SLURM_TIME_FORMAT=standard", "scontrol", "show", "job", "-o", job_id]
    pairs = scontrol_pairs(_unless_unknown(runner, command) or "")
    preempted, started = _none(pairs.get("PreemptTime")), _none(pairs.get("StartTime"))
    if preempted is None:
        return False
    try:
        return started is None or datetime.fromisoformat(preempted) >= datetime.fromisoformat(started)
    except ValueError:
        return True  # a preemption time we cannot compare: better a needless requeue than a lost job


def cancel(job_id: str, runner: Runner = run) -> None:
    runner(["scancel", job_id])
