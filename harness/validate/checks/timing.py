"""Timing loops shared by the benchmarks: repeat until a time budget is spent, report the best."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

MIN_REPEATS = 3
MAX_REPEATS = 10_000
CPUINFO = Path("/proc/cpuinfo")


def best_seconds(run_once: Callable[[], object], budget_s: float) -> float:
    """The fastest of several timed runs (after one warm-up): noise only ever slows a run down."""
    run_once()
    best = float("inf")
    spent = 0.0
    repeats = 0
    while repeats < MIN_REPEATS or (spent < budget_s and repeats < MAX_REPEATS):
        start = time.perf_counter()
        run_once()
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
        repeats += 1
    return best


def cpu_model() -> str:
    """The CPU's model name (the key of a site's `cpus:` reference rows)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"
