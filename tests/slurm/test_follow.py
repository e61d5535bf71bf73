"""Following a submitted job: its status from the logs it left, and cancelling it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.distribute.test_watchdog import PYTHON_TRACEBACK


def test_status_of_a_job_that_ended_before_training_names_the_exception(tmp_path: Path) -> None:
    from harness.slurm import follow

    run = follow.Run(tmp_path, {"job_id": "7", "executor": "slurm", "job_folder": str(tmp_path)})
    (tmp_path / "7_0_log.err").write_text("srun: starting\n" + PYTHON_TRACEBACK)
    found = follow.derive_status(run, {}, None, None, None, datetime.now(UTC))
    assert found.state == "failed" and found.error == "ValueError: Attempt to convert a value"


def test_cancel_still_cancels_a_run_whose_state_json_is_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.slurm import follow, scheduler

    cancelled: list[str] = []
    monkeypatch.setattr(scheduler, "cancel", cancelled.append)
    record = {"schema_version": 1, "job_id": "7", "executor": "slurm"}
    (tmp_path / "submission.json").write_text(json.dumps(record))
    (tmp_path / "state.json").write_text('{"state": "runn')
    _, message = follow.cancel(str(tmp_path))
    assert cancelled == ["7"] and message.startswith("cancelled job 7")
    assert follow.read_state(tmp_path)["state"] == "cancelled"


def test_cancel_of_a_local_job_whose_process_is_gone_changes_nothing(tmp_path: Path) -> None:
    """A local job that failed before it wrote its state stays failed, not relabelled cancelled."""
    import subprocess
    import sys

    from harness.slurm import follow

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"schema_version": 1, "job_id": ended.stdout.strip(), "executor": "local"}
    (tmp_path / "submission.json").write_text(json.dumps(record))
    (tmp_path / "state.json").write_text(json.dumps({"state": "running"}))
    _, message = follow.cancel(str(tmp_path))
    assert "already ended (its process is gone); nothing to cancel" in message
    assert follow.read_state(tmp_path)["state"] == "running"
    assert "cancelled" not in json.loads((tmp_path / "submission.json").read_text())
