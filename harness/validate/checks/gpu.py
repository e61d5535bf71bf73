"""GPU inventory and health through NVML: no TensorFlow needed, so a fresh node can be checked.

Each check reads the node's one NVML snapshot and reports every GPU by index, model and bus id,
so a technician can find the board. What counts as bad:
- inventory: fewer (or more) GPUs, or another model, than Slurm says the node has;
- memory: less memory than the model has (a disabled bank), memory already in use by someone;
- ECC: uncorrected errors since the driver loaded (FAIL) or ever (WARN);
- retired memory: a page retirement or row remapping pending a GPU reset, a failed remapping, or
  more retired pages than NVIDIA's replacement threshold (FAIL); a few retired pages (WARN);
- thermal: at or above the slowdown temperature, or hardware slowdown (FAIL); software thermal
  slowdown or near the threshold (WARN);
- PCIe: a link narrower than the device's maximum (FAIL: a bad seat or riser); a lower
  generation (WARN: idle GPUs lower it to save power, so host<->device bandwidth tells more).
"""

from __future__ import annotations

from collections.abc import Callable

from harness.validate.context import NodeContext
from harness.validate.judge import result
from harness.validate.nvml import THROTTLE_FAIL, THROTTLE_WARN, GpuSnapshot, NvmlUnavailable, throttle_names
from harness.validate.results import CheckResult, Measurement
from harness.validate.spec import check
from harness.validate.verdict import Verdict

GIB = 2.0**30
Finding = tuple[Verdict, str]


def label(gpu: GpuSnapshot) -> str:
    bus = f" {gpu.pci_bus_id}" if gpu.pci_bus_id else ""
    return f"GPU{gpu.index} ({gpu.name}{bus})"


@check("gpu.inventory", "GPU count and model against what Slurm (or --gpus) says the node has", unit="GPUs",
       reference="--gpus N, SLURM_GPUS_ON_NODE or the node's Gres in Slurm")
def gpu_inventory(ctx: NodeContext) -> CheckResult:
    expected = ctx.settings.expected_gpus
    try:
        gpus = ctx.gpu_snapshot().gpus
    except NvmlUnavailable as err:
        if expected.count:
            return CheckResult("gpu.inventory", Verdict.FAIL,
                               f"{expected.source} says {expected.count} GPUs, found none: {err}")
        return CheckResult("gpu.inventory", Verdict.SKIPPED, str(err))
    names = sorted({gpu.name for gpu in gpus})
    facts = {f"GPU{gpu.index}": f"{gpu.name} {gpu.pci_bus_id} {gpu.uuid}".strip() for gpu in gpus}
    findings: list[Finding] = []
    if expected.count is not None and expected.count != len(gpus):
        findings.append((Verdict.FAIL, f"found {len(gpus)} GPUs, {expected.source} says {expected.count}"))
    if expected.model and any(expected.model.lower() not in gpu.name.lower() for gpu in gpus):
        findings.append((Verdict.FAIL, f"found {', '.join(names)}, {expected.source} says {expected.model}"))
    if len(names) > 1:
        findings.append((Verdict.WARN, f"mixed GPU models on one node: {', '.join(names)}"))
    against = f" as {expected.source} says" if expected.count is not None else f" (expected: {expected.source})"
    ok = f"{len(gpus)} x {', '.join(names)}{against}"
    return result("gpu.inventory", findings, ok, (Measurement("count", float(len(gpus)), "GPUs"),), facts)


def per_gpu(
    ctx: NodeContext, name: str, judge: Callable[[NodeContext, GpuSnapshot], list[Finding]], ok: str
) -> CheckResult:
    findings = [finding for gpu in ctx.gpu_snapshot().gpus for finding in judge(ctx, gpu)]
    count = len(ctx.gpu_snapshot().gpus)
    return result(name, findings, f"{count} GPUs: {ok}")


@check("gpu.memory", "GPU memory: total against the model's, and memory in use", unit="GiB",
       reference="gpus.<model>.memory_gib; limits.gpu_memory_*", needs=("gpu",))
def gpu_memory(ctx: NodeContext) -> CheckResult:
    def judge(ctx: NodeContext, gpu: GpuSnapshot) -> list[Finding]:
        if gpu.memory_total_bytes is None:
            return [(Verdict.WARN, f"{label(gpu)}: NVML reports no memory size")]
        total = gpu.memory_total_bytes / GIB
        found: list[Finding] = []
        entry = ctx.references.model_entry("gpus", gpu.name)
        figure = entry[1].get("memory_gib") if entry else None
        nominal = figure.value if figure else None
        minimum = ctx.references.limit("gpu_memory_total_min_fraction")
        if nominal and total < nominal * minimum:
            found.append((Verdict.FAIL, f"{label(gpu)}: {total:.1f} GiB, the model has {nominal} GiB"))
        used = (gpu.memory_used_bytes or 0) / gpu.memory_total_bytes
        if used > ctx.references.limit("gpu_memory_used_warn_fraction"):
            found.append((Verdict.WARN, f"{label(gpu)}: {used:.0%} of its memory is in use by another process"))
        return found

    return per_gpu(ctx, "gpu.memory", judge, "memory size as the model's, none in use")


@check("gpu.ecc", "uncorrected ECC errors, volatile (since the driver loaded) and aggregate (lifetime)",
       unit="errors", reference="zero", needs=("gpu",))
def gpu_ecc(ctx: NodeContext) -> CheckResult:
    def judge(ctx: NodeContext, gpu: GpuSnapshot) -> list[Finding]:
        if gpu.ecc_enabled is False:
            return [(Verdict.WARN, f"{label(gpu)}: ECC is disabled")]
        volatile, aggregate = gpu.ecc_uncorrected_volatile, gpu.ecc_uncorrected_aggregate
        if volatile:
            return [(Verdict.FAIL, f"{label(gpu)}: {volatile} uncorrected ECC errors since the driver loaded "
                                   f"({aggregate} ever)")]
        if aggregate:
            return [(Verdict.WARN, f"{label(gpu)}: {aggregate} uncorrected ECC errors in its lifetime, none now")]
        return []

    return per_gpu(ctx, "gpu.ecc", judge, "no uncorrected ECC errors (or ECC not supported)")


@check("gpu.retired_memory", "retired pages and row remapping: pending, failed, counts", unit="pages/rows",
       reference="none pending or failed; limits.retired_pages_fail", needs=("gpu",))
def gpu_retired_memory(ctx: NodeContext) -> CheckResult:
    def judge(ctx: NodeContext, gpu: GpuSnapshot) -> list[Finding]:
        found: list[Finding] = []
        if gpu.remapped_rows_failed:
            found.append((Verdict.FAIL, f"{label(gpu)}: a row remapping failed: the GPU needs replacing"))
        if gpu.remapped_rows_pending:
            found.append((Verdict.FAIL, f"{label(gpu)}: row remapping pending: reset the GPU"))
        if gpu.retired_pages_pending:
            found.append((Verdict.FAIL, f"{label(gpu)}: page retirement pending: reset the GPU"))
        retired = (gpu.retired_pages_sbe or 0) + (gpu.retired_pages_dbe or 0)
        if retired >= ctx.references.limit("retired_pages_fail"):
            found.append((Verdict.FAIL, f"{label(gpu)}: {retired} retired pages, at the replacement threshold"))
        elif retired:
            found.append((Verdict.WARN, f"{label(gpu)}: {retired} retired pages"))
        if gpu.remapped_rows_uncorrectable:
            found.append((Verdict.WARN, f"{label(gpu)}: {gpu.remapped_rows_uncorrectable} rows remapped "
                                        "for uncorrectable errors"))
        return found

    return per_gpu(ctx, "gpu.retired_memory", judge, "no retired pages or row remapping pending or failed")


@check("gpu.thermal", "temperature against the slowdown threshold, and clock throttle reasons", unit="degC",
       reference="NVML's slowdown temperature; limits.gpu_temperature_margin_c", needs=("gpu",))
def gpu_thermal(ctx: NodeContext) -> CheckResult:
    def judge(ctx: NodeContext, gpu: GpuSnapshot) -> list[Finding]:
        found: list[Finding] = []
        mask = gpu.throttle_reasons or 0
        for bits, verdict in ((THROTTLE_FAIL, Verdict.FAIL), (THROTTLE_WARN, Verdict.WARN)):
            if mask & bits:
                found.append((verdict, f"{label(gpu)}: throttled by {', '.join(throttle_names(mask & bits))}"))
        temp, slowdown = gpu.temperature_c, gpu.temperature_slowdown_c
        if temp is not None and slowdown:
            if temp >= slowdown:
                found.append((Verdict.FAIL, f"{label(gpu)}: {temp} C, at or above its slowdown {slowdown} C"))
            elif temp >= slowdown - ctx.references.limit("gpu_temperature_margin_c"):
                found.append((Verdict.WARN, f"{label(gpu)}: {temp} C, near its slowdown {slowdown} C"))
        return found

    temps = [g.temperature_c for g in ctx.gpu_snapshot().gpus if g.temperature_c is not None]
    hottest = f"hottest {max(temps)} C, " if temps else ""
    return per_gpu(ctx, "gpu.thermal", judge, f"{hottest}below slowdown, no thermal or hardware throttling")


@check("gpu.pcie", "PCIe link generation and width against the device's maximum", unit="gen/lanes",
       reference="the device's maximum link", needs=("gpu",))
def gpu_pcie(ctx: NodeContext) -> CheckResult:
    def judge(ctx: NodeContext, gpu: GpuSnapshot) -> list[Finding]:
        found: list[Finding] = []
        if gpu.pcie_width and gpu.pcie_width_max and gpu.pcie_width < gpu.pcie_width_max:
            found.append((Verdict.FAIL, f"{label(gpu)}: PCIe link x{gpu.pcie_width}, the device has "
                                        f"x{gpu.pcie_width_max} (reseat the card or check the riser)"))
        if gpu.pcie_gen and gpu.pcie_gen_max and gpu.pcie_gen < gpu.pcie_gen_max:
            found.append((Verdict.WARN, f"{label(gpu)}: PCIe gen {gpu.pcie_gen} of {gpu.pcie_gen_max} "
                                        "(normal while idle; see memory.host_device_bandwidth)"))
        return found

    return per_gpu(ctx, "gpu.pcie", judge, "every link at its maximum generation and width")
