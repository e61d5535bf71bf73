"""Pruning across jobs: the trial's chief reports each epoch's objective to the study.

When the pruner says stop, the reporter raises a flag that the training loop polls as a stop
request, the same vote preemption uses, so every rank of a multi-process trial stops at the same
step and the chief saves a checkpoint. The worker then records the trial as pruned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import optuna

from harness.sweep import ledger
from harness.sweep.ledger import TrialRecord
from harness.sweep.sweepdir import SweepDir
from harness.sweep.trials import epoch_metric


class PruningReporter:
    """Per-epoch objective to the study and the ledger; `pruned` once the pruner has said so."""

    def __init__(
        self, sweep: SweepDir, record: TrialRecord, trial: optuna.Trial, metric: str, is_chief: bool
    ) -> None:
        self.sweep = sweep
        self.record = record
        self.trial = trial
        self.key = epoch_metric(metric)
        self.is_chief = is_chief
        self.pruned = False

    def report(self, epoch: int, logs: Mapping[str, Any]) -> None:
        if not self.is_chief:
            return
        value = logs.get(self.key) if self.key else None
        self.record.epochs = epoch
        if isinstance(value, int | float) and math.isfinite(value):
            self.record.objective = float(value)
            self.trial.report(float(value), epoch)
            self.pruned = self.pruned or self.trial.should_prune()
        ledger.write(self.sweep, self.record)

    def callback(self) -> keras.callbacks.Callback:
        return _EpochEnd(self)


class _EpochEnd(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    def __init__(self, reporter: PruningReporter) -> None:
        super().__init__()
        self.reporter = reporter

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.reporter.report(epoch + 1, logs or {})
