"""GPU facts through NVML (nvidia-ml-py, imported as `pynvml`), without TensorFlow.

A fresh node has a driver before it has the user's stack, so these checks need nothing but the
driver and `nvidia-ml-py`. Everything NVML says is read once into a `NvmlSnapshot` through an
`NvmlReader`: the real one asks `pynvml`; a `RecordedNvml` replays values recorded on real GPUs,
which is how the checks are tested on machines without one. A value the GPU does not support
(ECC on a consumer card, row remapping before Ampere) is None, never an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# Clock event (throttle) reasons, as NVML's bit mask defines them.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
THROTTLE_FAIL = 0x8 | 0x40 | 0x80
"""The hardware slows itself: overheating, a failing power supply or an external brake signal."""
THROTTLE_WARN = 0x20
"""The driver slows the GPU for its temperature: cooling is marginal."""


class NvmlUnavailable(Exception):
    """NVML cannot be used here: no library, no driver, or no GPU; the message says which."""


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU as NVML reports it; None where the device does not support the query."""

    index: int
    name: str
    uuid: str = ""
    pci_bus_id: str = ""
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    ecc_enabled: bool | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    retired_pages_sbe: int | None = None
    retired_pages_dbe: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failed: bool | None = None
    temperature_c: int | None = None
    temperature_slowdown_c: int | None = None
    throttle_reasons: int | None = None
    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None


@dataclass(frozen=True)
class NvmlSnapshot:
    driver_version: str
    cuda_driver_version: str
    gpus: tuple[GpuSnapshot, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "gpus": [asdict(gpu) for gpu in self.gpus],
        }


class NvmlReader(Protocol):
    def snapshot(self) -> NvmlSnapshot:
        """Everything the checks need, read now; raises NvmlUnavailable when NVML cannot be used."""
        ...


class RecordedNvml:
    """Replays a snapshot recorded on a real node (`NvmlSnapshot.to_dict` output)."""

    def __init__(self, recorded: Mapping[str, Any] | None) -> None:
        self.recorded = recorded

    def snapshot(self) -> NvmlSnapshot:
        if self.recorded is None:
            raise NvmlUnavailable("no NVIDIA GPU/driver (recorded: none)")
        gpus = tuple(GpuSnapshot(**gpu) for gpu in self.recorded.get("gpus", ()))
        return NvmlSnapshot(
            str(self.recorded.get("driver_version", "")), str(self.recorded.get("cuda_driver_version", "")), gpus
        )


class PynvmlReader:
    """The real reader. `module` is `pynvml` (a stand-in in tests of the mapping)."""

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        self.module = module

    def snapshot(self) -> NvmlSnapshot:
        nv = self.module if self.module is not None else _import_pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as err:
            raise NvmlUnavailable(f"no NVIDIA GPU/driver: NVML does not start ({_text(err)})") from None
        try:
            count = int(nv.nvmlDeviceGetCount())
            gpus = tuple(_read_gpu(nv, index) for index in range(count))
            driver = _decoded(nv.nvmlSystemGetDriverVersion())
            cuda = _optional(nv, lambda: _cuda_version(int(nv.nvmlSystemGetCudaDriverVersion())))
        finally:
            _optional(nv, nv.nvmlShutdown)
        if not gpus:
            raise NvmlUnavailable(f"no NVIDIA GPU: the driver ({driver}) sees none")
        return NvmlSnapshot(driver, cuda or "", gpus)


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("no NVIDIA GPU/driver check possible: nvidia-ml-py is not installed "
                              "(pip install nvidia-ml-py)") from None
    module: ModuleType = pynvml
    return module


def _text(err: Exception) -> str:
    return str(err) or type(err).__name__


def _decoded(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(code: int) -> str:
    """NVML's 12040 -> '12.4'."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _optional(nv: Any, query: Callable[[], T]) -> T | None:
    """A query a device may not support: None instead of NVMLError (not supported, no permission...)."""
    try:
        return query()
    except nv.NVMLError:
        return None


def _read_gpu(nv: Any, index: int) -> GpuSnapshot:
    handle = nv.nvmlDeviceGetHandleByIndex(index)

    def ask(query: Callable[[], T]) -> T | None:
        return _optional(nv, query)

    memory = ask(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
    ecc_mode = ask(lambda: nv.nvmlDeviceGetEccMode(handle))
    remap = ask(lambda: nv.nvmlDeviceGetRemappedRows(handle))
    pending = ask(lambda: nv.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    return GpuSnapshot(
        index=index,
        name=_decoded(nv.nvmlDeviceGetName(handle)),
        uuid=_decoded(ask(lambda: nv.nvmlDeviceGetUUID(handle)) or ""),
        pci_bus_id=_decoded(getattr(ask(lambda: nv.nvmlDeviceGetPciInfo(handle)), "busId", "") or ""),
        memory_total_bytes=None if memory is None else int(memory.total),
        memory_used_bytes=None if memory is None else int(memory.used),
        ecc_enabled=None if ecc_mode is None else bool(ecc_mode[0]),
        ecc_uncorrected_volatile=ask(lambda: int(nv.nvmlDeviceGetTotalEccErrors(
            handle, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC))),
        ecc_uncorrected_aggregate=ask(lambda: int(nv.nvmlDeviceGetTotalEccErrors(
            handle, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_AGGREGATE_ECC))),
        retired_pages_sbe=ask(lambda: len(nv.nvmlDeviceGetRetiredPages(
            handle, nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS))),
        retired_pages_dbe=ask(lambda: len(nv.nvmlDeviceGetRetiredPages(
            handle, nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR))),
        retired_pages_pending=None if pending is None else bool(pending),
        remapped_rows_correctable=None if remap is None else int(remap[0]),
        remapped_rows_uncorrectable=None if remap is None else int(remap[1]),
        remapped_rows_pending=None if remap is None else bool(remap[2]),
        remapped_rows_failed=None if remap is None else bool(remap[3]),
        temperature_c=ask(lambda: int(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))),
        temperature_slowdown_c=ask(lambda: int(nv.nvmlDeviceGetTemperatureThreshold(
            handle, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN))),
        throttle_reasons=ask(lambda: int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(handle))),
        pcie_gen=ask(lambda: int(nv.nvmlDeviceGetCurrPcieLinkGeneration(handle))),
        pcie_gen_max=ask(lambda: int(nv.nvmlDeviceGetMaxPcieLinkGeneration(handle))),
        pcie_width=ask(lambda: int(nv.nvmlDeviceGetCurrPcieLinkWidth(handle))),
        pcie_width_max=ask(lambda: int(nv.nvmlDeviceGetMaxPcieLinkWidth(handle))),
    )


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
