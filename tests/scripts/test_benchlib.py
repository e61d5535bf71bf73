"""The benchmark scripts' shared layout: the same commands must measure the right thing on a CPU
node (one core and one thread per worker) and on a GPU node (one GPU and a share of the cores)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_scaling  # noqa: E402
import benchlib  # noqa: E402
from benchlib import Layout  # noqa: E402

EIGHT_CORES = set(range(8))


def hook_affinity(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> set[int] | None:
    """The cores PIN_HOOK pins a process to, given its environment, on an 8-core machine."""
    for name in ("HARNESS_RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pinned: list[set[int]] = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: EIGHT_CORES)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: pinned.append(set(cores)))
    exec(compile(benchlib.PIN_HOOK, "sitecustomize.py", "exec"), {})
    return pinned[-1] if pinned else None


@pytest.mark.parametrize("per", [1, 3, 4])
@pytest.mark.parametrize("rank", [0, 1, 2])
def test_the_hook_pins_a_rank_to_the_cores_layout_gives_it(
    monkeypatch: pytest.MonkeyPatch, per: int, rank: int
) -> None:
    got = hook_affinity(monkeypatch, {"HARNESS_BENCH_PIN": str(per), "HARNESS_RANK": str(rank)})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: EIGHT_CORES)
    expected = set(Layout(gpus=2, cores_per_worker=per).cores(rank))
    assert got == expected
    assert expected  # the last share wraps around and may be shorter, never empty


def test_the_hook_leaves_a_process_alone_without_a_rank_or_with_pinning_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hook_affinity(monkeypatch, {"HARNESS_BENCH_PIN": "1"}) is None
    assert hook_affinity(monkeypatch, {"HARNESS_BENCH_PIN": "", "HARNESS_RANK": "1"}) is None


def test_a_real_interpreter_starts_on_its_ranks_core(tmp_path: Path) -> None:
    """The hook as the ranks get it: a sitecustomize.py on PYTHONPATH, run before any user code."""
    env = benchlib.pinning_env(tmp_path, layout=Layout(gpus=0, cores_per_worker=1))
    cores = sorted(os.sched_getaffinity(0))
    rank = len(cores) - 1
    env["HARNESS_RANK"] = str(rank)
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == [cores[rank]]


def test_cpu_nodes_get_one_thread_per_worker_and_gpu_nodes_tensorflows_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    cpu = benchlib.pinning_env(tmp_path, layout=Layout(gpus=0, cores_per_worker=1))
    gpu = benchlib.pinning_env(tmp_path, layout=Layout(gpus=4, cores_per_worker=12))
    assert [cpu[name] for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")] == ["1"] * 3
    assert cpu["HARNESS_BENCH_PIN"] == "1"
    assert not {"TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"} & gpu.keys()
    assert gpu["HARNESS_BENCH_PIN"] == "12"
    assert "4 cores" not in Layout(gpus=4, cores_per_worker=12).describe()
    assert "own GPU" in Layout(gpus=4, cores_per_worker=12).describe()
    assert "THREADS=1" not in Layout(gpus=4, cores_per_worker=12).describe()


def test_a_process_the_benchmark_starts_gets_one_gpu_and_its_cores_on_a_gpu_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: EIGHT_CORES)
    monkeypatch.setattr(bench_scaling.shutil, "which", lambda name: f"/usr/bin/{name}")
    command = ["python", "-m", "harness", "train"]
    gpu = Layout(gpus=2, cores_per_worker=4)
    assert bench_scaling.pin_single(command, gpu, 1) == [
        "env",
        "CUDA_VISIBLE_DEVICES=1",
        "taskset",
        "-c",
        "4,5,6,7",
        *command,
    ]
    cpu = Layout(gpus=0, cores_per_worker=1)
    assert bench_scaling.pin_single(command, cpu, 1) == ["taskset", "-c", "1", *command]
    monkeypatch.setattr(bench_scaling.shutil, "which", lambda name: None)
    assert bench_scaling.pin_single(command, gpu, 0) == [
        "env",
        "CUDA_VISIBLE_DEVICES=0",
        "HARNESS_BENCH_CORE=0",
        *command,
    ]


def machine(gpus: int) -> dict[str, Any]:
    return {
        "cpu": "AMD EPYC",
        "arch": "x86_64",
        "cores": 64,
        "avx2": True,
        "avx512": False,
        "amx": False,
        "tensorflow": "2.21.0",
        "cuda_build": bool(gpus),
        "cuda": "12.5" if gpus else None,
        "cudnn": "9" if gpus else None,
        "gpus": gpus,
        "gpu_models": ["NVIDIA A100-SXM4-80GB"] * gpus,
        "horovod_nccl": True if gpus else None,
        "threads": {"TF_NUM_INTRAOP_THREADS": "default"},
    }


def test_a_gpu_nodes_section_names_its_gpus_and_keeps_the_cpu_figures(tmp_path: Path) -> None:
    """Figures from a GPU node go to their own section, so they never replace a CPU node's."""
    doc = tmp_path / "benchmarks.md"
    begin, end = benchlib.markers("bench_x")
    doc.write_text(f"# Benchmarks\n\n{begin}\nCPU figures\n{end}\n")
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps({"provenance": machine(gpus=4)}))

    def render(measured: dict[str, Any], analysis: Path | None, section: str) -> str:
        first, last = benchlib.markers(section)
        return "\n".join([first, benchlib.provenance_line(measured["provenance"]), last]) + "\n"

    args = argparse.Namespace(from_json=figures, json=None, analysis=None, no_write=False, write=doc)
    benchlib.measure_and_publish("bench_x", args, lambda args: {}, render)
    text = doc.read_text()
    assert "CPU figures" in text
    assert "<!-- bench_x_gpu:begin -->" in text
    assert "4 GPU(s) (4x NVIDIA A100-SXM4-80GB; cuDNN 9; Horovod with NCCL: yes)" in text
    assert "CUDA 12.5 build" in text
    assert benchlib.machine_suffix({"provenance": machine(gpus=4)}) == ", AMD EPYC, 4x NVIDIA A100-SXM4-80GB"


def test_a_cpu_nodes_section_keeps_its_name_and_says_so(tmp_path: Path) -> None:
    assert benchlib.section_name("bench_x", {"provenance": machine(gpus=0)}) == "bench_x"
    assert benchlib.section_name("bench_x", {}) == "bench_x"
    assert benchlib.section_name("bench_x_gpu", {"provenance": machine(gpus=2)}) == "bench_x_gpu"
    line = benchlib.provenance_line(machine(gpus=0))
    assert "0 GPU(s); TensorFlow 2.21.0 (CPU-only build)" in line
    assert benchlib.machine_words({"provenance": machine(gpus=0)}) == "x86_64, 64 CPU cores"
