"""One attempt at one trial, in processes of its own: `python -m harness.sweep.trial SWEEP_DIR N`.

The worker starts this for every attempt (under Slurm through `srun` over the trial's own nodes
and tasks, so a trial can be multi-node), which gives each trial fresh processes: a multi-process
strategy can be set up only once per process. Every rank trains; the chief reports each epoch's
objective to the study and stops all ranks when the pruner says so.

Exit codes are the run's: 0 completed, 75 stopped with a checkpoint (pruned: state.json says so),
2 the drawn configuration was refused, 1 any other failure (its message is in the ledger).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from harness.distribute.cluster import ClusterEnv, detect
from harness.errors import HarnessError, Preempted
from harness.sweep import ledger, trials
from harness.sweep.spec import load_spec
from harness.sweep.study import load_study, trial_handle
from harness.sweep.sweepdir import SweepDir, open_sweep_dir
from harness.sweep.worker import SWEEP_STOP
from harness.train.signals import SignalStop, stop_on_signals

if TYPE_CHECKING:
    from harness.sweep.pruning import PruningReporter


def run_attempt(path: Path, number: int, cluster: ClusterEnv) -> int:
    """Train trial `number` as this rank (`cluster`, the job context read once by `main`)."""
    # first: a signal while TensorFlow loads must not kill the trial; a local one also takes Ctrl-C
    stop = stop_on_signals(SWEEP_STOP, interrupt=cluster.world_size == 1, interrupt_now=True)
    from harness.sweep.pruning import PruningReporter
    from harness.train.request import RunRequest
    from harness.train.run import train

    sweep = open_sweep_dir(path)
    spec = load_spec(sweep.spec)
    record = ledger.read(sweep, number)
    if record is None:
        print(f"error: {sweep.ledger_file(number)} is missing or damaged", file=sys.stderr)
        return 2
    run_dir = sweep.trial_dir(number).absolute()
    config = spec.trial_config(record.params, run_dir.parent, run_dir.name)
    reporter = PruningReporter(
        sweep, record, trial_handle(load_study(sweep, spec), number), spec.model.objective.metric, cluster.is_chief
    )
    request = RunRequest(
        config, None, resume="auto", command=f"harness sweep resume {sweep.path}", code_dir=spec.code_dir
    )
    try:
        train(request, [reporter.callback()], stop_requested=TrialStop(stop, reporter), cluster=cluster)
    except Preempted as err:
        if reporter.pruned and reporter.is_chief:
            trials.write_pruned(run_dir, record.epochs, cluster)
        return err.exit_code
    except HarnessError as err:
        _note_error(sweep, number, err, reporter.is_chief)
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Exception as err:  # noqa: BLE001 - the worker decides whether to try again
        traceback.print_exc()
        _note_error(sweep, number, err, reporter.is_chief)
        return 1
    return 0


class TrialStop:
    """Stop on a signal or when the pruner says so; `received` names the signal, as training reads it."""

    def __init__(self, signals: SignalStop, reporter: PruningReporter) -> None:
        self.signals, self.reporter = signals, reporter

    def __call__(self) -> bool:
        return self.signals() or self.reporter.pruned

    @property
    def received(self) -> str | None:
        return self.signals.received


def _note_error(sweep: SweepDir, number: int, err: BaseException, is_chief: bool) -> None:
    """The chief keeps the failure's message in the ledger, where status shows it."""
    record = ledger.read(sweep, number)
    if is_chief and record is not None:
        record.error = f"{type(err).__name__}: {err}"[:500]
        ledger.write(sweep, record)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cluster = detect(os.environ)
    print(f"sweep: trial {args[1]} rank {cluster.rank} on node {cluster.node_name}", flush=True)
    try:
        return run_attempt(Path(args[0]), int(args[1]), cluster)
    finally:
        # Stopped or done: a stop the worker passes on late (Ctrl-C reached both) must not kill the
        # process while it exits, which would turn a trial stopped with a checkpoint into a failed one.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
