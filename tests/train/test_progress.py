"""Progress output: one line per epoch for logs, a bar on a terminal."""

from __future__ import annotations

import io

from harness.train.progress import BarReporter, LineReporter, format_logs


def test_line_reporter_prints_one_line_per_epoch() -> None:
    stream = io.StringIO()
    reporter = LineReporter(stream)
    reporter.start_epoch(1, 2, 10, 0)
    reporter.update(5, {"loss": 1.0})
    reporter.end_epoch(1, 2, {"loss": 0.5, "lr": 0.001, "samples_per_s": 1234.5})
    assert stream.getvalue() == "epoch 1/2 loss=0.5000 lr=0.001 samples_per_s=1234\n"
    assert format_logs({"epoch": 3, "accuracy": 0.25}) == "accuracy=0.2500"


def test_bar_reporter_renders_on_a_terminal() -> None:
    reporter = BarReporter()
    reporter.console.file = io.StringIO()
    reporter.start_epoch(1, 1, 4, 0)
    reporter.update(4, {"loss": 0.1})
    reporter.end_epoch(1, 1, {"loss": 0.1})
    reporter.close()
    assert "epoch 1/1 loss=0.1000" in reporter.console.file.getvalue()

