"""Sweeps on a real Slurm: the two-node cluster of slurm/cluster.sh (the `slurm` fixture of conftest).

One job array per submission, at most `parallelism` array tasks running at once, and a cancel in
the middle followed by `harness sweep resume` ends with exactly the budgeted trials.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import cli
from harness.sweep import ledger
from harness.sweep.sweepdir import SweepDir, read_submissions
from tests.conftest import ROOT, wait_until
from tests.slurm import test_cluster_jobs

SLOW_EPOCHS = "tests.slurm.test_cluster_jobs:slow_epochs"
SWEEP_TIMEOUT_S = 400.0
POLL_S = 0.2
BASE: dict[str, Any] = {
    "run": {"seed": 1},
    "data": {"dataset": "iris"},
    "model": {"name": "mlp", "hidden_units": [16]},
    "training": {"epochs": 2, "batch_size": 16, "progress": "lines"},
    "report": {"html": False, "plots": False},
}


def write_spec(folder: Path, trials: int, base: dict[str, Any] = BASE) -> Path:
    spec = {
        "name": "s",
        "base": base,
        "parameters": {
            "training.optimizer.learning_rate": {"loguniform": [0.005, 0.1]},
            "model.hidden_units": {"choice": [[8], [16]]},
        },
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "budget": {"trials": trials},
        "parallelism": 2,
        "slurm": {"time_minutes": 10, "env": {"PYTHONPATH": str(ROOT)}},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def submit(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(["sweep", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "submitted Slurm job array" in out, out
    return out.split("submitted Slurm job array ")[1].split(":")[0]


def array_tasks(array: str) -> list[tuple[str, str]]:
    """(task id, state) of the array's tasks in squeue; pending ranges show as one line."""
    done = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i|%T"], capture_output=True, text=True)
    return [tuple(line.split("|", 1)) for line in done.stdout.split()]  # type: ignore[misc]


def wait_for_array(array: str, most_running: list[int]) -> None:
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while tasks := array_tasks(array):
        most_running.append(sum(1 for _, state in tasks if state == "RUNNING"))
        if time.monotonic() > deadline:
            subprocess.run(["scancel", array])
            pytest.fail(f"job array {array} did not finish within {SWEEP_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def release_requeued(task: str, timeout: float = 120.0) -> None:
    """Start a requeued array task now instead of after Slurm's hold (as tests/slurm/test_cluster_jobs.py does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = test_cluster_jobs.squeue(task)
        if state.startswith("PENDING"):
            time.sleep(2.0)  # slurmd refuses a credential made in the second the old one was revoked
            subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True)
            return
        if state.startswith(("COMPLETED", "FAILED", "CANCELLED")):  # (empty: between two runs of the job)
            pytest.fail(f"array task {task} ended instead of being requeued ({state!r})")
        time.sleep(0.25)
    pytest.fail(f"array task {task} was not requeued within {timeout:.0f} s")


def records(sweep_dir: Path) -> list[ledger.TrialRecord]:
    return ledger.read_all(SweepDir(sweep_dir))


def wait_for_second_epoch(sweep_dir: Path) -> None:
    """Until a trial is training its second epoch: far enough in for a checkpoint to resume from."""
    wait_until(
        lambda: any(r.state == "running" and r.epochs >= 2 for r in records(sweep_dir)),
        SWEEP_TIMEOUT_S,
        POLL_S,
        "a trial running its second epoch",
    )


def test_sweep_runs_as_one_capped_job_array(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    array = submit([str(write_spec(slurm, trials=6))], capsys)
    running: list[int] = []
    wait_for_array(array, running)
    assert max(running, default=0) <= 2 and max(running, default=0) >= 1
    sweep_dir = slurm / "sweeps" / "s"
    found = records(sweep_dir)
    assert [r.trial for r in found] == list(range(6)) and {r.state for r in found} == {"completed"}
    assert {str(r.job_id).split("_")[0] for r in found} == {array}, "every trial ran in the one array"
    assert len(read_submissions(SweepDir(sweep_dir))) == 1
    assert len(list((sweep_dir / "workers").glob("*_submission.sh"))) == 1, "one sbatch for the whole sweep"
    assert cli.main(["report", str(sweep_dir)]) == 0
    board = json.loads((sweep_dir / "report" / "leaderboard.json").read_text())
    assert len(board["trials"]) == 6


def test_cancel_mid_sweep_then_resume(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = {**BASE, "training": {**BASE["training"], "epochs": 6, "callbacks": [SLOW_EPOCHS]}}
    array = submit([str(write_spec(slurm, trials=4, base=slow))], capsys)
    sweep_dir = slurm / "sweeps" / "s"
    wait_for_second_epoch(sweep_dir)
    subprocess.run(["scancel", array], check=True)
    wait_for_array(array, [])
    stopped = [r for r in records(sweep_dir) if r.state in ("interrupted", "running")]
    ended = [(r.trial, r.state, r.epochs, r.error) for r in records(sweep_dir)]
    assert stopped, f"no trial was left to resume after the cancel: {ended}"
    assert cli.main(["sweep", "resume", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    second = out.split("submitted Slurm job array ")[1].split(":")[0]
    wait_for_array(second, [])
    found = records(sweep_dir)
    assert [r.trial for r in found] == [0, 1, 2, 3] and {r.state for r in found} == {"completed"}
    assert len({json.dumps(r.params, sort_keys=True) for r in found}) == 4, "no parameter set ran twice"
    for record in stopped:
        run_dir = sweep_dir / "trials" / f"{record.trial:04d}"
        epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3, 4, 5, 6]
        log = "".join(p.read_text() for p in (sweep_dir / "workers").glob(f"{second}_*_log.out"))
        assert f"trial {record.trial} resumed" in log and "resuming at epoch" in log


def test_two_node_trials_in_a_scaling_study(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {**BASE, "distribute": {"strategy": "multiworker"}}
    path = write_spec(slurm, trials=2, base=base)
    spec = yaml.safe_load(path.read_text())
    spec.update(parameters={"slurm.nodes": {"grid": [1, 2]}}, parallelism=1)
    path.write_text(yaml.safe_dump(spec))
    array = submit([str(path)], capsys)
    wait_for_array(array, [])
    sweep_dir = slurm / "sweeps" / "s"
    found = {r.params["slurm.nodes"]: r for r in records(sweep_dir)}
    assert {r.state for r in found.values()} == {"completed"}, [r.error for r in found.values()]
    log = "".join(p.read_text() for p in (sweep_dir / "workers").glob(f"{array}_*_log.out"))
    two = found[2].trial
    assert f"trial {two} rank 0 on node n1" in log and f"trial {two} rank 1 on node n2" in log
    report = json.loads((sweep_dir / "trials" / f"{two:04d}" / "report.json").read_text())
    assert report["training"]["world_size"] == 2 and report["training"]["strategy"] == "multiworker"
    assert cli.main(["report", str(sweep_dir)]) == 0
    scaling = json.loads((sweep_dir / "report" / "leaderboard.json").read_text())["scaling"]
    assert [row["replicas"] for row in scaling] == [1, 2] and scaling[0]["efficiency"] == 1.0


def test_time_limit_signal_requeues_the_task_and_the_trial_resumes(
    slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = {**BASE, "training": {**BASE["training"], "epochs": 5, "callbacks": [SLOW_EPOCHS]}}
    path = write_spec(slurm, trials=1, base=slow)
    array = submit([str(path)], capsys)
    sweep_dir = slurm / "sweeps" / "s"
    wait_for_second_epoch(sweep_dir)
    # what Slurm sends before a time limit: USR2 to the job steps (the trial), not to the worker
    subprocess.run(["scancel", "--signal=USR2", array], check=True)
    release_requeued(str(records(sweep_dir)[0].job_id))  # one worker: a plain job, not an array
    wait_for_array(array, [])
    (record,) = records(sweep_dir)
    assert record.state == "completed" and record.requeues >= 1, record
    epochs = [json.loads(line)["epoch"] for line in (sweep_dir / "trials/0000/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]
    log = "".join(p.read_text() for p in (sweep_dir / "workers").glob(f"{array}_*_log.out"))
    assert "sweep: requeued task" in log and "trial 0 resumed" in log


def test_preempted_worker_requeues_and_the_trial_resumes(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = {**BASE, "training": {**BASE["training"], "epochs": 5, "callbacks": [SLOW_EPOCHS]}}
    spec = write_spec(slurm, trials=1, base=slow)
    data = yaml.safe_load(spec.read_text())
    spec.write_text(yaml.safe_dump({**data, "parallelism": 1}))
    array = submit([str(spec)], capsys)
    sweep_dir = slurm / "sweeps" / "s"
    wait_for_second_epoch(sweep_dir)
    task = str(records(sweep_dir)[0].job_id)  # one worker: a plain job, not an array
    node = test_cluster_jobs.node_of(task)
    urgent = subprocess.run(
        ["sbatch", "--parsable", "-p", "urgent", "--exclusive", "-w", node, "-t", "5", "--wrap", "sleep 2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    release_requeued(task)
    wait_for_array(array, [])
    test_cluster_jobs.wait_until_gone(urgent)
    (record,) = records(sweep_dir)
    assert record.state == "completed" and record.requeues >= 1, record
    epochs = [json.loads(line)["epoch"] for line in (sweep_dir / "trials/0000/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]
    log = "".join(p.read_text() for p in (sweep_dir / "workers").glob(f"{array}_*_log.out"))
    assert "sweep: received SIGTERM" in log and "sweep: requeued task" in log and "trial 0 resumed" in log
