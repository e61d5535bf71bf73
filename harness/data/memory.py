"""Refusing data too big for memory before allocating it, with the estimate in the message.

An image size or a sample count one digit too long used to fill the machine's memory until the
operating system killed the process (or a whole node swapped to a halt) with no message at all.
Loaders now estimate what the prepared arrays will need and compare it with what is available.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from harness.errors import ConfigError

PEAK_COPIES = 5
"""Copies of the float32 inputs held at the peak, as measured: preparing data peaks at about 4.5
(the loaded or generated array, its temporaries, the split parts and their scaled versions) and
the training pipeline then holds its own tensors of the training and validation parts."""

HEADROOM = 0.9
"""Share of the available memory the data may take: the model, TensorFlow and the rest need some."""

FLOAT32 = 4

MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def inputs_bytes(samples: int, shape: tuple[int, ...] | list[int]) -> int:
    """Bytes of `samples` float32 inputs of `shape` each; exact for any size (Python integers)."""
    return samples * math.prod(int(d) for d in shape) * FLOAT32


def format_bytes(count: float) -> str:
    """`1.5 GB`: decimal units, like the memory figures of `free -h` and Slurm's --mem."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def meminfo_available(text: str) -> int | None:
    """MemAvailable from the text of /proc/meminfo, in bytes."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "MemAvailable":
            number, *unit = value.split()
            return int(number) * (1024 if unit == ["kB"] else 1)
    return None


def cgroup_headroom(root: Path, self_cgroup: str) -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroups (a Slurm job's --mem).

    cgroup v2 keeps the limit on whichever ancestor the scheduler set it, so every level from the
    process's own group up to the root is read; None when no level has a limit.
    """
    path = next((line[3:] for line in self_cgroup.splitlines() if line.startswith("0::")), None)
    if path is None:
        return None
    left: list[int] = []
    folder = root / path.strip().lstrip("/")
    while True:
        limit, used = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
        if limit is not None and used is not None:
            left.append(max(0, limit - used))
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(left) if left else None


def _read_int(path: Path) -> int | None:
    """An integer file of the cgroup tree; None when absent, unreadable or `max` (no limit)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> tuple[int, str] | None:
    """Bytes this process can still use and where that figure comes from; None if unknown."""
    found: list[tuple[int, str]] = []
    try:
        available = meminfo_available(MEMINFO.read_text())
        if available is not None:
            found.append((available, f"MemAvailable in {MEMINFO}"))
    except OSError:
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical memory"))
        except (ValueError, OSError):
            pass
    try:
        headroom = cgroup_headroom(CGROUP_ROOT, SELF_CGROUP.read_text())
    except OSError:
        headroom = None
    if headroom is not None:
        found.append((headroom, "the memory limit of this job's cgroup"))
    return min(found) if found else None


def check_memory(input_bytes: int, what: str, hint: str) -> None:
    """Refuse inputs whose prepared arrays would not fit in the memory available now.

    `input_bytes` is one float32 copy of every sample's inputs; `what` names the config values
    behind it, `hint` what to change.
    """
    known = available_memory()
    if known is None:
        return
    available, source = known
    need = input_bytes * PEAK_COPIES
    if need <= HEADROOM * available:
        return
    raise ConfigError(
        f"{what} needs about {format_bytes(need)} of memory ({format_bytes(input_bytes)} of float32 inputs, "
        f"held in up to {PEAK_COPIES} copies while the data is split, scaled and handed to training), more "
        f"than the {format_bytes(available)} available ({source}). {hint}"
    )
