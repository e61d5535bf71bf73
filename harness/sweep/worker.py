"""A sweep worker: claim a trial, train it as an ordinary run, tell the study; repeat until done.

Every Slurm array task (or local worker process) runs this loop, so nothing has to stay alive on
the login node: the study in the journal file is the only coordinator. A trial is trained by the
same library call as `harness train` into SWEEP_DIR/trials/NNNN; a failed one is tried again (from
its checkpoint if it has one) up to `retries` times; one the pruner stops ends with a checkpoint
and state `pruned`; one stopped by a signal stays `interrupted` for `harness sweep resume`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from harness.distribute.cluster import job_of
from harness.errors import Preempted, UserInputError
from harness.sweep import ledger, trials
from harness.sweep.spec import Spec, load_spec
from harness.sweep.study import Claimed, claim, load_study, tell, wait_for_journal
from harness.sweep.sweepdir import SweepDir, open_sweep_dir
from harness.train.signals import stop_on_signals

if TYPE_CHECKING:
    pass

StopFlag = Callable[[], bool]
SWEEP_STOP = "sweep: received {signal}: stopping at the next step"


def worker_id(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Who runs trials: the array task (its id survives a requeue), else this process."""
    return job_id(environ) or f"local:{socket.gethostname()}:{os.getpid()}"


def job_id(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The Slurm job this worker is: `ARRAY_TASK` for an array task, else the job id; None locally."""
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID") or None


def run_worker(path: Path, stop_requested: StopFlag, use_srun: bool = False) -> int:
    """Run trials until the budget is spent or a stop is requested; returns how many were run.

    Under Slurm (`use_srun`), a trial stopped by a signal the worker itself did not get (the time
    limit's USR2 goes to job steps only), or by a preemption (SIGTERM to every process, as for
    `scancel`, but the controller records it), makes the worker requeue its array task, which then
    continues the trial from its checkpoint. After a plain cancel the trial waits for `sweep resume`.
    """
    sweep = open_sweep_dir(path)
    wait_for_journal(sweep)
    spec = load_spec(sweep.spec)
    study = load_study(sweep, spec)
    me, job = worker_id(), job_id()
    done = 0
    while not stop_requested():
        claimed = claim(sweep, spec, study, me, job)
        if claimed is None:
            break
        ended = run_trial(sweep, spec, study, claimed, use_srun, stop_requested)
        done += 1
        if ended == ledger.INTERRUPTED:
            if use_srun and (not stop_requested() or chosen_for_preemption()):
                requeue_self(spec.base.slurm.max_requeues)
            break
    return done


def run_trial(
    sweep: SweepDir, spec: Spec, study: optuna.Study, claimed: Claimed, use_srun: bool, stop_requested: StopFlag
) -> str:
    """Run attempts of one trial (retrying failures), record its end; returns the ledger state."""
    record = claimed.record
    run_dir = sweep.trial_dir(record.trial).absolute()
    trials.prepare(run_dir, submission_record(sweep, spec, record, use_srun))
    command = trial_command(sweep, spec, record, use_srun)
    started = time.monotonic()
    print(f"sweep: trial {record.trial} {'resumed' if claimed.resumed else 'started'}: {record.params}", flush=True)
    while True:
        code = run_attempt(command, use_srun, stop_requested)
        record = _reloaded(sweep, record)
        if code == 0 and not _run_completed(run_dir):
            # An exit status alone is not proof: a step torn down by a cancel can report 0. A trial
            # recorded completed would never be resumed, and its half-trained objective would count.
            state = trials.read_state(run_dir).get("state", "not started")
            print(f"sweep: trial {record.trial}'s processes exited 0 but its run is {state}, not completed", flush=True)
            if stop_requested():
                return _stopped(sweep, study, record, run_dir, started)
            record.error = f"the trial's processes exited 0 before its run completed (state: {state})"
            return _failed(sweep, study, record, run_dir, started, 0)
        if code == 0:
            return _completed(sweep, spec, study, record, run_dir, started)
        if code == Preempted.exit_code:
            return _stopped(sweep, study, record, run_dir, started)
        if code == UserInputError.exit_code or record.attempts > spec.model.retries:
            return _failed(sweep, study, record, run_dir, started, code)
        record.attempts += 1
        ledger.write(sweep, record)
        print(
            f"sweep: trial {record.trial} failed (exit {code}); attempt {record.attempts} of {spec.model.retries + 1}"
        )


THREADS = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
"""Local trials share this machine's cores with the other workers: one thread per pool."""


def run_attempt(command: list[str], use_srun: bool, stop_requested: StopFlag) -> int:
    """Run the trial's processes; a stop the worker receives (`harness cancel`, SIGTERM) is passed on,
    so the trial stops with a checkpoint rather than running to its end."""
    proc = subprocess.Popen(command, env={**os.environ, **({} if use_srun else THREADS)})
    passed_on = False
    while True:
        try:
            return proc.wait(timeout=WAIT_SLICE_S)
        except subprocess.TimeoutExpired:
            if stop_requested() and not passed_on:
                proc.send_signal(signal.SIGTERM)
                passed_on = True


WAIT_SLICE_S = 0.5


def trial_command(sweep: SweepDir, spec: Spec, record: ledger.TrialRecord, use_srun: bool) -> list[str]:
    """The trial's processes: one locally; under Slurm an `srun` step over the trial's own resources."""
    python = [sys.executable, "-u", "-m", "harness.sweep.trial", str(sweep.path), str(record.trial)]
    if not use_srun:
        return python
    from harness.slurm.resources import with_tasks

    config = spec.trial_config(record.params, sweep.trials, sweep.trial_name(record.trial))
    slurm = with_tasks(config.slurm, config.distribute.strategy)
    tasks = slurm.tasks_per_node or 1
    return [
        "srun",
        f"--nodes={slurm.nodes}",
        f"--ntasks={slurm.nodes * tasks}",
        f"--ntasks-per-node={tasks}",
        "--kill-on-bad-exit=1",
        *python,
    ]


def submission_record(sweep: SweepDir, spec: Spec, record: ledger.TrialRecord, use_srun: bool) -> dict[str, Any]:
    """submission.json of a trial: the worker's job (array task, or local process) runs it now."""
    config = spec.trial_config(record.params, sweep.trials, sweep.trial_name(record.trial))
    return {
        "job_id": job_id() if use_srun else str(os.getpid()),
        "executor": "slurm" if use_srun else "local",
        "submitted": record.started,
        "command": f"harness sweep {sweep.path}",
        "run_dir": str(sweep.trial_dir(record.trial).absolute()),
        "job_folder": str(sweep.workers.absolute()),
        "tasks": 1,
        "epochs": config.training.epochs,
        "resources": config.slurm.model_dump(mode="json"),
        "sweep": str(sweep.path),
        "cancelled": None,
    }


def _run_completed(run_dir: Path) -> bool:
    """Whether the trial's chief recorded the run as trained to its end."""
    return trials.read_state(run_dir).get("state") == trials.COMPLETED


def _reloaded(sweep: SweepDir, record: ledger.TrialRecord) -> ledger.TrialRecord:
    """The trial's processes update epochs, the running objective and errors: take those over."""
    found = ledger.read(sweep, record.trial)
    if found is not None:
        record.epochs, record.objective, record.error = found.epochs, found.objective, found.error
    return record


def chosen_for_preemption() -> bool:
    from harness.slurm.job import preempted

    return preempted(job_of(os.environ).job_id)


def requeue_self(max_requeues: int) -> None:
    """Put this array task back in the queue (time limit or preemption), as submitted runs are."""
    from harness.slurm.scheduler import SchedulerUnavailable, run

    context = job_of(os.environ)
    restarts, job = context.restart_count, context.job_id
    if not job or restarts >= max_requeues:
        print(
            f"sweep: not requeueing (requeued {restarts} of at most {max_requeues} times); "
            "`harness sweep resume` continues the trial",
            flush=True,
        )
        return
    try:
        run(["scontrol", "requeue", job])
        print(f"sweep: requeued task {job} (requeue {restarts + 1} of at most {max_requeues})", flush=True)
    except SchedulerUnavailable as err:
        print(f"sweep: could not requeue ({err}); `harness sweep resume` continues the trial", flush=True)


def _finish(record: ledger.TrialRecord, run_dir: Path, started: float) -> None:
    history = trials.read_metrics(run_dir)
    record.epochs = len(history)
    record.wall_time_s = round(record.wall_time_s + time.monotonic() - started, 2)
    record.requeues = int(trials.read_state(run_dir).get("requeues", 0) or 0)
    rates = [line.get("samples_per_s") for line in history[1:] or history]
    numbers = sorted(float(r) for r in rates if isinstance(r, int | float))
    record.samples_per_s = numbers[len(numbers) // 2] if numbers else None


def _completed(
    sweep: SweepDir, spec: Spec, study: optuna.Study, record: ledger.TrialRecord, run_dir: Path, started: float
) -> str:
    _finish(record, run_dir, started)
    value = trials.objective_value(run_dir, spec.model.objective.metric)
    if value is None:
        record.error = f"the run has no {spec.model.objective.metric} (in {run_dir})"
        return _failed(sweep, study, record, run_dir, started, 0)
    record.state, record.objective, record.error = ledger.COMPLETED, value, None
    ledger.write(sweep, record)
    tell(study, record.trial, value)
    print(f"sweep: trial {record.trial} completed: {spec.model.objective.metric}={value:.6g}", flush=True)
    return record.state


def _stopped(sweep: SweepDir, study: optuna.Study, record: ledger.TrialRecord, run_dir: Path, started: float) -> str:
    """Exit 75: pruned (the trial's chief wrote state `pruned`) or stopped by a signal."""
    _finish(record, run_dir, started)
    if trials.read_state(run_dir).get("state") == trials.PRUNED:
        record.state = ledger.PRUNED
        ledger.write(sweep, record)
        tell(study, record.trial, state=optuna.trial.TrialState.PRUNED)
        print(f"sweep: trial {record.trial} pruned after {record.epochs} epoch(s)", flush=True)
        return record.state
    record.state = ledger.INTERRUPTED
    ledger.write(sweep, record)
    print(f"sweep: trial {record.trial} interrupted; `harness sweep resume {sweep.path}` continues it", flush=True)
    return record.state


def _failed(
    sweep: SweepDir, study: optuna.Study, record: ledger.TrialRecord, run_dir: Path, started: float, code: int
) -> str:
    _finish(record, run_dir, started)
    record.state = ledger.FAILED
    record.error = record.error or f"the trial's processes ended with exit code {code}"
    ledger.write(sweep, record)
    tell(study, record.trial, state=optuna.trial.TrialState.FAIL)
    print(f"sweep: trial {record.trial} failed after {record.attempts} attempt(s): {record.error}", flush=True)
    return record.state


class SweepWorker:
    """What each Slurm array task runs (pickled by submitit, one process per task): the worker loop."""

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = sweep_dir

    def __call__(self, task: int) -> int:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return run_worker(Path(self.sweep_dir), stop_on_signals(SWEEP_STOP), use_srun=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.sweep.worker SWEEP_DIR`: one local worker process."""
    args = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        run_worker(Path(args[0]), stop_on_signals(SWEEP_STOP, interrupt=True, interrupt_now=True))
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
