"""What a job asks for: resources merged from flags, the config and a cluster profile, then checked.

Everything here is a pure function over typed values, so the pre-submission checks are tested
with tables and the dry run and the real submission see the same resolved `SlurmConfig`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from harness.config import SlurmConfig
from harness.distribute.choice import fit_problem, horovod_importable, resolve_strategy, tasks_per_node
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.distribute.measured import Choice

TIME_FORMATS = "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. 90, 01:30:00, 2-00:00:00)"

_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})")


def parse_time(text: str) -> int:
    """A Slurm time limit in whole minutes (seconds round up), in any format sbatch accepts."""
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"malformed time limit {text!r}: use {TIME_FORMATS}")
    parts = [int(part) for part in match["clock"].split(":")]
    days = int(match["days"]) if match["days"] is not None else None
    seconds = _clock_seconds(parts, days, text)
    if seconds <= 0:
        raise ConfigError(f"time limit {text!r} must be longer than zero")
    return math.ceil(seconds / 60)


def _clock_seconds(parts: list[int], days: int | None, text: str) -> int:
    if days is None:
        if len(parts) == 1:
            return parts[0] * 60
        hours, minutes, seconds = ([0] + parts)[-3:]
        has_hours = len(parts) == 3
    else:
        hours, minutes, seconds = (parts + [0, 0])[:3]
        has_hours = True
    if (has_hours and minutes > 59) or seconds > 59:
        raise ConfigError(f"malformed time limit {text!r}: minutes and seconds must be below 60 ({TIME_FORMATS})")
    return (days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def format_time(minutes: int) -> str:
    """Minutes as Slurm's D-HH:MM:SS (or HH:MM:SS under a day), as squeue prints limits."""
    days, rest = divmod(minutes, 1440)
    clock = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{clock}" if days else clock


def merge(
    profile: SlurmConfig | None, config: SlurmConfig, flags: Mapping[str, Any], source: str = "command line"
) -> SlurmConfig:
    """flags > keys set in the config's `slurm:` section > the profile's keys > defaults.

    Only keys a layer actually sets take part, so a profile's partition survives a config that
    does not name one. `env` and `additional` are merged key by key (the later layer wins on a
    key); `setup` lines are concatenated, the profile's first (site modules before the
    experiment's own lines).
    """
    merged: dict[str, Any] = {}
    for layer in (profile, config):
        if layer is not None:
            _apply(merged, {key: getattr(layer, key) for key in layer.model_fields_set})
    _apply(merged, {key: value for key, value in flags.items() if value is not None})
    try:
        return SlurmConfig.model_validate(merged)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid Slurm resources from the {source}: {problems}") from None


def _apply(merged: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if key in ("env", "additional") and key in merged:
            merged[key] = {**merged[key], **value}
        elif key == "setup" and key in merged:
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value


def default_tasks_per_node(strategy: str, gpus_per_node: int) -> int:
    """One process per GPU for the multi-process strategies and `auto`, one per node otherwise."""
    return tasks_per_node(strategy, gpus_per_node)


def with_tasks(slurm: SlurmConfig, strategy: str) -> SlurmConfig:
    """The resources with `tasks_per_node` filled in from the strategy when not given."""
    if slurm.tasks_per_node is not None:
        return slurm
    tasks = default_tasks_per_node(strategy, slurm.gpus_per_node)
    return slurm.model_copy(update={"tasks_per_node": tasks})


def effective_strategy(
    strategy: str, total_tasks: int, gpus_per_node: int, executor: str = "slurm", prefer: str | None = None
) -> str:
    """The concrete strategy the job runs (harness.distribute.choice's rule); for `auto` with several
    tasks, `prefer` is what harness validate measured faster on the target nodes."""
    launcher = "launcher" if executor == "local" else "slurm"
    return resolve_strategy(strategy, processes=total_tasks, gpus=gpus_per_node, launcher=launcher, prefer=prefer)


def measured_choice(
    strategy: str, slurm: SlurmConfig, partition: str | None, environ: Mapping[str, str]
) -> tuple[Choice | None, list[str]]:
    """What harness validate measured faster where the job will run, for `auto` with several tasks:
    the records of `partition` (the one asked for, or the cluster's default), or of this machine
    for the local executor; None when there is nothing to choose. Also the store's warnings."""
    if strategy != "auto" or total_tasks(slurm) < 2:
        return None, []
    from harness.distribute.measured import Choice, stored_choice

    installed = horovod_importable()
    if slurm.executor == "local":
        return stored_choice(total_tasks(slurm), environ, horovod_installed=installed)
    if partition is None:
        return Choice("multiworker", "auto: multiworker (the partition is not known: no measurement read)"), []
    return stored_choice(total_tasks(slurm), environ, horovod_installed=installed, partition=partition)


def total_tasks(slurm: SlurmConfig) -> int:
    return slurm.nodes * (slurm.tasks_per_node or 1)


def check_fit(strategy: str, slurm: SlurmConfig) -> None:
    """Refuse a strategy that cannot use the resources asked for, before anything is submitted."""
    launcher = "launcher" if slurm.executor == "local" else "slurm"
    problem = fit_problem(strategy, slurm.nodes, slurm.tasks_per_node or 1, slurm.gpus_per_node, launcher)
    if problem:
        raise ConfigError(
            f"distribute.strategy={strategy!r} does not fit the resources: {problem}. Asked for: {describe(slurm)}"
        )
    if slurm.executor == "local" and slurm.nodes > 1:
        raise ConfigError(
            f"the local executor runs on this machine only: slurm.nodes must be 1. Received: slurm.nodes={slurm.nodes}"
        )
    if slurm.time_minutes * 60 <= slurm.signal_delay_s:
        raise ConfigError(
            f"the time limit ({slurm.time_minutes} min) must be longer than slurm.signal_delay_s="
            f"{slurm.signal_delay_s} s, the warning Slurm gives before the limit to save a checkpoint"
        )


def describe(slurm: SlurmConfig) -> str:
    """`2 nodes x 4 tasks (8), 4 GPUs/node, 8 CPUs/task, 02:00:00` for messages and summaries."""
    tasks_per_node = slurm.tasks_per_node or 1
    parts = [
        f"{slurm.nodes} node{'s' if slurm.nodes > 1 else ''} x {tasks_per_node} task"
        f"{'s' if tasks_per_node > 1 else ''} ({slurm.nodes * tasks_per_node} in total)",
        f"{slurm.gpus_per_node}{' ' + slurm.gpu_type if slurm.gpu_type else ''} GPUs/node",
        f"{slurm.cpus_per_task} CPUs/task",
        format_time(slurm.time_minutes),
    ]
    if slurm.mem_gb:
        parts.append(f"{slurm.mem_gb:g} GB/node")
    return ", ".join(parts)


def gpu_request(slurm: SlurmConfig) -> str | int | None:
    """The --gpus-per-node value: `a100:4` with a GPU type, else the count (None without GPUs)."""
    if not slurm.gpus_per_node:
        return None
    return f"{slurm.gpu_type}:{slurm.gpus_per_node}" if slurm.gpu_type else slurm.gpus_per_node
