"""`harness validate`: the check registry, verdicts, NVML health against recorded values, the fleet
rules, the JSON contract, and `--local --light` end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.errors import UserInputError
from harness.validate import schema, store
from harness.validate.aggregate import aggregate
from harness.validate.checks.basics import read_meminfo
from harness.validate.checks.collective import bus_bandwidth
from harness.validate.context import ExpectedGpus, NodeContext, Settings, parse_gres
from harness.validate.expected import load_expected, matches
from harness.validate.judge import judge_measurement
from harness.validate.nvml import NvmlUnavailable, PynvmlReader, RecordedNvml
from harness.validate.references import load_references, parse_references
from harness.validate.results import CheckResult, Measurement, NodeResult, node_from_dict
from harness.validate.runner import run_check, run_node
from harness.validate.spec import CHECKS, CheckSpec, all_checks, select_checks
from harness.validate.verdict import Verdict, exit_code, worst

ROOT = Path(__file__).resolve().parents[2]
GPU_CHECKS = ("gpu.inventory", "gpu.memory", "gpu.ecc", "gpu.retired_memory", "gpu.thermal", "gpu.pcie")

# --- recorded NVML values ------------------------------------------------------------------------


def a100(index: int, **changes: Any) -> dict[str, Any]:
    """One A100-SXM4-80GB as NVML reported it on a healthy, idle node (values from a DGX A100)."""
    gpu = {
        "index": index,
        "name": "NVIDIA A100-SXM4-80GB",
        "uuid": f"GPU-5c1f7a2e-0d7b-11ee-be56-0242ac12000{index}",
        "pci_bus_id": f"00000000:{0x07 + 0x10 * index:02X}:00.0",
        "memory_total_bytes": 85899345920,
        "memory_used_bytes": 4718592,
        "ecc_enabled": True,
        "ecc_uncorrected_volatile": 0,
        "ecc_uncorrected_aggregate": 0,
        "retired_pages_sbe": None,
        "retired_pages_dbe": None,
        "retired_pages_pending": False,
        "remapped_rows_correctable": 0,
        "remapped_rows_uncorrectable": 0,
        "remapped_rows_pending": False,
        "remapped_rows_failed": False,
        "temperature_c": 31,
        "temperature_slowdown_c": 89,
        "throttle_reasons": 0x1,  # gpu_idle
        "pcie_gen": 4,
        "pcie_gen_max": 4,
        "pcie_width": 16,
        "pcie_width_max": 16,
    }
    gpu.update(changes)
    return gpu


def node_record(*gpus: dict[str, Any]) -> dict[str, Any]:
    return {"driver_version": "550.54.15", "cuda_driver_version": "12.4", "gpus": list(gpus)}


HEALTHY = node_record(*(a100(i) for i in range(4)))
ECC_ERRORS = node_record(a100(0), a100(1, ecc_uncorrected_volatile=3, ecc_uncorrected_aggregate=5), a100(2), a100(3))
ECC_HISTORY = node_record(a100(0), a100(1, ecc_uncorrected_aggregate=2), a100(2), a100(3))
NARROW_PCIE = node_record(a100(0), a100(1), a100(2, pcie_width=8), a100(3))
IDLE_PCIE_GEN = node_record(a100(0, pcie_gen=1), a100(1), a100(2), a100(3))
THROTTLED = node_record(a100(0), a100(1), a100(2), a100(3, temperature_c=91, throttle_reasons=0x40 | 0x20))
SOFT_THROTTLED = node_record(a100(0, throttle_reasons=0x20), a100(1), a100(2), a100(3))
REMAP_PENDING = node_record(
    a100(0, remapped_rows_pending=True, remapped_rows_uncorrectable=1), a100(1), a100(2), a100(3)
)
REMAP_FAILED = node_record(a100(0), a100(1, remapped_rows_failed=True), a100(2), a100(3))
MISSING_GPU = node_record(a100(0), a100(1), a100(2))


def context(record: dict[str, Any] | None, gpus: int | None = 4, model: str | None = None, **kw: Any) -> NodeContext:
    settings = Settings(expected_gpus=ExpectedGpus(gpus, model, f"--gpus {gpus}"), **kw)
    return NodeContext("n1", settings, load_references(), nvml=RecordedNvml(record))


def run(ctx: NodeContext, name: str) -> CheckResult:
    return run_check(ctx, CHECKS.get(name))


def verdicts(record: dict[str, Any] | None, gpus: int | None = 4) -> dict[str, Verdict]:
    ctx = context(record, gpus)
    return {name: run(ctx, name).verdict for name in GPU_CHECKS}


# --- registry and verdicts -----------------------------------------------------------------------


def test_every_check_is_declared_fully() -> None:
    specs = all_checks()
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names)) and {*GPU_CHECKS, "stack.versions", "compute.matmul"} <= set(names)
    for spec in specs:
        assert spec.measures and spec.reference and spec.timeout_s > 0, spec.name
    assert not CHECKS.get("e2e.training").light
    with pytest.raises(ValueError, match="already registered"):
        CHECKS.add("gpu.ecc", CHECKS.get("gpu.ecc"))
    with pytest.raises(ValueError, match="unknown needs"):
        CheckSpec("x.y", "m", "", "r", lambda ctx: CheckResult("x.y", Verdict.PASS, ""), True, ("gpus",))


def test_selecting_checks_by_name_group_and_light_mode() -> None:
    light = [spec.name for spec in select_checks(None, light=True)]
    assert "e2e.training" not in light and "gpu.ecc" in light
    assert "e2e.training" in [spec.name for spec in select_checks(None, light=False)]
    chosen = [spec.name for spec in select_checks(["node.disk", "gpu"], light=False)]
    assert chosen == ["node.disk", *GPU_CHECKS]  # in run order, whatever order they were asked for
    with pytest.raises(UserInputError, match="unknown check 'gpu.ecx'. Did you mean 'gpu.ecc'"):
        select_checks(["gpu.ecx"], light=False)
    with pytest.raises(UserInputError, match="e2e.training do not fit --light"):
        select_checks(["e2e.training"], light=True)


def test_verdict_order_and_exit_codes() -> None:
    assert worst([Verdict.PASS, Verdict.SKIPPED]) is Verdict.PASS
    assert worst([Verdict.PASS, Verdict.WARN, Verdict.SKIPPED]) is Verdict.WARN
    assert worst([Verdict.FAIL, Verdict.ERROR, Verdict.WARN]) is Verdict.ERROR
    assert worst([Verdict.SKIPPED, Verdict.SKIPPED]) is Verdict.SKIPPED and worst([]) is Verdict.SKIPPED
    assert exit_code([Verdict.PASS, Verdict.WARN], anything_judged=True) == 0
    assert exit_code([Verdict.PASS, Verdict.FAIL], anything_judged=True) == 1
    assert exit_code([Verdict.PASS, Verdict.ERROR], anything_judged=True) == 1
    assert exit_code([Verdict.ERROR], anything_judged=False) == 3
    assert exit_code([], anything_judged=False) == 3


def spec_running(name: str, function: Any, needs: tuple[str, ...] = (), timeout_s: float = 30.0) -> CheckSpec:
    return CheckSpec(name, "test", "", "none", function, True, needs, timeout_s)


def test_a_check_that_raises_is_an_error_never_a_pass() -> None:
    def boom(ctx: NodeContext) -> CheckResult:
        raise RuntimeError("driver went away\nsecond line")

    outcome = run_check(context(None), spec_running("t.boom", boom))
    assert outcome.verdict is Verdict.ERROR
    assert outcome.message == "could not run: RuntimeError: driver went away"


def test_a_check_returning_something_else_is_an_error() -> None:
    outcome = run_check(context(None), spec_running("t.odd", lambda ctx: CheckResult("other", Verdict.PASS, "")))
    assert outcome.verdict is Verdict.ERROR and "not its CheckResult" in outcome.message


def test_a_check_past_its_time_limit_is_an_error() -> None:
    release = threading.Event()

    def hangs(ctx: NodeContext) -> CheckResult:
        release.wait(30)
        return CheckResult("t.hang", Verdict.PASS, "late")

    try:
        outcome = run_check(context(None), spec_running("t.hang", hangs, timeout_s=0.05))
    finally:
        release.set()
    assert outcome.verdict is Verdict.ERROR and "time limit of 0 s" in outcome.message


def test_an_unmet_need_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    outcome = run_check(context(None), spec_running("t.mpi", lambda ctx: CheckResult("t.mpi", Verdict.PASS, ""),
                                                      needs=("mpi",)))
    assert outcome.verdict is Verdict.SKIPPED and "needs mpi: mpirun is not on PATH" in outcome.message


def test_node_result_of_one_failing_and_one_erroring_check() -> None:
    specs = [
        spec_running("t.ok", lambda ctx: CheckResult("t.ok", Verdict.PASS, "fine")),
        spec_running("t.err", lambda ctx: 1 / 0),
    ]
    node = run_node(context(None), specs)
    assert [c.verdict for c in node.checks] == [Verdict.PASS, Verdict.ERROR]
    assert node.verdict is Verdict.ERROR and aggregate([node], load_references()).exit_code == 1
    only_error = run_node(context(None), specs[1:])
    assert aggregate([only_error], load_references()).exit_code == 3


# --- GPU checks against recorded NVML values --------------------------------------------------


def test_healthy_gpus_pass_every_gpu_check() -> None:
    ctx = context(HEALTHY)
    results = {name: run(ctx, name) for name in GPU_CHECKS}
    assert {name: r.verdict for name, r in results.items()} == dict.fromkeys(GPU_CHECKS, Verdict.PASS)
    assert "4 x NVIDIA A100-SXM4-80GB as --gpus 4 says" in results["gpu.inventory"].message
    assert results["gpu.inventory"].facts["GPU0"].startswith("NVIDIA A100-SXM4-80GB 00000000:07:00.0")


def test_uncorrected_ecc_errors_fail_and_name_the_gpu() -> None:
    result = run(context(ECC_ERRORS), "gpu.ecc")
    assert result.verdict is Verdict.FAIL
    assert "GPU1 (NVIDIA A100-SXM4-80GB 00000000:17:00.0): 3 uncorrected ECC errors" in result.message
    history = run(context(ECC_HISTORY), "gpu.ecc")
    assert history.verdict is Verdict.WARN and "2 uncorrected ECC errors in its lifetime" in history.message
    assert verdicts(ECC_ERRORS)["gpu.pcie"] is Verdict.PASS  # one problem, one check


def test_a_narrowed_pcie_link_fails_while_an_idle_generation_only_warns() -> None:
    narrow = run(context(NARROW_PCIE), "gpu.pcie")
    assert narrow.verdict is Verdict.FAIL and "GPU2" in narrow.message and "x8, the device has x16" in narrow.message
    idle = run(context(IDLE_PCIE_GEN), "gpu.pcie")
    assert idle.verdict is Verdict.WARN and "PCIe gen 1 of 4" in idle.message


def test_a_throttled_hot_gpu_fails() -> None:
    result = run(context(THROTTLED), "gpu.thermal")
    assert result.verdict is Verdict.FAIL
    assert "GPU3" in result.message and "hw_thermal_slowdown" in result.message and "91 C" in result.message
    soft = run(context(SOFT_THROTTLED), "gpu.thermal")
    assert soft.verdict is Verdict.WARN and "sw_thermal_slowdown" in soft.message


def test_pending_or_failed_row_remapping_fails() -> None:
    pending = run(context(REMAP_PENDING), "gpu.retired_memory")
    assert pending.verdict is Verdict.FAIL and "GPU0" in pending.message and "reset the GPU" in pending.message
    failed = run(context(REMAP_FAILED), "gpu.retired_memory")
    assert failed.verdict is Verdict.FAIL and "GPU1" in failed.message and "needs replacing" in failed.message


def test_inventory_against_what_slurm_says() -> None:
    missing = run(context(MISSING_GPU, gpus=4), "gpu.inventory")
    assert missing.verdict is Verdict.FAIL and "found 3 GPUs, --gpus 4 says 4" in missing.message
    wrong_model = run(context(HEALTHY, gpus=4, model="h100"), "gpu.inventory")
    assert wrong_model.verdict is Verdict.FAIL and "says h100" in wrong_model.message
    right_model = run(context(HEALTHY, gpus=4, model="a100"), "gpu.inventory")
    assert right_model.verdict is Verdict.PASS
    unknown = run(context(HEALTHY, gpus=None), "gpu.inventory")
    assert unknown.verdict is Verdict.PASS and "expected: nothing" not in unknown.message


def test_no_gpu_skips_the_gpu_checks_unless_gpus_are_expected() -> None:
    assert verdicts(None, gpus=None) == dict.fromkeys(GPU_CHECKS, Verdict.SKIPPED)
    assert "no NVIDIA GPU/driver" in run(context(None, gpus=None), "gpu.ecc").message
    expected = verdicts(None, gpus=2)
    assert expected["gpu.inventory"] is Verdict.FAIL and expected["gpu.ecc"] is Verdict.SKIPPED


def test_this_machine_has_no_gpu_so_the_real_reader_says_so() -> None:
    with pytest.raises(NvmlUnavailable, match="no NVIDIA GPU/driver"):
        PynvmlReader().snapshot()
    ctx = NodeContext("here", Settings(), load_references())
    assert run(ctx, "gpu.inventory").verdict is Verdict.SKIPPED


class _NvmlError(Exception):
    pass


def fake_pynvml(not_supported: set[str]) -> types.SimpleNamespace:
    """A stand-in for `pynvml` answering for one GPU; queries in `not_supported` raise NVMLError."""
    answers: dict[str, Any] = {
        "nvmlDeviceGetName": b"Tesla T4",
        "nvmlDeviceGetUUID": "GPU-1",
        "nvmlDeviceGetPciInfo": types.SimpleNamespace(busId=b"00000000:3B:00.0"),
        "nvmlDeviceGetMemoryInfo": types.SimpleNamespace(total=16 * 2**30, used=0),
        "nvmlDeviceGetEccMode": (1, 1),
        "nvmlDeviceGetTotalEccErrors": 0,
        "nvmlDeviceGetRetiredPages": [],
        "nvmlDeviceGetRetiredPagesPendingStatus": 0,
        "nvmlDeviceGetRemappedRows": (0, 0, 0, 0),
        "nvmlDeviceGetTemperature": 40,
        "nvmlDeviceGetTemperatureThreshold": 85,
        "nvmlDeviceGetCurrentClocksThrottleReasons": 0,
        "nvmlDeviceGetCurrPcieLinkGeneration": 3,
        "nvmlDeviceGetMaxPcieLinkGeneration": 3,
        "nvmlDeviceGetCurrPcieLinkWidth": 16,
        "nvmlDeviceGetMaxPcieLinkWidth": 16,
    }

    def answer(name: str) -> Any:
        def call(*args: Any) -> Any:
            if name in not_supported:
                raise _NvmlError("Not Supported")
            return answers[name]

        return call

    module = types.SimpleNamespace(
        NVMLError=_NvmlError, nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: object(), nvmlSystemGetDriverVersion=lambda: "535.104.05",
        nvmlSystemGetCudaDriverVersion=lambda: 12020,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1, NVML_VOLATILE_ECC=0, NVML_AGGREGATE_ECC=1,
        NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS=0, NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR=1,
        NVML_TEMPERATURE_GPU=0, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN=1,
    )
    for name in answers:
        setattr(module, name, answer(name))
    return module


def test_the_pynvml_reader_maps_values_and_unsupported_queries_to_none() -> None:
    snapshot = PynvmlReader(fake_pynvml({"nvmlDeviceGetRemappedRows"})).snapshot()
    gpu = snapshot.gpus[0]
    assert (snapshot.driver_version, snapshot.cuda_driver_version) == ("535.104.05", "12.2")
    assert gpu.name == "Tesla T4" and gpu.pci_bus_id == "00000000:3B:00.0" and gpu.pcie_width_max == 16
    assert gpu.remapped_rows_pending is None and gpu.ecc_uncorrected_volatile == 0
    ctx = NodeContext("n1", Settings(expected_gpus=ExpectedGpus(1)), load_references(),
                      nvml=RecordedNvml(snapshot.to_dict()))
    assert {name: run(ctx, name).verdict for name in GPU_CHECKS} == dict.fromkeys(GPU_CHECKS, Verdict.PASS)


def test_gpu_checks_do_not_import_tensorflow(tmp_path: Path) -> None:
    """A fresh node has a driver before it has the user stack: the GPU checks need no TensorFlow."""
    code = f"""
import json, sys
from harness.validate.nvml import RecordedNvml
from harness.validate.context import NodeContext, Settings, ExpectedGpus
from harness.validate.references import load_references
from harness.validate.runner import run_node
from harness.validate.spec import select_checks
ctx = NodeContext("n1", Settings(expected_gpus=ExpectedGpus(4)), load_references(),
                  nvml=RecordedNvml(json.loads({json.dumps(json.dumps(HEALTHY))})))
node = run_node(ctx, select_checks(["gpu", "node"], light=True))
print(node.verdict.value, "tensorflow" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PASS", "False"]


# --- references, expected versions, small parsers ----------------------------------------------------


def test_references_judge_a_gpu_against_its_peak_and_a_cpu_against_a_site_row() -> None:
    table = load_references()
    ref = table.reference("gpus", "NVIDIA A100-SXM4-80GB", "matmul_fp16")
    assert ref is not None and ref.unit == "TFLOP/s" and ref.value == pytest.approx(312 * 0.4)
    assert table.reference("gpus", "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "matmul_fp32") is not None  # contained name
    assert table.reference("cpus", "Some CPU", "matmul_fp32") is None
    site = parse_references("cpus:\n  Some CPU: {matmul_fp32: 0.1}\nfleet: {warn: 0.05}\n", "site.yaml")
    cpu = site.reference("cpus", "Some CPU", "matmul_fp32")
    assert cpu is not None and cpu.value == pytest.approx(0.1) and site.fleet_warn == 0.05 and site.fleet_fail == 0.25
    verdict, message = judge_measurement(Measurement("CPU:0 fp32", 40.0, "GFLOP/s", "matmul_fp32", cpu))
    assert verdict is Verdict.FAIL and "60% below the reference 0.100 TFLOP/s" in message
    assert judge_measurement(Measurement("CPU:0 fp32", 95.0, "GFLOP/s", "matmul_fp32", cpu))[0] is Verdict.PASS
    assert judge_measurement(Measurement("CPU:0 fp32", 80.0, "GFLOP/s", "matmul_fp32", cpu))[0] is Verdict.WARN
    no_ref, text = judge_measurement(Measurement("CPU:0 fp32", 40.0, "GFLOP/s", "matmul_fp32"))
    assert no_ref is Verdict.PASS and "no reference" in text
    assert judge_measurement(Measurement("x", float("nan"), "GB/s"))[0] is Verdict.FAIL


def test_expected_versions_per_node_and_globs(tmp_path: Path) -> None:
    path = tmp_path / "expected.yaml"
    path.write_text('tensorflow: "2.21.*"\nnvidia_driver: "550.*"\nnodes:\n  n2: {nvidia_driver: "535.*"}\n')
    expected = load_expected(path)
    assert expected.for_node("n1") == {"tensorflow": "2.21.*", "nvidia_driver": "550.*"}
    assert expected.for_node("n2")["nvidia_driver"] == "535.*"
    assert matches("2.21.0", "2.21.*") and not matches("2.20.1", "2.21.*") and not matches(None, "1.0")
    assert matches(None, "not installed")


def test_expected_version_mismatch_fails_naming_node_check_and_values(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURMD_NODENAME", "gpu-a07")
    expected = workdir / "expected.yaml"
    expected.write_text('tensorflow: "2.99.*"\npython: "3.*"\n')
    code = cli.main(["validate", "--local", "--checks", "stack.versions", "--expected", str(expected), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["exit_code"] == 1
    node = report["nodes"][0]
    check = node["checks"][0]
    assert (node["node"], node["verdict"], check["name"], check["verdict"]) == (
        "gpu-a07", "FAIL", "stack.versions", "FAIL")
    assert check["message"].startswith("tensorflow: expected 2.99.*, found 2.21")
    assert "python" not in check["message"] and check["facts"]["python"].startswith("3.")


def test_parsers_of_slurm_gres_meminfo_and_busbw() -> None:
    assert parse_gres("gpu:a100:4(S:0-1)") == ExpectedGpus(4, "a100", "Slurm Gres=gpu:a100:4(S:0-1)")
    assert parse_gres("gpu:2").count == 2  # type: ignore[union-attr]
    both = parse_gres("gpu:a100:2,gpu:t4:1")
    assert both is not None and (both.count, both.model) == (3, None)
    assert parse_gres("(null)") is None and parse_gres("craynetwork:4") is None
    info = read_meminfo("MemTotal:       16318480 kB\nMemAvailable:    8000000 kB\nHugePages_Total: 0\n")
    assert info == {"MemTotal": 16318480 * 1024, "MemAvailable": 8000000 * 1024, "HugePages_Total": 0}
    assert bus_bandwidth(1e9, 1.0, 2) == pytest.approx(1e9)  # 2(n-1)/n = 1 for two ranks
    assert bus_bandwidth(1e9, 1.0, 8) == pytest.approx(1.75e9)


# --- aggregation: the fleet rules ------------------------------------------------------------------


def synthetic_node(name: str, matmul: float, tf: str = "2.21.0", verdict: Verdict = Verdict.PASS) -> NodeResult:
    checks = (
        CheckResult("stack.versions", Verdict.PASS, "ok", facts={"tensorflow": tf, "python": "3.11.2"}),
        CheckResult("compute.matmul", verdict, "measured",
                    (Measurement("CPU:0 fp32", matmul, "GFLOP/s", "matmul_fp32", None, fleet=True),
                     Measurement("unjudged", 1.0, "GiB"))),
    )
    return NodeResult(name, checks, "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00", True, "0.1.0")


def test_a_node_below_the_fleet_median_is_an_outlier() -> None:
    nodes = [synthetic_node("n1", 100.0), synthetic_node("n2", 98.0), synthetic_node("n3", 60.0),
             synthetic_node("n4", 85.0), synthetic_node("n5", 140.0)]
    report = aggregate(nodes, load_references(), mode="partition")
    by_node = {node.node: node for node in report.nodes}
    assert {name: node.verdict for name, node in by_node.items()} == {
        "n1": Verdict.PASS, "n2": Verdict.PASS, "n3": Verdict.FAIL, "n4": Verdict.WARN, "n5": Verdict.PASS}
    assert report.medians[0].median == 98.0 and report.medians[0].nodes == 5
    message = by_node["n3"].check("compute.matmul").message  # type: ignore[union-attr]
    assert message.startswith("fleet: CPU:0 fp32: 60.0 GFLOP/s is 39% below the fleet median 98.0 GFLOP/s of 5 nodes")
    assert [(f.node, f.verdict) for f in report.findings] == [("n3", Verdict.FAIL), ("n4", Verdict.WARN)]
    assert report.exit_code == 1


def test_two_nodes_are_a_fleet_and_one_node_is_not() -> None:
    pair = aggregate([synthetic_node("n1", 100.0), synthetic_node("n2", 50.0)], load_references())
    assert [node.verdict for node in pair.nodes] == [Verdict.PASS, Verdict.FAIL]
    alone = aggregate([synthetic_node("n1", 1.0)], load_references())
    assert alone.medians == () and alone.nodes[0].verdict is Verdict.PASS and alone.exit_code == 0


def test_fleet_rules_do_not_turn_an_error_into_anything_else() -> None:
    broken = synthetic_node("n3", 10.0, verdict=Verdict.ERROR)
    nodes = [synthetic_node("n1", 100.0), synthetic_node("n2", 100.0), broken]
    report = aggregate(nodes, load_references())
    assert report.nodes[2].check("compute.matmul").verdict is Verdict.ERROR  # type: ignore[union-attr]


def test_a_node_whose_stack_differs_from_the_majority_fails_alone() -> None:
    nodes = [synthetic_node("n1", 100.0), synthetic_node("n2", 100.0, tf="2.20.0"), synthetic_node("n3", 100.0)]
    report = aggregate(nodes, load_references())
    assert [node.verdict for node in report.nodes] == [Verdict.PASS, Verdict.FAIL, Verdict.PASS]
    stack = report.nodes[1].check("stack.versions")
    assert stack is not None and "tensorflow 2.20.0 differs from 2.21.0 on 2 of 3 nodes" in stack.message
    tie = aggregate([synthetic_node("n1", 100.0), synthetic_node("n2", 100.0, tf="2.20.0")], load_references())
    assert [node.verdict for node in tie.nodes] == [Verdict.WARN, Verdict.WARN]


def test_node_results_round_trip_and_a_wrong_version_names_both(tmp_path: Path) -> None:
    node = synthetic_node("n1", 100.0)
    assert node_from_dict(json.loads(json.dumps(node.to_dict())), "n1.json") == node
    store.write_node(tmp_path, node)
    assert store.read_nodes(tmp_path) == [node]
    old = {**node.to_dict(), "schema_version": 0}
    with pytest.raises(UserInputError, match="schema_version 0 is not the one this harness reads \\(1\\)"):
        node_from_dict(old, "old.json")


# --- the JSON contract -----------------------------------------------------------------------------


def test_the_schema_validator_finds_what_breaks_the_contract() -> None:
    report = aggregate([synthetic_node("n1", 100.0), synthetic_node("n2", 40.0)], load_references()).to_dict()
    assert schema.problems(report) == []
    broken = json.loads(json.dumps(report))
    broken["nodes"][0]["checks"][0]["verdict"] = "OK"
    del broken["nodes"][1]["node"]
    broken["summary"]["EXTRA"] = 1
    broken["exit_code"] = True
    found = schema.problems(broken)
    assert "$.nodes[0].checks[0].verdict: 'OK' is not one of ['PASS', 'WARN', 'FAIL', 'ERROR', 'SKIPPED']" in found
    assert "$.nodes[1]: missing 'node'" in found and "$.summary: unexpected key 'EXTRA'" in found
    assert any(problem.startswith("$.exit_code: True") for problem in found)


def test_the_schema_agrees_with_jsonschema_where_it_is_installed() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    report = aggregate([synthetic_node("n1", 100.0)], load_references()).to_dict()
    jsonschema.validate(report, schema.load_schema())


# --- end to end through the CLI -------------------------------------------------------------------


def test_local_light_end_to_end_writes_table_json_html_and_history(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURMD_NODENAME", "node-7")
    out = workdir / "validation"
    shared = workdir / "shared"
    shared.mkdir()
    code = cli.main(["validate", "--local", "--light", "--gpus", "0", "--out", str(out), "--shared", str(shared)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    for name in ("node.memory", "compute.matmul", "memory.host_bandwidth", "gpu.ecc", "collective.allreduce"):
        assert name in captured.out
    assert "node node-7: PASS" in captured.out and "e2e.training" not in captured.out
    report = json.loads((out / "validation.json").read_text())
    assert schema.problems(report) == [] and report["light"] is True and report["exit_code"] == 0
    checks = {c["name"]: c for c in report["nodes"][0]["checks"]}
    assert checks["gpu.ecc"]["verdict"] == "SKIPPED" and "no NVIDIA GPU" in checks["gpu.ecc"]["message"]
    assert checks["node.shared_fs"]["verdict"] == "PASS" and list(shared.iterdir()) == []
    matmul = checks["compute.matmul"]["measurements"][0]
    assert matmul["unit"] == "GFLOP/s" and matmul["value"] > 0 and matmul["reference"] is None
    node_file = json.loads((out / "nodes" / "node-7.json").read_text())
    assert schema.problems(node_file, schema.node_schema()) == []
    html = (out / "validation.html").read_text()
    assert "Node validation" in html and "Node node-7: PASS" in html and "compute.matmul" in html
    assert html.count("data:image/png;base64,") >= 3  # matmul, host bandwidth, all-reduce
    assert len((out / "history" / "node-7.jsonl").read_text().splitlines()) == 1

    code = cli.main(["validate", "--local", "--checks", "node", "--gpus", "0", "--out", str(out)])
    assert code == 0
    assert len((out / "history" / "node-7.jsonl").read_text().splitlines()) == 2
    assert "History" in (out / "validation.html").read_text()


def test_a_check_that_raises_sets_the_exit_code(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: NodeContext) -> CheckResult:
        raise OSError("cannot read /proc/meminfo")

    monkeypatch.setitem(CHECKS._items, "node.memory", replace(CHECKS.get("node.memory"), run=boom))
    assert cli.main(["validate", "--local", "--checks", "node.memory", "--gpus", "0"]) == 3
    out = capsys.readouterr().out
    assert "ERROR" in out and "OSError: cannot read /proc/meminfo" in out and "nothing could be validated" in out
    assert cli.main(["validate", "--local", "--checks", "node.memory,node.disk", "--gpus", "0", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [c["verdict"] for c in report["nodes"][0]["checks"]] == ["ERROR", "PASS"]


def test_a_site_row_changes_only_its_own_figures() -> None:
    site = parse_references("gpus:\n  NVIDIA H100 80GB HBM3: {matmul_bf16: 700, basis: measured}\n", "site.yaml")
    bf16 = site.reference("gpus", "NVIDIA H100 80GB HBM3", "matmul_bf16")
    fp32 = site.reference("gpus", "NVIDIA H100 80GB HBM3", "matmul_fp32")
    assert bf16 is not None and bf16.value == 700 and "reference" in bf16.source
    assert fp32 is not None and fp32.value == pytest.approx(67 * 0.5) and "peak" in fp32.source


def test_the_training_check_asks_for_configs_harness_accepts(tmp_path: Path) -> None:
    from harness.config import load_config
    from harness.validate.checks.e2e import OVERRIDES, plans

    for plan in plans(gpus=4, horovod=True):
        config = load_config(None, [*OVERRIDES, f"distribute.strategy={plan.strategy}", f"run.output_dir={tmp_path}"])
        assert config.distribute.strategy == plan.strategy and config.training.epochs == 2


# --- e2e.training: strategies, samples/s and scaling efficiency, with injected runs ----------------


def test_which_strategies_run_on_cpu_and_gpu_nodes() -> None:
    from harness.validate.checks.e2e import Plan, efficiency, plans

    assert efficiency(150.0, 2, 100.0) == pytest.approx(0.75)
    assert efficiency(400.0, 4, 100.0) == pytest.approx(1.0)
    assert plans(0, horovod=True) == [Plan("single"), Plan("multiworker", 2, 2), Plan("horovod", 2, 2)]
    assert plans(0, horovod=False) == [Plan("single"), Plan("multiworker", 2, 2)]
    assert plans(4, horovod=True) == [Plan("single"), Plan("mirrored", 1, 4), Plan("multiworker", 4, 4),
                                      Plan("horovod", 4, 4)]
    assert plans(1, horovod=True) == [Plan("single")]  # one GPU: nothing to scale to
    assert [plan.label for plan in plans(4, horovod=False)] == ["single", "mirrored x4", "multiworker x4"]


def fake_runs(rates: dict[str, float | None], seen: list[Path] | None = None) -> Any:
    """A stand-in for run_plan: the given rate per strategy (None: it failed), no training."""
    from harness.validate.checks.e2e import Outcome, Plan

    def run_fake(plan: Plan, folder: Path) -> Outcome:
        if seen is not None:
            assert folder.is_dir()
            seen.append(folder)
        rate = rates[plan.strategy]
        return Outcome(plan, rate, "" if rate else "harness train exited 1: RuntimeError: collective timed out")

    return run_fake


def no_horovod(monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    from harness.validate import context as context_module

    monkeypatch.setitem(context_module.MISSING, "horovod",
                        lambda ctx: None if installed else "horovod is not installed (scripts/install_horovod.sh)")


def by_name(result: CheckResult) -> dict[str, Measurement]:
    return {m.name: m for m in result.measurements}


def test_a_cpu_node_reports_rates_efficiency_and_the_fastest_strategy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.validate.checks.e2e import measure

    no_horovod(monkeypatch, installed=True)
    seen: list[Path] = []
    ctx = context(None, gpus=None, scratch_dir=tmp_path)
    result = measure(ctx, fake_runs({"single": 100.0, "multiworker": 60.0, "horovod": 50.0}, seen))
    found = by_name(result)
    assert set(found) == {"single", "multiworker x2", "multiworker x2 efficiency", "horovod x2",
                          "horovod x2 efficiency"}
    assert found["multiworker x2 efficiency"].value == pytest.approx(0.3)
    assert found["horovod x2 efficiency"].value == pytest.approx(0.25)
    assert found["single"].metric == "training_samples_per_s" and found["single"].fleet
    assert found["horovod x2"].fleet and not found["horovod x2 efficiency"].fleet
    # on a CPU node the processes share the cores: a low efficiency is reported, not judged
    assert result.verdict is Verdict.PASS
    assert "fastest with 2 processes: multiworker 1.2x horovod" in result.message
    assert "efficiency multiworker x2 0.30, horovod x2 0.25" in result.message
    assert seen and seen[0].parent == tmp_path and not seen[0].exists()  # its scratch folder is removed
    # nodes are compared on each strategy's rate, and the report keeps to its schema
    nodes = [NodeResult(node, (result,), "t0", "t1", False, "0") for node in ("n1", "n2")]
    report = aggregate(nodes, ctx.references)
    assert {m.measurement for m in report.medians} == {"single", "multiworker x2", "horovod x2"}
    assert schema.problems(report.to_dict()) == []


def test_without_horovod_the_message_says_so_and_it_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.validate.checks.e2e import measure

    no_horovod(monkeypatch, installed=False)
    result = measure(context(None, gpus=None, scratch_dir=tmp_path), fake_runs({"single": 100.0, "multiworker": 60.0}))
    assert result.verdict is Verdict.PASS and "horovod: not installed" in result.message
    assert "fastest" not in result.message  # one multi-process strategy: nothing to choose between
    assert not any(name.startswith("horovod") for name in by_name(result))


def test_a_gpu_node_warns_below_half_of_ideal_scaling_and_never_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.validate.checks.e2e import measure

    no_horovod(monkeypatch, installed=True)
    rates = {"single": 100.0, "mirrored": 380.0, "multiworker": 150.0, "horovod": 360.0}
    result = measure(context(HEALTHY, scratch_dir=tmp_path), fake_runs(rates))
    found = by_name(result)
    assert found["mirrored x4 efficiency"].value == pytest.approx(0.95)
    assert found["multiworker x4 efficiency"].value == pytest.approx(0.375)
    assert result.verdict is Verdict.WARN and result.message.startswith("multiworker x4: efficiency 0.38, below 0.5")
    assert "fastest with 4 GPUs: mirrored 1.1x horovod, 2.5x multiworker" in result.message
    awful = measure(context(HEALTHY, scratch_dir=tmp_path), fake_runs({**rates, "horovod": 1.0}))
    assert awful.verdict is Verdict.WARN  # an efficiency of 0.0025 is still only a WARN


@pytest.mark.parametrize("failing", ["single", "multiworker", "horovod"])
def test_a_strategy_that_fails_to_run_is_an_error_naming_it(
    failing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.validate.checks.e2e import measure

    no_horovod(monkeypatch, installed=True)
    rates: dict[str, float | None] = {"single": 100.0, "multiworker": 60.0, "horovod": 50.0, failing: None}
    result = measure(context(None, gpus=None, scratch_dir=tmp_path), fake_runs(rates))
    label = failing if failing == "single" else f"{failing} x2"
    assert result.verdict is Verdict.ERROR
    assert result.message.startswith(f"{label} failed: harness train exited 1: RuntimeError")
    names = set(by_name(result))
    assert not any(name.startswith(failing) for name in names)
    if failing == "single":  # no base rate: no efficiency, but the others' rates are kept
        assert names == {"multiworker x2", "horovod x2"}
    else:
        assert "single" in names and len(names) == 3


def test_the_rates_are_saved_for_auto_with_the_jobs_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from harness.distribute import measured
    from harness.validate.checks.e2e import measure

    no_horovod(monkeypatch, installed=True)
    store = tmp_path / "store"
    ctx = replace(context(None, gpus=None, scratch_dir=tmp_path, measurements_dir=store), partition="cpu")
    result = measure(ctx, fake_runs({"single": 100.0, "multiworker": 60.0, "horovod": 80.0}))
    assert "auto with 2 processes now picks horovod here" in result.message
    [saved], warnings = measured.read_records(store)
    assert warnings == [] and (saved.node, saved.partition, saved.processes) == ("n1", "cpu", 2)
    assert saved.rates == {"single": 100.0, "multiworker": 60.0, "horovod": 80.0}
    assert saved.machine == measured.this_machine() and saved.versions == measured.stack_versions()
    assert saved.measured_by.startswith("harness validate") and saved.measured_at.endswith("+00:00")
    # the next validation of the node replaces its record; only the strategies that ran are kept
    again = measure(ctx, fake_runs({"single": 100.0, "multiworker": 60.0, "horovod": None}))
    assert "now picks multiworker here" in again.message
    [newer], _ = measured.read_records(store)
    assert newer.rates == {"single": 100.0, "multiworker": 60.0}


def test_without_a_store_or_a_multi_process_rate_nothing_is_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.validate.checks.e2e import measure

    no_horovod(monkeypatch, installed=True)
    result = measure(context(None, gpus=None, scratch_dir=tmp_path), fake_runs({"single": 1.0, "multiworker": 1.0,
                                                                                 "horovod": 1.0}))
    assert "auto" not in result.message  # no measurements folder in the settings: nothing written
    store = tmp_path / "store"
    one_gpu = context(node_record(a100(0)), gpus=1, scratch_dir=tmp_path, measurements_dir=store)
    measure(one_gpu, fake_runs({"single": 100.0}))
    assert not store.exists()


def test_a_store_that_cannot_be_written_is_a_note_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.validate.checks.e2e import measure

    no_horovod(monkeypatch, installed=True)
    (tmp_path / "file").write_text("x")
    ctx = context(None, gpus=None, scratch_dir=tmp_path, measurements_dir=tmp_path / "file" / "store")
    result = measure(ctx, fake_runs({"single": 100.0, "multiworker": 60.0, "horovod": 80.0}))
    assert result.verdict is Verdict.PASS and "rates not saved for auto" in result.message


def test_a_node_job_saves_under_its_partition_and_the_store_named_by_the_environment(tmp_path: Path) -> None:
    from harness.validate.suite import Request, prepare

    environ = {"SLURM_JOB_PARTITION": "cpu", "SLURMD_NODENAME": "c7", "HARNESS_MEASUREMENTS": str(tmp_path / "m")}
    prepared = prepare(Request(checks=["e2e.training"], gpus=0), environ, nvml=RecordedNvml(None))
    assert prepared.context.partition == "cpu"
    assert prepared.context.settings.measurements_dir == tmp_path / "m"
    light = prepare(Request(checks=["node"], gpus=0), environ, nvml=RecordedNvml(None))
    assert light.context.settings.measurements_dir is None  # no e2e check: the store is not even looked at


def test_a_run_that_trained_as_another_strategy_does_not_count(tmp_path: Path) -> None:
    from harness.rundir.records import REPORT_SCHEMA_VERSION
    from harness.validate.checks.e2e import Plan, read_rate

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plan = Plan("horovod", 2, 2)
    assert read_rate(plan, run_dir).rate is None and "report.json" in read_rate(plan, run_dir).error

    def report(strategy: str, replicas: int) -> None:
        record = {"schema_version": REPORT_SCHEMA_VERSION, "training": {"strategy": strategy, "replicas": replicas}}
        (run_dir / "report.json").write_text(json.dumps(record))

    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "samples_per_s": 10.0}\n{"epoch": 2, "samples_per_s": 42.5}\n')
    report("multiworker", 2)
    assert read_rate(plan, run_dir).error == "ran as 'multiworker' with 2 replicas"
    report("horovod", 1)
    assert read_rate(plan, run_dir).rate is None
    report("horovod", 2)
    assert read_rate(plan, run_dir).rate == 42.5  # the last epoch: steady state, no tracing


@pytest.mark.slow
def test_the_training_check_runs_every_strategy_on_this_machine(tmp_path: Path) -> None:
    from tests.conftest import horovod_available

    result = run(context(None, gpus=None, scratch_dir=tmp_path), "e2e.training")
    found = by_name(result)
    expected = ["single", "multiworker x2", *(["horovod x2"] if horovod_available() else [])]
    assert result.verdict is Verdict.PASS, result.message
    for name in expected:
        assert found[name].value > 0 and found[name].unit == "samples/s", name
        if name != "single":
            assert 0 < found[f"{name} efficiency"].value < 1.5, name
    assert ("fastest with 2 processes" in result.message) == horovod_available()
    assert list(tmp_path.iterdir()) == []  # the runs' scratch folder is gone


def test_a_shared_folder_that_is_not_there_fails(tmp_path: Path) -> None:
    missing = run(context(None, gpus=None, shared_dir=tmp_path / "not-mounted"), "node.shared_fs")
    assert missing.verdict is Verdict.FAIL and "not-mounted" in missing.message


def test_one_plot_per_benchmark_measurement() -> None:
    from harness.validate.output import benchmark_plots

    report = aggregate([synthetic_node("n1", 100.0), synthetic_node("n2", 80.0)], load_references())
    captions = [caption for caption, _ in benchmark_plots(report).values()]
    assert captions == ["compute.matmul: CPU:0 fp32 per node (GFLOP/s)"]


# --- partition mode: pairs and blame, drain and resume rules, Slurm's answers (no cluster) ----------

from harness.slurm.node_jobs import PinnedResources, parse_job_states, pinned_parameters  # noqa: E402
from harness.validate import drain as drain_rules  # noqa: E402
from harness.validate import pairs as pair_rules  # noqa: E402
from harness.validate.pairs import PairOutcome  # noqa: E402

SINFO_NODES_TEXT = (
    "n1|debug*|idle|none\n"
    "n2|debug*|drained|harness-validate: compute.matmul FAIL: slow\n"
    "n3|debug*|draining|disk replaced, waiting for burn-in\n"
    "n4|debug*|down*|Not responding\n"
    "n1|urgent|idle|none\n"
    "n2|urgent|drained|harness-validate: compute.matmul FAIL: slow\n"
)


def pair(a: str, b: str, verdict: Verdict, busbw: float | None = 10.0, retest: bool = False) -> PairOutcome:
    return PairOutcome((a, b), verdict, f"{a}-{b} {verdict.value}", busbw, retest)


def test_pairs_cover_every_node_and_an_odd_one_pairs_with_the_first() -> None:
    assert pair_rules.plan_pairs(["n1", "n2", "n3", "n4"]) == [("n1", "n2"), ("n3", "n4")]
    assert pair_rules.plan_pairs(["n1", "n2", "n3"]) == [("n1", "n2"), ("n3", "n1")]
    assert pair_rules.plan_pairs(["n1"]) == []


def test_a_pair_far_below_the_median_of_the_pairs_fails() -> None:
    judged, median = pair_rules.judge_rates(
        [pair("n1", "n2", Verdict.PASS, 10.0), pair("n3", "n4", Verdict.PASS, 10.4),
         pair("n5", "n6", Verdict.PASS, 4.0), pair("n7", "n8", Verdict.ERROR, None)], warn=0.1, fail=0.25)
    assert median == pytest.approx(10.0)
    assert [o.verdict for o in judged] == [Verdict.PASS, Verdict.PASS, Verdict.FAIL, Verdict.ERROR]
    assert "60% below the median" in judged[2].message
    alone, none = pair_rules.judge_rates([pair("n1", "n2", Verdict.PASS, 1.0)], 0.1, 0.25)
    assert none is None and alone[0].verdict is Verdict.PASS  # one pair has no median to fall below


def test_a_failing_pair_is_retested_with_good_nodes_and_the_blame_lands_on_one() -> None:
    first = [pair("n1", "n2", Verdict.FAIL, 2.0), pair("n3", "n4", Verdict.PASS)]
    assert pair_rules.plan_retests(first) == [("n1", "n3"), ("n2", "n4")]
    retests = [pair("n1", "n3", Verdict.PASS, retest=True), pair("n2", "n4", Verdict.FAIL, 2.0, retest=True)]
    results = pair_rules.blame(["n1", "n2", "n3", "n4"], [*first, *retests])
    assert {node: r.verdict for node, r in results.items()} == {
        "n1": Verdict.PASS, "n2": Verdict.FAIL, "n3": Verdict.PASS, "n4": Verdict.PASS}
    assert "this node is blamed" in results["n2"].message
    assert "failed with n2, which is blamed" in results["n1"].message
    assert [m.name for m in results["n2"].measurements] == ["with n1", "with n4 (retest)"]
    assert all(r.name == "collective.internode" for r in results.values())


def test_two_nodes_cannot_place_the_blame_and_both_keep_the_failure() -> None:
    first = [pair("n1", "n2", Verdict.ERROR, None)]
    assert pair_rules.plan_retests(first) == []
    results = pair_rules.blame(["n1", "n2"], first)
    assert all(r.verdict is Verdict.ERROR and "may be on either node" in r.message for r in results.values())


def test_a_pair_that_fails_once_while_both_nodes_pass_elsewhere_is_a_warning() -> None:
    outcomes = [pair("n1", "n2", Verdict.FAIL), pair("n3", "n4", Verdict.PASS),
                pair("n1", "n3", Verdict.PASS, retest=True), pair("n2", "n4", Verdict.PASS, retest=True)]
    results = pair_rules.blame(["n1", "n2", "n3", "n4"], outcomes)
    assert results["n1"].verdict is Verdict.WARN and results["n2"].verdict is Verdict.WARN
    assert "intermittent" in results["n1"].message
    assert pair_rules.blame(["n1"], [])["n1"].verdict is Verdict.SKIPPED


def failing_node(name: str, *checks: CheckResult) -> NodeResult:
    return NodeResult(name, checks, "t0", "t1", False, "0")


def test_the_drain_reason_names_the_tool_and_the_worst_check_and_fits_slurm() -> None:
    node = failing_node("n2", CheckResult("node.disk", Verdict.PASS, "ok"),
                        CheckResult("compute.matmul", Verdict.FAIL, "CPU:0 fp32: 3 GFLOP/s\nfar below"),
                        CheckResult("gpu.ecc", Verdict.ERROR, "could not run: " + "x" * 500))
    reason = drain_rules.drain_reason(node)
    assert reason.startswith("harness-validate: gpu.ecc ERROR: could not run: xxx")
    assert reason.endswith("... (+1 more)") and len(reason) == drain_rules.MAX_REASON
    short = drain_rules.drain_reason(failing_node("n2", CheckResult("compute.matmul", Verdict.FAIL, "a\nb")))
    assert short == "harness-validate: compute.matmul FAIL: a b"
    assert drain_rules.drained_by_us(short) and not drain_rules.drained_by_us("disk swap (harness-validate: x)")


def test_only_failing_nodes_whose_checks_ran_are_drained() -> None:
    not_run = failing_node("n3", CheckResult("validate.job", Verdict.ERROR, "job ended CANCELLED"))
    skipped = failing_node("n4", CheckResult("gpu.ecc", Verdict.SKIPPED, "no GPU"))
    fine = failing_node("n1", CheckResult("node.disk", Verdict.WARN, "low"))
    bad = failing_node("n2", CheckResult("stack.versions", Verdict.FAIL, "tensorflow 2.20.0 expected 2.21.*"))
    assert [drain_rules.should_drain(n) for n in (not_run, skipped, fine, bad)] == [False, False, False, True]


def test_drain_and_resume_touch_only_what_this_tool_did() -> None:
    known = drain_rules.parse_sinfo_nodes(SINFO_NODES_TEXT)
    assert known.partitions == {"debug": ["n1", "n2", "n3", "n4"], "urgent": ["n1", "n2"]}
    assert known.default_partition == "debug" and known.states["n1"].reason == ""
    assert known.states["n2"].drained_by_us and known.states["n3"].drained and not known.states["n3"].drained_by_us
    bad = CheckResult("stack.versions", Verdict.FAIL, "keras 3.1 expected 3.15.*")
    drains = drain_rules.plan_drain([failing_node(n, bad) for n in ("n1", "n2", "n3")], known.states)
    assert [(a.node, a.what) for a in drains] == [("n1", "drain"), ("n2", "leave"), ("n3", "leave")]
    assert "by someone else" in drains[2].why and "disk replaced" in drains[2].why
    assert drain_rules.shell_line(drains[0].command) == (
        "scontrol update NodeName=n1 State=DRAIN 'Reason=harness-validate: stack.versions FAIL: "
        "keras 3.1 expected 3.15.*'")
    good = CheckResult("stack.versions", Verdict.PASS, "ok")
    resumes = drain_rules.plan_resume([failing_node("n2", good), failing_node("n3", good)], known.states)
    assert [(a.node, a.what) for a in resumes] == [("n2", "resume"), ("n3", "leave")]
    assert drain_rules.shell_line(resumes[0].command) == "scontrol update NodeName=n2 State=RESUME"
    still_bad = drain_rules.plan_resume([failing_node("n2", bad)], known.states)
    assert still_bad[0].what == "leave" and "stays drained" in still_bad[0].why


def test_nodes_are_chosen_from_sinfo_with_did_you_mean() -> None:
    from harness.validate.partition import select_nodes, unusable

    known = drain_rules.parse_sinfo_nodes(SINFO_NODES_TEXT)
    assert select_nodes("urgent", None, known) == ("urgent", ["n1", "n2"])
    assert select_nodes(None, "n[2-3],n1,n2", known) == ("debug", ["n2", "n3", "n1"])
    with pytest.raises(UserInputError, match=r"unknown partition 'debgu'.*Did you mean 'debug'"):
        select_nodes("debgu", None, known)
    with pytest.raises(UserInputError, match=r"unknown node 'nn2' \(did you mean 'n2'\?\)"):
        select_nodes(None, "n1,nn2", known)
    with pytest.raises(UserInputError, match="n3 not in partition 'urgent'"):
        select_nodes("urgent", "n[1-3]", known)
    with pytest.raises(UserInputError, match="malformed Slurm hostlist"):
        select_nodes(None, "n[1-", known)
    states = known.states
    assert unusable(states["n1"]) is None and "drained" in (unusable(states["n2"]) or "")
    assert "not responding" in (unusable(states["n4"]) or "")


def test_a_pinned_job_asks_for_exactly_its_nodes() -> None:
    from harness.slurm.backends import batch_script

    params = pinned_parameters(["n1", "n2"], PinnedResources(time_minutes=7, partition="debug",
                                                             reservation="maint-1"), "harness-validate-n1-n2")
    assert params["nodes"] == 2 and params["nodelist"] == "n1,n2" and params["ntasks_per_node"] == 1
    assert params["use_srun"] is False and params["exclusive"] is True
    script = batch_script(Path("/tmp/validate-jobs"), params)
    for line in ("#SBATCH --nodelist=n1,n2", "#SBATCH --nodes=2", "#SBATCH --reservation=maint-1",
                 "#SBATCH --exclusive", "#SBATCH --partition=debug", "#SBATCH --time=7", "#SBATCH --no-requeue"):
        assert line in script, script
    assert "srun" not in script.split("# command")[1]
    assert parse_job_states("12|RUNNING\n13|PENDING\n") == {"12": "RUNNING", "13": "PENDING"}


def test_a_pair_result_needs_both_nodes_and_the_right_sum() -> None:
    from harness.validate.jobs import judge_pair

    line = {"bytes": 2**24, "ranks": 2, "seconds": 0.01, "correct": True, "nodes": ["n2", "n1"]}
    assert judge_pair(("n1", "n2"), line)["verdict"] == "PASS"
    assert judge_pair(("n1", "n2"), {**line, "correct": False})["verdict"] == "FAIL"
    one_node = judge_pair(("n1", "n2"), {**line, "nodes": ["n1", "n1"]})
    assert one_node["verdict"] == "ERROR" and "ran on n1, not on n1 and n2" in one_node["message"]


# --- slurm/healthcheck.sh, with stand-ins for harness and scontrol ------------------------------------


def fake_bin(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize(
    ("harness_exit", "reason", "exit_code", "resumed"),
    [
        (0, "harness-validate: compute.matmul FAIL: slow", 0, True),
        (0, "disk swap", 0, False),
        (1, "", 1, False),
        (2, "harness-validate: x FAIL: y", 2, False),
    ],
    ids=["pass-drained-by-us", "pass-drained-by-someone-else", "fail", "bad-arguments"],
)
def test_the_healthcheck_wrapper(tmp_path: Path, harness_exit: int, reason: str, exit_code: int,
                                 resumed: bool) -> None:
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_bin(bin_dir, "fake-harness", f'echo "harness $*" >>{calls}\necho "drain n7: reason"\nexit {harness_exit}\n')
    state = "IDLE+DRAIN" if reason else "IDLE"
    fake_bin(bin_dir, "scontrol", f'if [ "$1" = --oneliner ]; then echo "NodeName=n7 State={state} '
             f'Reason={reason} [root@2026-01-01T00:00:00]"; else echo "scontrol $*" >>{calls}; fi\n')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURMD_NODENAME": "n7", "HARNESS_HEALTHCHECK_CMD": "fake-harness",
           "HARNESS_HEALTHCHECK_ARGS": "--gpus 0", "HARNESS_HEALTHCHECK_LOG": str(tmp_path / "health.log")}
    done = subprocess.run([str(ROOT / "slurm" / "healthcheck.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == exit_code, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "harness validate --local --light --drain --yes --gpus 0"
    assert ("scontrol update NodeName=n7 State=RESUME" in lines) is resumed
    assert len(lines) == 1 + resumed
    assert f"n7 exit {harness_exit}" in (tmp_path / "health.log").read_text()
    if harness_exit == 2:
        assert "not drained" in done.stderr
    if reason == "disk swap":
        assert "drained by someone else" in done.stderr


def test_the_partition_flow_with_stand_in_jobs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Submission, waiting, pair retests, aggregation, saving and drain, with jobs run in-process."""
    import os
    from unittest import mock

    from harness.slurm import node_jobs
    from harness.validate import partition
    from harness.validate.jobs import NodeJob, PairJob
    from harness.validate.suite import Request

    submitted: list[tuple[str, ...]] = []
    commands: list[list[str]] = []

    def submit(folder: Path, function: Any, nodes: Any, resources: Any, name: str) -> str:
        submitted.append(tuple(nodes))
        if isinstance(function, NodeJob):
            with mock.patch.dict(os.environ, {"SLURMD_NODENAME": nodes[0]}):
                function()
        else:
            assert isinstance(function, PairJob)
            broken = "n2" in nodes
            outcome = {"nodes": list(nodes), "verdict": "FAIL" if broken else "PASS", "message": "sum",
                       "busbw_gbs": 1.0}
            Path(function.target).write_text(json.dumps(outcome))
        return str(len(submitted))

    def runner(command: Any) -> str:
        if command[0] == "sinfo":
            return "n1|debug*|idle|none\nn2|debug*|idle|none\nn3|debug*|idle|none\n"
        commands.append(list(command))
        return ""

    monkeypatch.setattr(node_jobs, "submit_pinned", submit)
    monkeypatch.setattr(node_jobs, "job_states", lambda ids: {})
    said: list[str] = []
    request = partition.PartitionRequest(
        Request(checks=["node.memory", "collective.internode"], light=True, gpus=0, out=workdir / "v"),
        partition="debug", drain=True, yes=True)
    outcome = partition.validate_partition(request, said.append, runner)
    assert submitted == [("n1",), ("n2",), ("n3",), ("n1", "n2"), ("n3", "n1"), ("n2", "n3")]
    report = outcome.report
    assert report is not None and report.mode == "partition"
    assert {n.node: n.verdict for n in report.nodes} == {"n1": Verdict.PASS, "n2": Verdict.FAIL, "n3": Verdict.PASS}
    assert [c.name for c in report.nodes[1].checks] == ["node.memory", "collective.internode"]
    assert commands == [["scontrol", "update", "NodeName=n2", "State=DRAIN",
                         "Reason=harness-validate: collective.internode FAIL: failed with every partner (n1, n3), "
                         "including nodes that passed with others: this node is blamed (pair n1-n2: sum)"]]
    assert any("retesting 1 pair(s)" in line for line in said)
    saved = json.loads((workdir / "v" / "validation.json").read_text())
    assert schema.problems(saved) == [] and saved["exit_code"] == 1


def test_a_failing_node_drains_itself_with_local_drain_yes(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What slurm/healthcheck.sh runs: the scontrol line is printed without --yes, and run with it."""
    calls = workdir / "calls"
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    fake_bin(bin_dir, "sinfo", "printf 'n1|debug*|idle|none\\nn2|debug*|idle|none\\n'\n")
    fake_bin(bin_dir, "scontrol", f'echo "$@" >>{calls}\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("SLURMD_NODENAME", "n2")
    expected = workdir / "expected.yaml"
    expected.write_text('nodes:\n  n2: {python: "2.7.*"}\n')
    args = ["validate", "--local", "--checks", "node.memory,stack", "--gpus", "0", "--expected", str(expected),
            "--drain"]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "would drain n2" in out and "scontrol update NodeName=n2 State=DRAIN 'Reason=harness-validate: " \
        "stack.versions FAIL: python: expected 2.7.*" in out
    assert not calls.exists()
    assert cli.main([*args, "--yes"]) == 1
    assert "drain n2: harness-validate: stack.versions FAIL" in capsys.readouterr().out
    assert calls.read_text().startswith("update NodeName=n2 State=DRAIN Reason=harness-validate: stack.versions FAIL")
