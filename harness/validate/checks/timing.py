"""Timing loops shared by the benchmarks: repeat until a time budget is spent, report the best."""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_REPEATS = 3
MAX_REPEATS = 10_000


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
