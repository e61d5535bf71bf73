"""Stopping a run cleanly on the scheduler's signals, for `harness train` and sweep workers alike."""

from __future__ import annotations

import signal
import threading

TRAINING = "received {signal}: saving a checkpoint at the next step"
AGAIN = " (Ctrl-C again to stop at once, without one)"


class SignalStop:
    """A flag the training loop polls (call it): true once a stop signal arrived.

    `received` names the first signal, so the run can record a Ctrl-C as interrupted rather than
    preempted.
    """

    def __init__(self, message: str, interrupt: bool, interrupt_now: bool = False) -> None:
        self.message = message
        self.signals = (signal.SIGUSR2, signal.SIGTERM, *((signal.SIGINT,) if interrupt else ()))
        self.requested = threading.Event()
        self.received: str | None = None
        self.previous: dict[signal.Signals, object] = {}
        self.install(self.signals if interrupt_now else self.signals[:2])

    def __call__(self) -> bool:
        # TensorFlow's coordination service (multiworker) installs its own SIGTERM handler when the
        # strategy starts, which swallows the signal: take it back each time training asks. Ctrl-C
        # is taken only from then on: before the first step it still aborts the start at once.
        self.install(self.signals)
        return self.requested.is_set()

    def install(self, signals: tuple[signal.Signals, ...]) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                before = signal.signal(sig, self._request)
                self.previous.setdefault(sig, before)

    def restore(self) -> None:
        """Give the signals back (training is over): Ctrl-C stops the rest at once, as before."""
        if threading.current_thread() is threading.main_thread():
            for sig, before in self.previous.items():
                signal.signal(sig, before if before is not None else signal.SIG_DFL)  # type: ignore[arg-type]
            self.previous.clear()

    def _request(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.requested.is_set():
            raise KeyboardInterrupt
        print(self.message.format(signal=name) + (AGAIN if signum == signal.SIGINT else ""), flush=True)
        self.received = self.received or name
        self.requested.set()


def stop_on_signals(message: str = TRAINING, interrupt: bool = False, interrupt_now: bool = False) -> SignalStop:
    """SIGUSR2 (Slurm's warning before a time limit) or SIGTERM (cancel, preemption): a flag the
    training loop polls, so every rank checkpoints and stops at the same step.

    In an sbatch script, `#SBATCH --signal=USR2@120` gives training two minutes to save; the run
    then continues with `--resume` (exit code 75). `message` is printed when a signal arrives,
    with `{signal}` replaced by its name.

    With `interrupt` (a one-process run in a terminal), the first Ctrl-C does the same, so it costs
    no more than the steps since the last checkpoint; a second one stops at once (KeyboardInterrupt).
    It is taken from the first poll on, or at once with `interrupt_now` (sweep processes: Ctrl-C
    reaches every process of the terminal, and a trial must stop with a checkpoint like its worker).
    """
    return SignalStop(message, interrupt, interrupt_now)
