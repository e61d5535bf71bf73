"""Progress people can see: a live bar on a terminal, one plain line per epoch in a log file."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Reporter(Protocol):
    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def update(self, steps_done: int, logs: dict[str, float]) -> None: ...
    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


def format_logs(logs: dict[str, Any]) -> str:
    """`loss=0.1234 accuracy=0.9500 ...` with the keys people look at first."""
    formats = {"lr": "{:.3g}", "samples_per_s": "{:.0f}", "epoch_time_s": "{:.2f}"}
    parts = []
    for key, value in logs.items():
        if isinstance(value, float):
            parts.append(f"{key}=" + formats.get(key, "{:.4f}").format(value))
    return " ".join(parts)


class LineReporter:
    """One line per epoch; right for Slurm output files and CI logs."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        pass

    def update(self, steps_done: int, logs: dict[str, float]) -> None:
        pass

    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        self.message(f"epoch {epoch}/{epochs} {format_logs(logs)}")

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class BarReporter(LineReporter):
    """A rich progress bar per epoch, leaving the epoch summary line behind."""

    def __init__(self) -> None:
        super().__init__()
        self.console = Console()
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[logs]}"),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.progress.start()

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            "train", total=steps, completed=done, epoch=f"{epoch}/{epochs}", logs=""
        )

    def update(self, steps_done: int, logs: dict[str, float]) -> None:
        self.progress.update(self.task, completed=steps_done, logs=format_logs(logs))

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def close(self) -> None:
        self.progress.stop()


class SilentReporter(LineReporter):
    def message(self, text: str) -> None:
        pass

    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        pass


def make_reporter(mode: str, enabled: bool = True) -> Reporter:
    """`auto` picks a bar on a terminal and plain lines otherwise; non-chief ranks stay silent."""
    if not enabled or mode == "none":
        return SilentReporter()
    if mode == "bar" or (mode == "auto" and sys.stdout.isatty()):
        return BarReporter()
    return LineReporter()
