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
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from harness.errors import Preempted, UserInputError
from harness.sweep import ledger, trials
from harness.sweep.spec import Spec, load_spec
from harness.sweep.study import Claimed, claim, load_study, tell, wait_for_journal
from harness.sweep.sweepdir import SweepDir, open_sweep_dir

if TYPE_CHECKING:
    from harness.sweep.pruning import PruningReporter

StopFlag = Callable[[], bool]


def worker_id(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Who runs trials: the array task (its id survives a requeue), else this process."""
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    if environ.get("SLURM_JOB_ID"):
        return str(environ["SLURM_JOB_ID"])
    return f"local:{socket.gethostname()}:{os.getpid()}"


def job_id(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID") or None


def run_worker(path: Path, stop_requested: StopFlag) -> int:
    """Run trials until the budget is spent or a stop is requested; returns how many were run."""
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
        run_trial(sweep, spec, study, claimed, stop_requested)
        done += 1
    return done


def run_trial(sweep: SweepDir, spec: Spec, study: optuna.Study, claimed: Claimed, stop_requested: StopFlag) -> None:
    """Train one trial, with retries, and record its end in the ledger and the study."""
    from harness.sweep.pruning import PruningReporter
    from harness.train.request import RunRequest
    from harness.train.run import train

    record = claimed.record
    run_dir = sweep.trial_dir(record.trial).absolute()
    config = spec.trial_config(record.params, run_dir.parent, run_dir.name)
    reporter = PruningReporter(sweep, record, claimed.trial, spec.model.objective.metric)
    command = f"harness sweep resume {sweep.path}"
    started = time.monotonic()
    print(f"sweep: trial {record.trial} {'resumed' if claimed.resumed else 'started'}: {record.params}", flush=True)
    while True:
        request = RunRequest(config, None, resume="auto", command=command)
        try:
            train(request, [reporter.callback()], stop_requested=lambda: stop_requested() or reporter.pruned)
        except Preempted:
            _stopped(sweep, study, record, reporter, run_dir, started)
            return
        except UserInputError as err:  # a drawn combination the run refuses: another attempt cannot help
            _failed(sweep, study, record, run_dir, started, err)
            return
        except Exception as err:  # noqa: BLE001 - any failure of a trial is recorded, and the sweep goes on
            traceback.print_exc()
            if record.attempts > spec.model.retries:
                _failed(sweep, study, record, run_dir, started, err)
                return
            record.attempts += 1
            record.error = f"{type(err).__name__}: {err}"[:500]
            ledger.write(sweep, record)
            print(f"sweep: trial {record.trial} failed; attempt {record.attempts} of {spec.model.retries + 1}")
            continue
        _completed(sweep, spec, study, record, run_dir, started)
        return


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
) -> None:
    _finish(record, run_dir, started)
    value = trials.objective_value(run_dir, spec.model.objective.metric)
    if value is None:
        _failed(sweep, study, record, run_dir, started, RuntimeError(f"no {spec.model.objective.metric} in {run_dir}"))
        return
    record.state, record.objective, record.error = ledger.COMPLETED, value, None
    ledger.write(sweep, record)
    tell(study, record.trial, value)
    print(f"sweep: trial {record.trial} completed: {spec.model.objective.metric}={value:.6g}", flush=True)


def _stopped(
    sweep: SweepDir,
    study: optuna.Study,
    record: ledger.TrialRecord,
    reporter: PruningReporter,
    run_dir: Path,
    started: float,
) -> None:
    _finish(record, run_dir, started)
    if reporter.pruned:
        trials.write_pruned(run_dir, record.epochs)
        record.state = ledger.PRUNED
        ledger.write(sweep, record)
        tell(study, record.trial, state=optuna.trial.TrialState.PRUNED)
        print(f"sweep: trial {record.trial} pruned after {record.epochs} epoch(s)", flush=True)
        return
    record.state = ledger.INTERRUPTED
    ledger.write(sweep, record)
    print(f"sweep: trial {record.trial} interrupted; `harness sweep resume {sweep.path}` continues it", flush=True)


def _failed(
    sweep: SweepDir, study: optuna.Study, record: ledger.TrialRecord, run_dir: Path, started: float, err: BaseException
) -> None:
    _finish(record, run_dir, started)
    record.state, record.error = ledger.FAILED, f"{type(err).__name__}: {err}"[:500]
    ledger.write(sweep, record)
    tell(study, record.trial, state=optuna.trial.TrialState.FAIL)
    print(f"sweep: trial {record.trial} failed after {record.attempts} attempt(s): {record.error}", flush=True)


def stop_on_signals() -> StopFlag:
    """SIGTERM or SIGUSR2 (cancel, preemption, time limit): the running trial checkpoints and stops."""
    requested = threading.Event()

    def request(signum: int, frame: object) -> None:
        print(f"sweep: received {signal.Signals(signum).name}: stopping at the next step", flush=True)
        requested.set()

    def install() -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGUSR2, signal.SIGTERM):
                signal.signal(sig, request)

    def stop_requested() -> bool:
        install()  # TensorFlow's coordination service may have taken SIGTERM over
        return requested.is_set()

    install()
    return stop_requested


class SweepWorker:
    """What each Slurm array task runs (pickled by submitit): the worker loop over one sweep."""

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = sweep_dir

    def __call__(self, task: int) -> int:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return run_worker(Path(self.sweep_dir), stop_on_signals())


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.sweep.worker SWEEP_DIR`: one local worker process."""
    args = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        run_worker(Path(args[0]), stop_on_signals())
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
