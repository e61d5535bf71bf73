"""Horovod over MPI under `harness submit`: srun starts the ranks with PMIx (`--mpi=pmix`).

The unit tests check the launch the script asks for; the real-Slurm ones (marker `slurm`) check
that two tasks trained one model over MPI, and that a time-limit warning still checkpoints and
requeues. Training runs both as two tasks on one node and as one task on each of the test
cluster's two nodes (each node has its own TmpFS, where srun's PMIx keeps a step's folder).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.slurm.script import MPI_SRUN_ARGS, SRUN_ARGS, check_launch, with_launch
from harness.slurm.submit import Plan, SubmitOptions, plan, render_dry_run
from tests.conftest import CONFIGS, ROOT, needs_horovod
from tests.slurm.test_cluster_jobs import (
    QUICK,
    digests,
    metrics_epochs,
    preempt_until_completed,
    release_requeued,
    status,
    submit,
    task_log,
    wait_for_epochs,
    wait_until_gone,
)
from tests.slurm.test_submit import fake_slurm  # noqa: F401 - a fixture

MPI = ["distribute.strategy=horovod", "distribute.horovod_controller=mpi"]


# --------------------------------------------------------------------------- the launch, without a cluster


@pytest.mark.parametrize(
    ("strategy", "controller", "mpi"),
    [("horovod", "mpi", True), ("horovod", "gloo", False), ("multiworker", "mpi", False), ("single", "mpi", False)],
)
def test_only_horovod_over_mpi_asks_srun_for_pmix(strategy: str, controller: str, mpi: bool) -> None:
    params = with_launch({"srun_args": list(SRUN_ARGS), "nodes": 1}, strategy, controller)
    expected = [*SRUN_ARGS, *MPI_SRUN_ARGS] if mpi else list(SRUN_ARGS)
    assert params["srun_args"] == expected and params["nodes"] == 1


def test_batch_script_starts_the_ranks_with_pmix(fake_slurm: Path, workdir: Path) -> None:  # noqa: F811
    overrides = [*QUICK, *MPI, "slurm.tasks_per_node=2"]
    job = plan(SubmitOptions(CONFIGS / "default.yaml", overrides), dry_run=True)
    srun = next(line for line in cli_dry_run(job).splitlines() if line.startswith("srun "))
    assert "--mpi=pmix" in srun.split() and "--kill-on-bad-exit=1" in srun.split()
    gloo = plan(SubmitOptions(CONFIGS / "default.yaml", [*QUICK, "distribute.strategy=horovod"]), dry_run=True)
    assert "--mpi=pmix" not in cli_dry_run(gloo)


def cli_dry_run(job: Plan) -> str:
    return render_dry_run(job)


def test_the_local_executor_refuses_horovod_over_mpi() -> None:
    with pytest.raises(ConfigError) as err:
        check_launch("local", "horovod", "mpi")
    message = str(err.value)
    assert "distribute.horovod_controller" in message and "'mpi'" in message and "gloo" in message
    check_launch("local", "horovod", "gloo")
    check_launch("slurm", "horovod", "mpi")


# --------------------------------------------------------------------------- real Slurm


def mpi_args(name: str, epochs: int, nodes: int = 1) -> list[str]:
    layout = ["--nodes", str(nodes), "--tasks-per-node", str(2 // nodes)]
    return [*QUICK, *MPI, f"training.epochs={epochs}", f"run.name={name}", *layout, "--time", "10"]


@needs_horovod
@pytest.mark.parametrize("nodes", [1, 2], ids=["1node-x-2tasks", "2nodes-x-1task"])
def test_two_tasks_train_one_model_with_horovod_over_mpi(
    slurm: Path, capsys: pytest.CaptureFixture[str], nodes: int
) -> None:
    job_id, run_dir = submit(mpi_args(f"hvd-mpi-{nodes}", 1, nodes), capsys)
    wait_until_gone(job_id)
    assert "state:      completed" in status(run_dir, capsys), task_log(run_dir, job_id, 0)[-3000:]
    found = digests(run_dir, job_id, 2)
    assert found[0] == found[1]
    env = json.loads((run_dir / "env.json").read_text())
    # what Horovod itself reports after hvd.init(): "gloo" if the MPI route silently fell back
    assert env["distribute"]["strategy"] == "horovod" and env["distribute"]["horovod_controller"] == "mpi"
    assert env["distribute"]["world_size"] == 2 and env["distribute"]["cluster_source"] == "slurm"
    assert env["distribute"]["mpi_yield_when_idle"] == "1"  # Open MPI does not spin on the step's core
    hosts = {re.search(rf"harness: task {r} of 2 on node (\w+)", task_log(run_dir, job_id, r)) for r in (0, 1)}
    assert None not in hosts and len({m[1] for m in hosts if m}) == nodes  # the ranks ran where asked
    assert "--mpi=pmix" in (run_dir / "slurm" / f"{job_id}_submission.sh").read_text()


@needs_horovod
def test_time_limit_warning_checkpoints_and_requeues_horovod_over_mpi(
    slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """USR2 reaches the srun tasks as with Gloo: every rank stops at one step and the job resumes."""
    epochs = 5
    args = [
        *mpi_args("hvd-mpi-requeue", epochs),
        "training.callbacks=['tests.slurm.test_cluster_jobs:slow_epochs']",
        f"slurm.env={{PYTHONPATH: '{ROOT}'}}",
    ]
    job_id, run_dir = submit(args, capsys)
    wait_for_epochs(run_dir, 2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    release_requeued(job_id, run_dir)
    wait_until_gone(job_id)
    out = status(run_dir, capsys)
    assert "state:      completed" in out, out + task_log(run_dir, job_id, 0)[-3000:]
    assert metrics_epochs(run_dir) == list(range(1, epochs + 1))  # every epoch once, none lost
    chief = task_log(run_dir, job_id, 0)
    assert "requeueing (requeue 1 of at most 3)" in chief and "resuming at epoch" in chief
    assert json.loads((run_dir / "env.json").read_text())["distribute"]["horovod_controller"] == "mpi"


@needs_horovod
def test_preempted_horovod_over_mpi_checkpoints_on_sigterm_and_resumes(
    slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real preemption sends SIGTERM to the srun tasks; epoch checkpoints are off, so only the one
    written on SIGTERM can carry the progress (nothing of MPI's may swallow the signal)."""
    epochs = 5
    args = [
        *mpi_args("hvd-mpi-preempted", epochs),
        "training.checkpoint.every_epochs=0",
        "training.callbacks=['tests.slurm.test_cluster_jobs:slow_epochs']",
        f"slurm.env={{PYTHONPATH: '{ROOT}'}}",
    ]
    job_id, run_dir = submit(args, capsys)
    chief = preempt_until_completed(job_id, run_dir, epochs, capsys)
    assert "received SIGTERM" in chief and "the job was preempted: requeueing it after the checkpoint" in chief
    assert "resuming at epoch" in chief
