"""Evaluation of finished runs: test metrics, report.json / report.md / report.html with plots,
model cards, and comparisons across runs.

Nothing here imports TensorFlow or Keras: reports are rebuilt from the files in a run directory,
quickly, on machines without accelerators (login nodes, laptops).
"""

from __future__ import annotations

from harness.evaluate.gather import gather_reports
from harness.evaluate.metrics import evaluate_predictions
from harness.evaluate.model_card import write_model_card
from harness.evaluate.report import render_report, write_report
from harness.evaluate.store import REPORT_SCHEMA_VERSION, load_report

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "evaluate_predictions",
    "gather_reports",
    "load_report",
    "render_report",
    "write_model_card",
    "write_report",
]
