"""The run directory: the contract between training, reports, Slurm, sharing, sweeps and validation.

One owner for its layout (`layout`: file names, `RunDir`, the `RunState` lifecycle), its records
(`records`: state.json, submission.json, report.json; `metrics`: metrics.jsonl) and its creation
and replacement (`lifecycle`). Every other module reads and writes a run directory through here,
so no file name or state string is spelled twice. TensorFlow-free, and it imports no other layer
of harness, so every layer may import it.
"""

from __future__ import annotations

from harness.rundir.layout import ENDED, FINAL, STOPPED, RunDir, RunDirWarning, RunState
from harness.rundir.metrics import MetricsLine, append_metrics, last_metrics, metrics_until, read_metrics
from harness.rundir.records import (
    REPORT_SCHEMA_VERSION,
    StateRecord,
    SubmissionRecord,
    read_object,
    read_report,
    read_state,
    read_submission,
    recorded_state,
    update_submission,
    write_report_json,
    write_state,
    write_submission,
)

__all__ = [
    "ENDED",
    "FINAL",
    "REPORT_SCHEMA_VERSION",
    "STOPPED",
    "MetricsLine",
    "RunDir",
    "RunDirWarning",
    "RunState",
    "StateRecord",
    "SubmissionRecord",
    "append_metrics",
    "last_metrics",
    "metrics_until",
    "read_metrics",
    "read_object",
    "read_report",
    "read_state",
    "read_submission",
    "recorded_state",
    "update_submission",
    "write_report_json",
    "write_state",
    "write_submission",
]
