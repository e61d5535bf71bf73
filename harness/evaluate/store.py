"""report.json on disk: the versioned record every other part reads (gathering, sweeps, model cards).

Reading checks the schema version first, so a report written by another harness version is
refused with both versions named instead of being half understood.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.rundir.layout import REPORT_JSON
from harness.rundir.records import REPORT_SCHEMA_VERSION, read_report

__all__ = ["REPORT_JSON", "REPORT_SCHEMA_VERSION", "jsonable", "load_report", "part"]


def part(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A sub-dict of a report, or {} when absent or malformed: readers show gaps instead of failing."""
    value = mapping.get(key)
    return value if isinstance(value, Mapping) else {}


def jsonable(value: Any) -> Any:
    """Plain JSON types only: NumPy scalars and arrays become numbers and lists, NaN becomes None.

    Strict JSON has no NaN, and browsers and `jq` reject it; a diverged metric is recorded as null.
    """
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def load_report(run_dir: Path) -> dict[str, Any]:
    """Read report.json, refusing one written under another schema version rather than misreading it."""
    return read_report(run_dir)
