"""Stopping a run cleanly on the scheduler's signals, for `harness train` and sweep workers alike."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

TRAINING = "received {signal}: saving a checkpoint at the next step"


def stop_on_signals(message: str = TRAINING) -> Callable[[], bool]:
    """SIGUSR2 (Slurm's warning before a time limit) or SIGTERM (cancel, preemption): a flag the
    training loop polls, so every rank checkpoints and stops at the same step.

    In an sbatch script, `#SBATCH --signal=USR2@120` gives training two minutes to save; the run
    then continues with `--resume` (exit code 75). `message` is printed when a signal arrives,
    with `{signal}` replaced by its name.
    """
    requested = threading.Event()

    def request(signum: int, frame: object) -> None:
        print(message.format(signal=signal.Signals(signum).name), flush=True)
        requested.set()

    def install() -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGUSR2, signal.SIGTERM):
                signal.signal(sig, request)

    def stop_requested() -> bool:
        # TensorFlow's coordination service (multiworker) installs its own SIGTERM handler when the
        # strategy starts, which swallows the signal: take it back each time training asks.
        install()
        return requested.is_set()

    install()
    return stop_requested
