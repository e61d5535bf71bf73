"""Against a real Slurm: two slurmd nodes on this machine (slurm/cluster.sh).

Every job goes through sbatch, srun and slurmstepd, and is followed with the same commands a
user types; the example batch script in slurm/examples must train one model on both nodes too.
The cluster is started by a fixture (as root); a failure to start fails the tests instead of
skipping them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import pytest

from harness import cli
from harness.evaluate import load_report
from harness.slurm import backends, records
from tests.conftest import ROOT, wait_until

# Importing submitit runs logging.config.dictConfig, which closes every logging handler that
# exists at that moment, pytest's capture handlers included: import it while collecting.
assert backends.submitit

EXAMPLES = ROOT / "slurm" / "examples"
QUICK = ["data.dataset=wine", "model.name=mlp", "training.progress=lines"]
EPOCH_PAUSE_S = 1.0
JOB_TIMEOUT_S = 300.0
HOSTILE_JOB_NAME = 'job\'$(touch pwned)`touch pwned2` "x"'


class SlowEpochs(keras.callbacks.Callback):
    """Makes each epoch last long enough for a signal to land mid-training."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        time.sleep(EPOCH_PAUSE_S)


def slow_epochs() -> keras.callbacks.Callback:
    return SlowEpochs()


def submit(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, Path]:
    code = cli.main(["submit", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    job_id = re.search(r"submitted Slurm job (\d+)", out)
    run_dir = re.search(r"run directory: (.+)", out)
    assert job_id and run_dir, out
    return job_id[1], Path(run_dir[1])


def squeue(job_id: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"], capture_output=True, text=True)
    return done.stdout.strip()


def job_ended(job_id: str) -> bool:
    queued = squeue(job_id)
    return not queued or queued.startswith(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))


def wait_until_gone(job_id: str, timeout: float = JOB_TIMEOUT_S) -> None:
    """Wait for the job to end; one that does not is cancelled, so it cannot hold the nodes."""
    try:
        wait_until(lambda: job_ended(job_id), timeout, 0.5, f"Slurm job {job_id} to finish")
    except pytest.fail.Exception:
        subprocess.run(["scancel", job_id])
        raise


def status(target: str | Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(["status", str(target)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def task_log(run_dir: Path, job_id: str, rank: int) -> str:
    return (run_dir / "slurm" / f"{job_id}_{rank}_log.out").read_text()


def digests(run_dir: Path, job_id: str, ranks: int) -> dict[int, str]:
    found = {}
    for rank in range(ranks):
        match = re.search(rf"rank {rank}: weights digest per local replica: (\w+)", task_log(run_dir, job_id, rank))
        assert match, task_log(run_dir, job_id, rank)[-2000:]
        found[rank] = match[1]
    return found


def metrics_epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_one_node_job_trains_the_default_config(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job_id, run_dir = submit(
        ["training.epochs=2", "training.progress=lines", f"slurm.job_name={HOSTILE_JOB_NAME}", "--time", "10"], capsys
    )
    assert run_dir == slurm / "runs" / "digits-cnn"
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    assert f"JobName={HOSTILE_JOB_NAME} UserId=" in shown  # sbatch read the quoted name back intact
    wait_until_gone(job_id)
    out = status(run_dir, capsys)
    assert "state:      completed" in out and "epoch 2/2" in out and "report:" in out
    for name in ("report.json", "report.md", "report.html", "model.keras", "model_card.md", "env.json", "config.yaml"):
        assert (run_dir / name).is_file(), name
    report = load_report(run_dir)
    assert report["training"]["epochs_run"] == 2 and report["test"]["accuracy"] > 0.5
    assert metrics_epochs(run_dir) == [1, 2]
    node = json.loads((run_dir / "state.json").read_text())["host"]  # either node may take a one-node job
    assert node in ("n1", "n2") and f"harness: task 0 of 1 on node {node} " in task_log(run_dir, job_id, 0)
    assert not list(slurm.rglob("pwned*"))


@pytest.mark.parametrize("strategy", ["multiworker", "horovod"])
def test_two_node_job_trains_one_model_with_one_rank_per_node(
    strategy: str, slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*QUICK, "training.epochs=2", f"distribute.strategy={strategy}", f"run.name={strategy}"]
    job_id, run_dir = submit([*args, "--nodes", "2", "--time", "10"], capsys)
    wait_until_gone(job_id)
    assert "state:      completed" in status(run_dir, capsys), task_log(run_dir, job_id, 0)[-3000:]
    found = digests(run_dir, job_id, 2)
    assert found[0] == found[1]
    for rank, node in ((0, "n1"), (1, "n2")):
        assert f"harness: task {rank} of 2 on node {node}" in task_log(run_dir, job_id, rank)
    report = load_report(run_dir)
    assert report["training"]["world_size"] == 2 and report["training"]["cluster_source"] == "slurm"
    env = json.loads((run_dir / "env.json").read_text())
    # the node each rank ran on, as Slurm names it (here both nodes share one machine's host name)
    assert [(entry["rank"], entry["host"]) for entry in env["ranks"]] == [(0, "n1"), (1, "n2")]
    assert env["host"] == "n1"
    assert "glibc.malloc.hugetlb=1" in env["variables"]["GLIBC_TUNABLES"]  # the script's export reached the tasks


def release_requeued(job_id: str, run_dir: Path, timeout: float = 120.0) -> None:
    """Slurm holds a requeued job back for its credential lifetime (about 2 minutes); as an admin
    would, start it now so the test does not wait."""

    def requeued() -> bool:
        queued = squeue(job_id)
        if not queued or queued.startswith(("COMPLETED", "FAILED", "CANCELLED")):
            pytest.fail(f"job {job_id} ended instead of being requeued:\n{task_log(run_dir, job_id, 0)[-3000:]}")
        return queued.startswith("PENDING")

    wait_until(requeued, timeout, 0.25, f"job {job_id} to be requeued")
    # slurmd refuses a credential created in the same second the old one was revoked
    # ("Job credential revoked", the job then fails): release it two seconds later
    time.sleep(2.0)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def wait_for_epochs(run_dir: Path, count: int, timeout: float = JOB_TIMEOUT_S) -> None:
    wait_until(
        lambda: (run_dir / "metrics.jsonl").is_file() and len(metrics_epochs(run_dir)) >= count,
        timeout,
        0.25,
        f"{run_dir} to reach epoch {count}",
    )


@pytest.mark.parametrize(("strategy", "nodes"), [("single", 1), ("multiworker", 2), ("horovod", 2)])
def test_preempted_job_resumes_from_its_checkpoint(
    strategy: str, nodes: int, slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    epochs = 6
    args = [
        *QUICK,
        f"training.epochs={epochs}",
        f"distribute.strategy={strategy}",
        f"run.name=preempt-{strategy}",
        "training.callbacks=['tests.slurm.test_cluster_jobs:slow_epochs']",
        f"slurm.env={{PYTHONPATH: '{ROOT}'}}",
    ]
    job_id, run_dir = submit([*args, "--nodes", str(nodes), "--time", "10"], capsys)
    wait_for_epochs(run_dir, 2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    release_requeued(job_id, run_dir)
    wait_until_gone(job_id)
    out = status(run_dir, capsys)
    assert "state:      completed" in out, out + task_log(run_dir, job_id, 0)[-3000:]
    assert f"epoch {epochs}/{epochs}" in out and "requeues:   1" in out
    assert metrics_epochs(run_dir) == list(range(1, epochs + 1))  # every epoch once, none lost
    report = load_report(run_dir)
    assert report["training"]["requeues"] >= 1
    chief = task_log(run_dir, job_id, 0)
    assert "requeueing (requeue 1 of at most 3)" in chief
    assert "job " + job_id + ", requeue 1" in chief and "resuming at epoch" in chief
    if nodes > 1:
        found = digests(run_dir, job_id, nodes)
        assert len(set(found.values())) == 1


def node_of(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True).stdout.strip()


def preempt_until_completed(job_id: str, run_dir: Path, epochs: int, capsys: pytest.CaptureFixture[str]) -> str:
    """After epoch 2, an `urgent` job preempts ours on its node; wait until ours completed all its
    epochs, each once (resumed where it stopped), and return the chief's log."""
    wait_for_epochs(run_dir, 2)
    urgent = subprocess.run(
        ["sbatch", "--parsable", "-p", "urgent", "--exclusive", "-w", node_of(job_id), "-t", "5", "--wrap", "sleep 2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    release_requeued(job_id, run_dir)
    wait_until_gone(job_id)
    wait_until_gone(urgent)
    out = status(run_dir, capsys)
    assert "state:      completed" in out, out + task_log(run_dir, job_id, 0)[-3000:]
    assert metrics_epochs(run_dir) == list(range(1, epochs + 1))  # resumed where it stopped, nothing repeated
    return task_log(run_dir, job_id, 0)


@pytest.mark.parametrize(("strategy", "nodes"), [("single", 1), ("multiworker", 2)])
def test_job_preempted_by_a_higher_priority_partition_checkpoints_and_resumes(
    strategy: str, nodes: int, slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real preemption: Slurm requeues the job for an `urgent` one and sends SIGTERM (not USR2).
    Epoch checkpoints are off, so only the checkpoint written on SIGTERM can carry the progress.
    Multiworker matters: TensorFlow's coordination service installs a SIGTERM handler of its own."""
    epochs = 6
    args = [
        *QUICK,
        f"training.epochs={epochs}",
        "training.checkpoint.every_epochs=0",
        f"distribute.strategy={strategy}",
        f"run.name=preempted-by-urgent-{strategy}",
        "training.callbacks=['tests.slurm.test_cluster_jobs:slow_epochs']",
        f"slurm.env={{PYTHONPATH: '{ROOT}'}}",
    ]
    job_id, run_dir = submit([*args, "--nodes", str(nodes), "--time", "10"], capsys)
    chief = preempt_until_completed(job_id, run_dir, epochs, capsys)
    assert "received SIGTERM (preemption, scancel or the time limit)" in chief
    assert "the job was preempted: requeueing it after the checkpoint" in chief  # harness requeued it, not Slurm
    assert "job " + job_id + ", requeue 1" in chief and "resuming at epoch" in chief
    assert load_report(run_dir)["training"]["requeues"] >= 1


def test_failed_training_shows_as_failed_with_its_error(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*QUICK, "training.epochs=3", "run.name=diverges", "training.optimizer.name=sgd"]
    job_id, run_dir = submit([*args, "training.optimizer.learning_rate=1e30", "--time", "10"], capsys)
    wait_until_gone(job_id)
    out = status(job_id, capsys)
    assert "state:      failed" in out
    assert re.search(r"error:\s+TrainingError: training loss became (nan|inf)", out), out
    assert not (run_dir / "report.json").exists()
    assert records.read_submission(run_dir)["job_id"] == job_id


def test_cancel_stops_the_job_and_the_run_reads_cancelled(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        *QUICK,
        "training.epochs=50",
        "run.name=cancelled",
        "training.callbacks=['tests.slurm.test_cluster_jobs:slow_epochs']",
    ]
    job_id, run_dir = submit([*args, f"slurm.env={{PYTHONPATH: '{ROOT}'}}", "--time", "10"], capsys)
    wait_for_epochs(run_dir, 1)
    assert cli.main(["cancel", job_id]) == 0
    assert f"cancelled job {job_id}" in capsys.readouterr().out
    wait_until_gone(job_id, timeout=60)
    out = status(run_dir, capsys)
    assert "state:      cancelled" in out
    assert not (run_dir / "report.json").exists()
    # the run's own record agrees, whatever the dying job wrote after SIGTERM
    assert json.loads((run_dir / "state.json").read_text())["state"] == "cancelled"


def test_two_node_training_job_from_the_example_batch_script(slurm: Path) -> None:
    """slurm/examples/train.sbatch, submitted with plain sbatch as its comments tell a user to."""
    (slurm / ".venv").symlink_to(Path(sys.prefix))
    (slurm / "configs").symlink_to(ROOT / "configs")
    args = [
        "data.dataset=wine",
        "model.name=mlp",
        "training.epochs=2",
        "training.progress=lines",
        "run.name=slurm",
    ]
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-N2",
            "--ntasks-per-node=1",
            "-o",
            "job.out",
            str(EXAMPLES / "train.sbatch"),
            *args,
        ],
        cwd=slurm,
        capture_output=True,
        text=True,
        check=True,
    )
    wait_until_gone(submitted.stdout.strip().split(";")[0], timeout=600)
    output = (slurm / "job.out").read_text()
    found = re.findall(r"rank (\d): weights digest per local replica: (\w+)", output)
    assert sorted(rank for rank, _ in found) == ["0", "1"], output[-3000:]
    assert len({digest for _, digest in found}) == 1
    report = json.loads((slurm / "runs" / "slurm" / "report.json").read_text())
    assert report["training"]["world_size"] == 2
    assert report["training"]["cluster_source"] == "slurm"
