"""`harness sweep SPEC` and `harness sweep resume`: check, create the sweep directory, start workers.

Slurm: one job array of `parallelism` worker tasks (`--array=0-N%parallelism` caps how many run at
once), and the command returns at once. Local: the same worker loop in `parallelism` processes on
this machine, and the command waits for them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from harness import atomic
from harness.config import SlurmConfig, to_yaml, validate_config
from harness.errors import ConfigError, RunDirError, UserInputError
from harness.sweep import ledger
from harness.sweep.spec import RESOURCE_PARAMETERS, Spec, load_spec, sample_points
from harness.sweep.sweepdir import (
    SweepDir,
    check_new_target,
    new_sweep_dir,
    open_sweep_dir,
    pid_alive,
    read_submissions,
    record_submission,
)

EXECUTORS = ("slurm", "local")
THREADS = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
"""Local workers share this machine's cores: one thread per pool keeps them from fighting."""


def start(spec_path: Path, executor: str | None, *, resume: bool = False, overwrite: bool = False) -> str:
    """Check everything, then create the sweep and start its workers; returns what to print."""
    spec = load_spec(spec_path)
    path = spec.sweep_dir.absolute()
    check_new_target(path, resume=resume, overwrite=overwrite)
    if resume:
        print(adopt_changes(spec, path), end="", flush=True)  # now: the run below may end in an error
        return resume_sweep(path, executor)
    check_base_data(spec)
    kind = executor or spec.base.slurm.executor
    if overwrite and path.exists():
        check_idle(SweepDir(path))
    if kind == "local":
        check_local(spec)
    from harness.sweep import space

    space.make_sampler(spec), space.make_pruner(spec)  # their options are checked before anything is made
    params = _slurm_plan(spec, path) if kind == "slurm" else {}
    from harness.sweep.study import create_study, trial_budget

    with new_sweep_dir(path, overwrite=overwrite) as staging:
        atomic.write_text(staging.spec, yaml.safe_dump(normalized(spec, path), sort_keys=False))
        create_study(staging, load_spec(staging.spec))
    try:
        workers = min(spec.model.parallelism, trial_budget(spec))  # a worker more would find nothing to do
        return launch_workers(SweepDir(path), spec, kind, params, workers)
    except UserInputError:
        if kind == "slurm":  # nothing was submitted: leave nothing behind
            shutil.rmtree(path, ignore_errors=True)
        raise


RESUME_MAY_CHANGE = ("budget.", "parallelism", "retries")
"""What `harness sweep SPEC --resume` takes over from an edited spec: how much to run and how many at
once. Everything else decides what a trial is, and the trials so far were drawn and run under it."""


def adopt_changes(spec: Spec, path: Path) -> str:
    """`--resume` with an edited spec: a bigger budget, more parallelism or retries are taken over
    (written to SWEEP_DIR/sweep.yaml); any other change is refused, naming the keys. Returns what
    to print."""
    from harness.train.request import diff_keys

    sweep = open_sweep_dir(path)
    load_spec(sweep.spec)  # a damaged SWEEP_DIR/sweep.yaml is a clear error (exit 2), not a traceback
    stored = yaml.safe_load(sweep.spec.read_text())
    wanted = normalized(spec, path)
    stored.setdefault("code_dir", wanted["code_dir"])  # kept since sweeps record it
    # the stored base as this version reads it: a config key added since (with its default) is no change
    stored["base"] = yaml.safe_load(to_yaml(validate_config(stored.get("base") or {}, f"{sweep.spec} (base:)")))
    changed = diff_keys(stored, wanted)
    if not changed:
        return ""
    fixed = [key for key in changed if not key.startswith(RESUME_MAY_CHANGE)]
    if fixed:
        raise ConfigError(
            f"sweep spec {spec.path}: --resume continues {path} as it started, but the spec changed: "
            f"{', '.join(fixed[:8])}{' ...' if len(fixed) > 8 else ''} (compared with {sweep.spec}). Only "
            "budget, parallelism and retries may change on --resume. `harness sweep resume "
            f"{path}` continues it with the spec it started with; for another search, set another name: in the spec"
        )
    check_idle(sweep)
    atomic.write_text(sweep.spec, yaml.safe_dump(wanted, sort_keys=False))
    return f"sweep {path}: taken over from {spec.path}: {', '.join(changed)}\n"


def check_base_data(spec: Spec) -> None:
    """A data file that is not there fails every trial: say so before creating anything."""
    from harness.slurm.submit import check_data

    if "data.path" in {p.key for p in spec.parameters}:
        return
    try:
        check_data(spec.base)
    except UserInputError as err:
        raise type(err)(f"sweep spec {spec.path}: base config: {err}") from None


def normalized(spec: Spec, path: Path) -> dict[str, Any]:
    """The spec as the sweep directory keeps it: base config inline, absolute paths, sampler explicit."""
    data = spec.model.model_dump(mode="json")
    data.update(name=path.name, output_dir=str(path.parent), base=spec.base_raw, slurm={}, code_dir=str(spec.code_dir))
    data["sampler"]["name"] = spec.sampler_name
    return data


def _slurm_plan(spec: Spec, path: Path) -> dict[str, Any]:
    from harness.slurm.arrays import plan_array
    from harness.slurm.script import with_huge_pages

    _, params = plan_array(resource_variants(spec), spec.base.distribute.strategy, f"sweep-{path.name}")
    # the trials' srun steps inherit the worker's environment
    return with_huge_pages(params, spec.base.distribute.huge_pages)


def resource_variants(spec: Spec) -> list[SlurmConfig]:
    """The `slurm:` section of every combination of swept resource values (their extremes)."""
    keys = [p for p in spec.parameters if p.key in RESOURCE_PARAMETERS]
    combos: list[dict[str, Any]] = [{}]
    for parameter in keys:
        combos = [{**combo, parameter.key: value} for combo in combos for value in sample_points(parameter)]
    return [spec.trial_config(combo, spec.sweep_dir / "trials", "0000").slurm for combo in combos]


def check_local(spec: Spec) -> None:
    """Local trials run one process each (one worker process per trial here)."""
    for slurm in resource_variants(spec):
        if slurm.nodes > 1 or (slurm.tasks_per_node or 1) > 1:
            raise ConfigError(
                f"sweep spec {spec.path}: --executor local runs each trial as one process, but a trial asks for "
                f"slurm.nodes={slurm.nodes}, slurm.tasks_per_node={slurm.tasks_per_node}; use --executor slurm"
            )


def resume_sweep(path: Path, executor: str | None) -> str:
    """Continue after a cancel, a crash or a node failure: interrupted trials first, then the budget."""
    from harness.sweep.study import load_study, reconcile, trial_budget

    sweep = open_sweep_dir(path)
    spec = load_spec(sweep.spec)
    check_idle(sweep)
    study = load_study(sweep, spec)
    marked = reconcile(sweep, spec, study)
    interrupted = sum(1 for r in ledger.read_all(sweep) if r.state == ledger.INTERRUPTED)
    new = max(0, trial_budget(spec) - len(study.get_trials(deepcopy=False)))
    if interrupted + new == 0:
        return f"sweep {sweep.path}: nothing left to run (budget spent, no interrupted trial)\n"
    previous = read_submissions(sweep)
    kind = executor or (previous[-1].get("executor") if previous else None) or spec.base.slurm.executor
    params = _slurm_plan(spec, sweep.path) if kind == "slurm" else {}
    note = f"resuming {interrupted} interrupted trial(s) ({', '.join(map(str, marked)) or 'none newly'}), {new} new\n"
    return note + launch_workers(sweep, spec, str(kind), params, min(spec.model.parallelism, interrupted + new))


def launch_workers(sweep: SweepDir, spec: Spec, kind: str, params: dict[str, Any], workers: int) -> str:
    if kind == "slurm":
        return _submit_slurm(sweep, spec, params, workers)
    code = run_local(sweep, workers)
    from harness.sweep.status import format_status, read_status

    text = format_status(read_status(sweep))
    if code != 0:
        raise LocalWorkersFailed(f"{text}local workers ended with exit code {code}; see {sweep.workers}")
    states = {record.state for record in ledger.read_all(sweep)}
    if states == {ledger.FAILED}:
        raise LocalWorkersFailed(
            f"{text}every trial failed, so the sweep has no result: each trial's error is above, its log in "
            f"{sweep.trials}/NNNN and {sweep.workers}"
        )
    return text


class LocalWorkersFailed(RunDirError):
    """A local worker process failed outside any trial (its log in SWEEP_DIR/workers says why)."""

    exit_code = 1


def _submit_slurm(sweep: SweepDir, spec: Spec, params: dict[str, Any], workers: int) -> str:
    from harness.slurm.arrays import submit_array
    from harness.sweep.worker import SweepWorker

    job_ids = submit_array(
        sweep.workers,
        params,
        spec.base.slurm.max_requeues,
        SweepWorker(str(sweep.path)),
        workers,
        spec.model.parallelism,
    )
    array = job_ids[0].split("_")[0] if job_ids else ""
    record_submission(sweep, {"executor": "slurm", "array_job_id": array, "job_ids": job_ids, "tasks": workers})
    return (
        f"submitted Slurm job array {array}: {workers} worker task(s), at most {spec.model.parallelism} at once\n"
        f"sweep directory: {sweep.path}\n"
        f"follow it with: harness sweep status {sweep.path}\n"
        f"dashboard:      optuna-dashboard {sweep.journal}\n"
    )


def run_local(sweep: SweepDir, workers: int) -> int:
    """Start `workers` worker processes here and wait for them; returns the worst exit code."""
    env = {**os.environ, **THREADS, "PYTHONUNBUFFERED": "1"}
    atomic.make_dirs(sweep.workers)
    procs = []
    for index in range(workers):
        # named as submitit names a task's log, by process id, so `harness logs` finds a trial's
        starting = sweep.workers / f".starting-{os.getpid()}-{index}.out"
        with open(starting, "ab") as log:
            command = [sys.executable, "-m", "harness.sweep.worker", str(sweep.path)]
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        starting.rename(sweep.workers / f"{procs[-1].pid}_0_log.out")
    record_submission(
        sweep, {"executor": "local", "host": socket.gethostname(), "pids": [p.pid for p in procs], "tasks": workers}
    )
    codes = []
    previous, previous_int = signal.signal(signal.SIGTERM, _terminated), signal.getsignal(signal.SIGINT)
    try:
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:
        # Ctrl-C reached the workers and their trials too; SIGTERM covers a signal sent here alone.
        # A second signal must not cut the passing on short: workers left untold would train on.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        print(
            f"sweep: stopping: each running trial saves a checkpoint; `harness sweep resume {sweep.path}` "
            "continues them",
            file=sys.stderr,
            flush=True,
        )
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait() for proc in procs]
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return max(codes, default=0)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM to a local sweep (`kill`, a batch system): stop the workers as Ctrl-C does."""
    raise KeyboardInterrupt


def alive_workers(sweep: SweepDir) -> list[str]:
    """Workers of this sweep that may still be running: local processes here, queued or running jobs."""
    found: list[str] = []
    slurm_arrays: list[str] = []
    for record in read_submissions(sweep):
        if record.get("executor") == "local" and record.get("host") == socket.gethostname():
            found.extend(f"process {pid}" for pid in record.get("pids", []) if pid_alive(int(pid)))
        elif record.get("executor") == "slurm" and record.get("array_job_id"):
            slurm_arrays.append(str(record["array_job_id"]))
    if slurm_arrays:
        from harness.slurm.arrays import active

        found.extend(f"job {job}" for job in active(slurm_arrays))
    return found


def check_idle(sweep: SweepDir) -> None:
    """Resume and overwrite need every worker gone: two workers on one trial would clash."""
    try:
        alive = alive_workers(sweep)
    except Exception as err:  # noqa: BLE001 - the scheduler could not be asked
        raise ConfigError(f"cannot tell whether the workers of {sweep.path} still run: {err}") from None
    if alive:
        raise RunDirError(
            f"sweep {sweep.path} is still running ({', '.join(alive[:5])}); wait for it, or cancel its workers "
            "first (scancel ARRAY_ID, or stop the local processes)"
        )


def check_executor(kind: str) -> None:
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}. Received: {kind!r}")
