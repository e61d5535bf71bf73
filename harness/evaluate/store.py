"""report.json on disk: the versioned record every other part reads (gathering, sweeps, model cards).

Reading checks the schema version first, so a report written by another harness version is
refused with both versions named instead of being half understood.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import RunDirError

REPORT_SCHEMA_VERSION = 1
REPORT_JSON = "report.json"


def utc_now() -> str:
    """ISO 8601 in UTC, so runs from clusters in different time zones sort correctly."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    run_dir = Path(run_dir)
    path = run_dir / REPORT_JSON
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise RunDirError(
            f"run directory {run_dir} has no {REPORT_JSON}: the run has not finished, or it failed before "
            f"evaluation (`harness evaluate {run_dir}` writes it from a saved model)"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(report, dict):
        raise RunDirError(f"{path} must hold a JSON object. Received: {type(report).__name__}")
    version = report.get("schema_version")
    if version != REPORT_SCHEMA_VERSION:
        raise RunDirError(
            f"{path} has report schema_version {version!r}, but this harness reads schema_version "
            f"{REPORT_SCHEMA_VERSION}; use the harness version that wrote it, or re-evaluate the run"
        )
    return report
