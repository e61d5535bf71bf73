"""`harness submit`: plan a job from the config, check it, then submit it or show it.

Planning is separate from submitting: every check runs before anything is created, so a
rejected job leaves no run directory behind, and `--dry-run` shows the plan the real
submission would use, down to the batch script.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import Config, load_config, to_yaml
from harness.envinfo import utc_now
from harness.errors import ConfigError, DataError, RunDirError, UserInputError
from harness.rundir import RunDir, lifecycle
from harness.slurm import backends, records, scheduler
from harness.slurm.job import TrainJob
from harness.slurm.profiles import resolve_profile
from harness.slurm.resources import (
    check_fit,
    describe,
    effective_strategy,
    measured_choice,
    merge,
    total_tasks,
    with_tasks,
)
from harness.slurm.scheduler import Partition, SchedulerUnavailable
from harness.slurm.script import check_launch, check_script_values, with_huge_pages, with_launch

GRACE_EXTRA_S = 60
"""How long past the signal delay a stopped non-chief rank waits to be ended by the requeue."""


class SubmitError(UserInputError):
    """The scheduler refused the job (bad account, QOS, resources...); nothing was submitted."""


@dataclass(frozen=True)
class SubmitOptions:
    """What the user asked for: the config, its overrides and resource flags (SlurmConfig keys)."""

    config_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    flags: Mapping[str, Any] = field(default_factory=dict)
    profile: str | None = None
    profiles_file: Path | None = None
    overwrite: bool = False
    command: str = ""


@dataclass(frozen=True)
class Plan:
    """A checked job: the resolved config (absolute paths, resolved `slurm:`) and how to run it."""

    config: Config
    config_path: Path | None
    run_dir: Path
    strategy: str
    job_name: str
    partition: Partition | None
    notes: tuple[str, ...] = ()
    strategy_reason: str = ""
    """Why `auto` became `strategy` (empty when the config named a strategy or one task runs)."""

    @property
    def executor(self) -> backends.Kind:
        return self.config.slurm.executor

    @property
    def folder(self) -> Path:
        return RunDir(self.run_dir).job_folder

    @property
    def params(self) -> dict[str, Any]:
        params = backends.parameters_for(self.executor, self.config.slurm, self.job_name)
        params = with_huge_pages(params, self.config.distribute.huge_pages)
        if self.executor != "slurm":
            return params
        return with_launch(params, self.strategy, self.config.distribute.horovod_controller)


@dataclass(frozen=True)
class Submitted:
    job_id: str
    run_dir: Path
    script: Path | None
    executor: str


PartitionQuery = Callable[[], list[Partition]]


def plan(options: SubmitOptions, partitions: PartitionQuery | None = None, dry_run: bool = False) -> Plan:
    """Load, resolve and check everything; raises a UserInputError (exit 2) on the first problem."""
    config = load_config(options.config_path, options.overrides)
    config_path = options.config_path.absolute() if options.config_path else None
    profile = resolve_profile(options.profile or config.slurm.profile, options.profiles_file)
    slurm = with_tasks(merge(profile, config.slurm, options.flags), config.distribute.strategy)
    check_fit(config.distribute.strategy, slurm)
    base_dir = config_path.parent if config_path else Path.cwd()
    config = resolved_config(config, base_dir).model_copy(update={"slurm": slurm})
    run_dir = Path(config.run.output_dir) / config.run.name
    job_name = slurm.job_name or config.run.name
    check_script_values(slurm, job_name, run_dir)
    check_data(config)
    partition, notes = _partition(slurm.executor, config, partitions or scheduler.query_partitions, dry_run)
    if not dry_run:
        check_run_dir(run_dir, options.overwrite, Path(config.run.output_dir))
    elif run_dir.exists() and not options.overwrite:
        notes = (*notes, f"{run_dir} exists: submitting needs --overwrite or another run.name")
    where = partition.name if partition else slurm.partition
    measured, warnings = measured_choice(config.distribute.strategy, slurm, where, os.environ)
    prefer = measured.strategy if measured else None
    strategy = effective_strategy(config.distribute.strategy, total_tasks(slurm), slurm.gpus_per_node,
                                  slurm.executor, prefer)
    reason = ""
    if measured is not None:  # every task receives the concrete strategy: ranks never decide `auto` apart
        reason = measured.reason if strategy == measured.strategy else f"auto: {strategy}"
        config = config.model_copy(update={"distribute": config.distribute.model_copy(update={"strategy": strategy})})
        notes = (*notes, *(f"warning: {w}" for w in warnings), reason)
    check_launch(slurm.executor, strategy, config.distribute.horovod_controller)
    return Plan(config, config_path, run_dir, strategy, job_name, partition, notes, reason)


def resolved_config(config: Config, base_dir: Path) -> Config:
    """Absolute data and output paths, so the job finds them whatever its working directory."""
    updates: dict[str, Any] = {
        "run": config.run.model_copy(update={"output_dir": str(Path(config.run.output_dir).absolute())})
    }
    if config.data.path and not Path(config.data.path).is_absolute():
        updates["data"] = config.data.model_copy(update={"path": str((base_dir / config.data.path).absolute())})
    return config.model_copy(update=updates)


def check_data(config: Config) -> None:
    if config.data.path and not Path(config.data.path).exists():
        raise DataError(f"data.path {config.data.path} does not exist (dataset {config.data.dataset!r})")


def _partition(
    kind: str, config: Config, partitions: PartitionQuery, dry_run: bool
) -> tuple[Partition | None, tuple[str, ...]]:
    if kind != "slurm":
        return None, ()
    try:
        known = partitions()
    except SchedulerUnavailable as err:
        if dry_run:
            return None, (f"partition not checked: {err}",)
        raise ConfigError(f"cannot submit to Slurm: {err}. Try --dry-run, or --executor local to run here") from None
    return scheduler.check_partition(config.slurm, known), ()


def check_run_dir(run_dir: Path, overwrite: bool, output_dir: Path) -> None:
    """Never replace a run by accident, nor one whose job is still queued or running, nor anything
    that is not a run directory."""
    if not (run_dir.exists() or run_dir.is_symlink()):
        return
    if not overwrite:
        raise RunDirError(
            f"run directory {run_dir} already exists. Use --overwrite to replace it, or choose another "
            "name with run.name=NEW_NAME (a requeued job resumes by itself; no new submission is needed)"
        )
    active = active_job(run_dir)
    if active:
        raise RunDirError(
            f"run directory {run_dir} belongs to job {active}, which is still queued or running; "
            f"cancel it first (harness cancel {run_dir})"
        )
    lifecycle.check_removable(run_dir, output_dir)


def active_job(run_dir: Path) -> str | None:
    try:
        record = records.read_submission(run_dir)
    except RunDirError:
        return None
    job_id = str(record.get("job_id", ""))
    if not job_id or record.get("executor") != "slurm":
        return None
    try:
        info = scheduler.job_info(job_id)
    except SchedulerUnavailable:
        return None
    return job_id if info is not None and info.state in scheduler.ACTIVE else None


def submit(plan: Plan, command: str) -> Submitted:
    """Create the run directory, submit the job and record it; on failure nothing is left behind."""
    aside = None
    if plan.run_dir.exists() or plan.run_dir.is_symlink():  # --overwrite: kept aside until the job is accepted
        aside = lifecycle.set_aside(plan.run_dir, Path(plan.config.run.output_dir))
    try:
        plan.run_dir.mkdir(parents=True)
        lifecycle.write_marker(plan.run_dir, "harness submit")
        plan.folder.mkdir()
        RunDir(plan.run_dir).job_config.write_text(to_yaml(plan.config))
        job = backends.submit(
            plan.executor, plan.folder, plan.params, plan.config.slurm.max_requeues, make_job(plan, command)
        )
    except BaseException as err:
        shutil.rmtree(plan.run_dir, ignore_errors=True)
        if aside is not None:
            os.rename(aside, plan.run_dir)
        if isinstance(err, Exception):
            raise SubmitError(f"the job was not submitted: {_first_line(err)}") from err
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    script = job.paths.submission_file if plan.executor == "slurm" else None
    records.write_submission(plan.run_dir, submission_record(plan, job.job_id, script, command))
    records.remember_job(job.job_id, plan.executor, plan.run_dir)
    return Submitted(job.job_id, plan.run_dir, script, plan.executor)


def make_job(plan: Plan, command: str) -> TrainJob:
    grace = plan.config.slurm.signal_delay_s + GRACE_EXTRA_S
    config_path = str(plan.config_path) if plan.config_path else None
    return TrainJob(str(plan.run_dir), config_path, command, plan.config.slurm.max_requeues, grace)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    sbatch = [line for line in lines if "error" in line.lower()]
    return (sbatch or lines or [type(err).__name__])[-1]


def submission_record(plan: Plan, job_id: str, script: Path | None, command: str) -> dict[str, Any]:
    slurm = plan.config.slurm
    return {
        "job_id": job_id,
        "executor": plan.executor,
        "submitted": utc_now(),
        "command": command,
        "run_dir": str(plan.run_dir),
        "config": str(RunDir(plan.run_dir).job_config),
        "script": str(script) if script else None,
        "job_folder": str(plan.folder),
        "strategy": plan.strategy,
        "strategy_reason": plan.strategy_reason or None,
        "tasks": total_tasks(slurm),
        "epochs": plan.config.training.epochs,
        "partition": plan.partition.name if plan.partition else slurm.partition,
        "resources": slurm.model_dump(mode="json"),
        "cancelled": None,
    }


def run(options: SubmitOptions, dry_run: bool = False) -> str:
    """`harness submit`: check, then show the plan or submit it; returns what to print."""
    job_plan = plan(options, dry_run=dry_run)
    if dry_run:
        return render_dry_run(job_plan)
    done = submit(job_plan, options.command)
    kind = "Slurm job" if done.executor == "slurm" else "local job (process)"
    return (
        f"submitted {kind} {done.job_id}\n"
        + (f"strategy: {job_plan.strategy} ({job_plan.strategy_reason})\n" if job_plan.strategy_reason else "")
        + f"run directory: {done.run_dir}\n"
        f"follow it with: harness status {done.run_dir}   harness logs {done.run_dir}\n"
    )


def requested_strategy(plan: Plan) -> str:
    """What the config asked for: `auto` when the planner resolved it into the job's config."""
    return "auto" if plan.strategy_reason else plan.config.distribute.strategy


def render_dry_run(plan: Plan) -> str:
    """The plan as people read it: resources, raw setup lines, the exact script, every rank's view."""
    slurm = plan.config.slurm
    partition = f"; partition {plan.partition.name} ({plan.partition.nodes} nodes)" if plan.partition else ""
    lines = [
        "harness submit --dry-run: nothing was submitted or created.",
        f"run directory: {plan.run_dir} (job logs in {plan.folder})",
        f"executor:      {plan.executor}",
        f"resources:     {describe(slurm)}{partition}",
        f"strategy:      {requested_strategy(plan)}"
        + (f" -> {plan.strategy}" if plan.strategy != requested_strategy(plan) else ""),
        f"requeues:      at most {slurm.max_requeues}, signal {slurm.signal_delay_s} s before the time limit",
        *[f"note:          {note}" for note in plan.notes],
    ]
    if slurm.setup:
        lines.append("raw setup lines (slurm.setup, run as written, not quoted):")
        lines.extend(f"  {line}" for line in slurm.setup)
    lines.append(f"----- {'batch script (submitit)' if plan.executor == 'slurm' else 'local executor'} -----")
    lines.append(_job_text(plan).rstrip("\n"))
    lines.append("----- per-rank environment -----")
    from harness.slurm.ranks import format_rank_views, local_rank_views, rank_views

    views = rank_views(slurm) if plan.executor == "slurm" else local_rank_views(slurm)
    lines.append(format_rank_views(views, plan.strategy, slurm.gpus_per_node, local=plan.executor == "local"))
    return "\n".join(lines) + "\n"


def _job_text(plan: Plan) -> str:
    if plan.executor == "slurm":
        return backends.batch_script(plan.folder, plan.params)
    params = plan.params
    setup = "".join(f"{line} && " for line in params.get("setup", []))
    return (
        f"{params['tasks_per_node']} process(es) on this machine, time limit {params['timeout_min']} min:\n"
        f"{setup}python -m submitit.local._local {plan.folder}"
    )
