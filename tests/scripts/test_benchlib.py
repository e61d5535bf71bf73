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

import bench_allreduce  # noqa: E402
import bench_scaling  # noqa: E402
import benchlib  # noqa: E402
from benchlib import Layout  # noqa: E402

EIGHT_CORES = set(range(8))


RANKS = ("HARNESS_RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "HARNESS_BENCH_CORE")


def hook_affinity(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> set[int] | None:
    """The cores PIN_HOOK pins a process to, given its environment, on an 8-core machine."""
    for name in (*RANKS, "HARNESS_BENCH_PIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pinned: list[set[int]] = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: EIGHT_CORES)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: pinned.append(set(cores)))
    exec(compile(benchlib.PIN_HOOK, "sitecustomize.py", "exec"), {})
    return pinned[-1] if pinned else None


SHARES = [
    # cores per worker, rank -> cores on an 8-core machine
    (1, 0, {0}),
    (1, 1, {1}),
    (4, 0, {0, 1, 2, 3}),
    (4, 1, {4, 5, 6, 7}),
    (3, 2, {6, 7}),  # the last share is what is left
    (4, 2, {0, 1, 2, 3}),  # more ranks than shares wrap around
]


@pytest.mark.parametrize(("per", "rank", "cores"), SHARES)
@pytest.mark.parametrize("variable", ["HARNESS_RANK", "OMPI_COMM_WORLD_RANK", "HARNESS_BENCH_CORE"])
def test_the_hook_and_layout_give_a_rank_its_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch, per: int, rank: int, cores: set[int], variable: str
) -> None:
    assert hook_affinity(monkeypatch, {"HARNESS_BENCH_PIN": str(per), variable: str(rank)}) == cores
    assert set(Layout(gpus=2, cores_per_worker=per).cores(rank)) == cores


@pytest.mark.parametrize("value", ["", "0", "-1", "²", "all"])
def test_the_hook_leaves_a_process_alone_with_pinning_off_or_malformed(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert hook_affinity(monkeypatch, {"HARNESS_BENCH_PIN": value, "HARNESS_RANK": "1"}) is None


def test_the_hook_leaves_a_process_without_a_rank_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hook_affinity(monkeypatch, {"HARNESS_BENCH_PIN": "1"}) is None


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
    threads = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
    cpu_node = {  # what a CPU node's benchmark processes have always been given
        "PYTHONPATH": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "HARNESS_BENCH_PIN": "1",
        **dict.fromkeys(threads, "1"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }
    for name in cpu_node:
        monkeypatch.delenv(name, raising=False)
    cpu = benchlib.pinning_env(tmp_path, layout=Layout(gpus=0, cores_per_worker=1))
    gpu = benchlib.pinning_env(tmp_path, layout=Layout(gpus=4, cores_per_worker=12))
    assert {k: v for k, v in cpu.items() if k not in os.environ} == cpu_node
    assert not set(threads) & gpu.keys()
    assert gpu["HARNESS_BENCH_PIN"] == "12"
    assert "its own 12 cores" in Layout(gpus=4, cores_per_worker=12).describe()
    assert "its own core " in Layout(gpus=4, cores_per_worker=1).describe()
    assert "THREADS=1" in Layout(gpus=0, cores_per_worker=1).describe()
    assert "THREADS=1" not in Layout(gpus=4, cores_per_worker=12).describe()


def test_a_process_the_benchmark_starts_gets_one_gpu_and_its_cores_on_a_gpu_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: EIGHT_CORES)
    monkeypatch.setattr(bench_scaling.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    command = ["python", "-m", "harness", "train"]
    gpu = Layout(gpus=2, cores_per_worker=4)
    expected = ["env", "CUDA_VISIBLE_DEVICES=1", "taskset", "-c", "4,5,6,7", *command]
    assert bench_scaling.pin_single(command, gpu, 1) == expected
    cpu = Layout(gpus=0, cores_per_worker=1)
    assert bench_scaling.pin_single(command, cpu, 1) == ["taskset", "-c", "1", *command]
    monkeypatch.setattr(bench_scaling.shutil, "which", lambda name: None)
    expected = ["env", "CUDA_VISIBLE_DEVICES=0", "HARNESS_BENCH_CORE=0", *command]
    assert bench_scaling.pin_single(command, gpu, 0) == expected
    assert bench_scaling.pin_single(command, cpu, 1) == ["env", "HARNESS_BENCH_CORE=1", *command]


def test_a_worker_takes_a_gpu_of_those_the_benchmark_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Slurm job given GPUs 2 and 3 (or their UUIDs) must not have its workers open GPU 0."""
    layout = Layout(gpus=2, cores_per_worker=4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert [layout.gpu(i) for i in range(3)] == ["2", "3", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb")
    assert layout.gpu(1) == "GPU-bb"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [layout.gpu(i) for i in range(2)] == ["0", "1"]


class FakeTensorFlow:
    """Only `tf.config.list_physical_devices`, for node_layout."""

    def __init__(self, gpus: int) -> None:
        self.config = argparse.Namespace(list_physical_devices=lambda kind: [f"GPU:{i}" for i in range(gpus)])


@pytest.mark.parametrize(("gpus", "expected"), [(0, Layout(0, 1)), (2, Layout(2, 4)), (4, Layout(4, 4))])
def test_node_layout_gives_two_workers_a_gpu_and_half_the_cores_each(
    monkeypatch: pytest.MonkeyPatch, gpus: int, expected: Layout
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", FakeTensorFlow(gpus))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: EIGHT_CORES)
    benchlib.node_layout.cache_clear()
    try:
        assert benchlib.node_layout(2) == expected
    finally:
        benchlib.node_layout.cache_clear()


def test_a_node_with_fewer_gpus_than_workers_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", FakeTensorFlow(1))
    benchlib.node_layout.cache_clear()
    try:
        with pytest.raises(SystemExit, match=r"2 workers at once, one GPU each, but this node shows 1 GPU"):
            benchlib.node_layout(2)
    finally:
        benchlib.node_layout.cache_clear()


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
        "horovod_nccl": "yes" if gpus else "not asked",
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

    # the same with a section named on the command line, as the recorded commands do
    begin, end = benchlib.markers("bench_x_epyc")
    doc.write_text(f"# Benchmarks\n\n{begin}\nCPU figures\n{end}\n")
    benchlib.measure_and_publish("bench_x", argparse.Namespace(**vars(args), section="bench_x_epyc"), dict, render)
    text = doc.read_text()
    assert "CPU figures" in text
    assert "<!-- bench_x_epyc_gpu:begin -->" in text


def test_the_scripts_render_a_gpu_nodes_section_under_its_name() -> None:
    """bench_scaling and bench_allreduce render the markers of the name they publish under."""
    outcome = bench_scaling.Outcome(
        per_worker=900.0, best_per_worker=950.0, to_start_s=5.0, first_epoch_excess_s=1.0, wall_s=30.0
    )
    scaling = {
        "results": {"single_1": [outcome], "multiworker_2": [outcome]},
        "loads": ["0", "0"],
        "date": "today",
        "settings": {"repeats": 1, "epochs": 2, "samples": 10, "batch_size": 32, "steps_per_execution": 32},
        "provenance": machine(gpus=2),
        "layout": Layout(gpus=2, cores_per_worker=4).describe(),
    }
    name = benchlib.section_name(bench_scaling.NAME, scaling)
    lines = bench_scaling.markdown(scaling, None, name).splitlines()
    assert (lines[0], lines[-1]) == benchlib.markers("bench_scaling_gpu")
    assert any("Each worker on its own GPU" in line and "its own 4 cores" in line for line in lines)
    allreduce = {
        "seconds": {"mpi4py": [0.01], "horovod_gloo": [0.02]},
        "loads": ["0", "0"],
        "bytes": 2**20,
        "date": "today",
        "settings": {"repeats": 1, "iterations": 5, "warmup": 1},
        "provenance": machine(gpus=2),
    }
    name = benchlib.section_name(bench_allreduce.NAME, allreduce)
    lines = bench_allreduce.markdown(allreduce, None, name).splitlines()
    assert (lines[0], lines[-1]) == benchlib.markers("bench_allreduce_gpu")
    assert any("with NCCL" in line and "host MPI" in line for line in lines)


def test_a_cpu_nodes_section_keeps_its_name_and_says_so(tmp_path: Path) -> None:
    assert benchlib.section_name("bench_x", {"provenance": machine(gpus=0)}) == "bench_x"
    assert benchlib.section_name("bench_x", {}) == "bench_x"
    assert benchlib.section_name("bench_x_gpu", {"provenance": machine(gpus=2)}) == "bench_x_gpu"
    line = benchlib.provenance_line(machine(gpus=0))
    assert "0 GPU(s); TensorFlow 2.21.0 (CPU-only build)" in line
    assert benchlib.machine_words({"provenance": machine(gpus=0)}) == "x86_64, 64 CPU cores"


def child_environment() -> set[str]:
    """The variables a child process inherits, including those set from C (putenv)."""
    return set(subprocess.run(["env"], capture_output=True, text=True, check=True).stdout.splitlines())


def test_rendering_bench_allreduces_section_does_not_start_mpi_here() -> None:
    """Naming the MPI library must not start MPI: Open MPI's variables would then reach every later
    child process, and any `mpirun` started from this process exits 1 without output."""
    before = child_environment()
    label = bench_allreduce._mpi_version()
    added = {line.split("=", 1)[0] for line in child_environment() - before}
    assert not {name for name in added if name.startswith(("OMPI_", "PMIX_", "ORTE_"))}
    assert label.startswith("mpi4py + ") or label == "MPI unknown"
