"""Against a real Slurm: two slurmd nodes on this machine (slurm/cluster.sh), real srun steps.

The environment Slurm gives each task is parsed by the same code that builds the cluster for
tf.distribute, and a two-node training job must train one model on both nodes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.distribute.cluster import detect, from_slurm
from tests.conftest import ROOT

CLUSTER = ROOT / "slurm" / "cluster.sh"
EXAMPLES = ROOT / "slurm" / "examples"


def captured_tasks(name: str) -> list[dict[str, str]]:
    """The per-task SLURM_* variables captured from real steps in slurm/examples."""
    tasks: list[dict[str, str]] = []
    for line in (EXAMPLES / name).read_text().splitlines():
        if line.startswith("# task"):
            tasks.append({})
        elif "=" in line and not line.startswith("#") and tasks:
            key, _, value = line.partition("=")
            tasks[-1][key] = value
    return tasks


def test_captured_two_node_step_parses_to_one_rank_per_node() -> None:
    tasks = captured_tasks("env-srun-2nodes.txt")
    envs = [from_slurm(task) for task in tasks]
    assert [e.rank for e in envs if e] == [0, 1]
    for env, task in zip(envs, tasks, strict=True):
        assert env is not None
        assert env.world_size == 2 and env.local_rank == 0
        assert env.hosts == ("n1", "n2")
        assert env.hosts[env.rank] == task["SLURMD_NODENAME"]
    assert envs[0] is not None and len(set(envs[0].worker_addresses())) == 2


def test_captured_one_node_two_tasks() -> None:
    envs = [from_slurm(task) for task in captured_tasks("env-srun-1node-2tasks.txt")]
    assert sorted((e.rank, e.local_rank) for e in envs if e) == [(0, 0), (1, 1)]


def test_captured_batch_script_is_one_process() -> None:
    task = captured_tasks("env-batch.txt")[0]
    assert task["SLURM_NTASKS"] == "2"
    assert not detect(task).is_distributed


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """Install (as root) and start the two-node cluster; its client environment."""
    started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.fail(f"slurm/cluster.sh start failed:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}")
    exports = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for name, value in re.findall(r"^export (\w+)=(.*)$", exports, flags=re.M):
        env[name] = shlex.split(value)[0] if value else ""
    yield env


def wait_for(job: str, env: dict[str, str], timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True
        )
        if not state.stdout.strip():
            return "done"
        time.sleep(2)
    subprocess.run(["scancel", job], env=env)
    return "timeout"


def test_two_node_training_job(slurm: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "configs").symlink_to(ROOT / "configs")
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
        cwd=tmp_path,
        env=slurm,
        capture_output=True,
        text=True,
        check=True,
    )
    assert wait_for(submitted.stdout.strip().split(";")[0], slurm) == "done"
    output = (tmp_path / "job.out").read_text()
    digests = re.findall(r"rank (\d): weights digest per local replica: (\w+)", output)
    assert sorted(rank for rank, _ in digests) == ["0", "1"], output[-3000:]
    assert len({digest for _, digest in digests}) == 1
    report = json.loads((tmp_path / "runs" / "slurm" / "report.json").read_text())
    assert report["training"]["world_size"] == 2
    assert report["training"]["cluster_source"] == "slurm"
