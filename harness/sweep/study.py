"""The Optuna study in the sweep directory's journal file, and how workers claim trials from it.

Claiming happens under a lock file beside the journal (Optuna's own O_EXCL lock, which works on
NFS): a worker takes, in this order, the trial it was running before a requeue, then a trial
`sweep resume` marked interrupted, then a new trial while the budget allows. Counting and asking
under one lock means concurrent workers never exceed the budget, and no trial number is handed
out twice (the journal numbers trials itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

from harness.sweep import ledger, space
from harness.sweep.ledger import TrialRecord
from harness.sweep.spec import Spec
from harness.sweep.sweepdir import STUDY_NAME, SweepDir

LOCK_GRACE_S = 60
"""A claim lock older than this was left by a killed worker and is broken (claims take < 1 s)."""

DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {"min": "minimize", "max": "maximize"}


def storage(sweep: SweepDir) -> JournalStorage:
    backend = JournalFileBackend(str(sweep.journal), lock_obj=JournalFileOpenLock(str(sweep.journal)))
    return JournalStorage(backend)


def create_study(sweep: SweepDir, spec: Spec) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage(sweep),
        sampler=space.make_sampler(spec),
        pruner=space.make_pruner(spec),
        study_name=STUDY_NAME,
        direction=DIRECTIONS[spec.model.objective.direction],
    )


def load_study(sweep: SweepDir, spec: Spec) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(
        study_name=STUDY_NAME, storage=storage(sweep), sampler=space.make_sampler(spec), pruner=space.make_pruner(spec)
    )


@contextmanager
def claim_lock(sweep: SweepDir) -> Iterator[None]:
    lock = JournalFileOpenLock(str(sweep.claim_lock), grace_period=LOCK_GRACE_S)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@dataclass
class Claimed:
    trial: optuna.Trial
    record: TrialRecord
    resumed: bool


def trial_handle(study: optuna.Study, number: int) -> optuna.Trial:
    """A live handle on a trial asked earlier (by this or another worker), to report and tell it."""
    study_id = study._storage.get_study_id_from_name(study.study_name)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)


def claim(sweep: SweepDir, spec: Spec, study: optuna.Study, worker: str, job_id: str | None) -> Claimed | None:
    """The next trial for `worker`, or None when the budget is spent and nothing is left to resume."""
    with claim_lock(sweep):
        records = ledger.read_all(sweep)
        pending = [r for r in records if r.state == ledger.RUNNING and r.worker == worker]
        pending += [r for r in records if r.state == ledger.INTERRUPTED]
        if pending:
            record = pending[0]
            record.state, record.worker, record.job_id, record.error = ledger.RUNNING, worker, job_id, None
            ledger.write(sweep, record)
            return Claimed(trial_handle(study, record.trial), record, resumed=True)
        if not budget_left(spec, study, records):
            return None
        if spec.sampler_name in space.RESEEDED and spec.model.sampler.seed is not None:
            study.sampler = space.make_sampler(spec, len(study.get_trials(deepcopy=False)))
        trial = study.ask()
        try:
            params = space.suggest(trial, spec)
        except Exception:
            tell(study, trial.number, state=optuna.trial.TrialState.FAIL)  # never run with half its values
            raise
        record = TrialRecord(trial.number, params, worker=worker, job_id=job_id)
        ledger.write(sweep, record)
        return Claimed(trial, record, resumed=False)


def trial_budget(spec: Spec) -> int:
    """Trials to run: the budget, or fewer when a grid has fewer points (each is run once)."""
    if spec.sampler_name == "grid":
        return min(spec.model.budget.trials, spec.grid_size())
    return spec.model.budget.trials


def budget_left(spec: Spec, study: optuna.Study, records: list[TrialRecord]) -> bool:
    if len(study.get_trials(deepcopy=False)) >= trial_budget(spec):
        return False
    limit = spec.model.budget.gpu_hours
    if limit is None:
        return True
    gpus = spec.base.slurm.nodes * spec.base.slurm.gpus_per_node
    return sum(r.wall_time_s for r in records) * gpus / 3600 < limit


def tell(
    study: optuna.Study, number: int, value: float | None = None, state: optuna.trial.TrialState | None = None
) -> None:
    """Record a trial's end. The grid sampler calls `study.stop()` once the grid is covered, which
    Optuna allows only inside `optimize()`; the result is stored before that, so that complaint is
    dropped."""
    try:
        study.tell(number, value, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def reconcile(sweep: SweepDir, spec: Spec, study: optuna.Study) -> list[int]:
    """After workers were lost: trials left running become interrupted, so a new worker takes them.

    Also covers a worker killed between asking a trial and recording it: the journal has the
    trial, the ledger does not, and it gets a record from the journal's parameters. Returns the
    trial numbers marked interrupted. Only call this when no worker of the sweep is alive.
    """
    marked: list[int] = []
    with claim_lock(sweep):
        known = {r.trial: r for r in ledger.read_all(sweep)}
        for frozen in study.get_trials(deepcopy=False):
            record = known.get(frozen.number)
            if record is None and frozen.state == optuna.trial.TrialState.RUNNING:
                if set(frozen.params) != {p.key for p in spec.parameters}:
                    # the worker died while drawing: run, it would train the base config under its number
                    tell(study, frozen.number, state=optuna.trial.TrialState.FAIL)
                    continue
                record = TrialRecord(frozen.number, space.decode_params(spec, frozen.params))
            if record is not None and record.state == ledger.RUNNING:
                record.state = ledger.INTERRUPTED
                ledger.write(sweep, record)
                marked.append(record.trial)
    return marked


def wait_for_journal(sweep: SweepDir, timeout_s: float = 30.0) -> None:
    """A worker on another node may start before the shared filesystem shows the journal."""
    deadline = time.monotonic() + timeout_s
    while not sweep.journal.is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
