"""Number and value formatting shared by reports, comparisons and model cards.

Every renderer shows the same number the same way, and a missing value always reads "—" so a
blank cell is never mistaken for zero.
"""

from __future__ import annotations

import json
import math
from typing import Any

MISSING = "—"


def fmt_float(value: Any, digits: int = 4) -> str:
    """Format a metric; None, NaN and non-numbers read as missing instead of raising."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return MISSING
    if not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


def fmt_int(value: Any) -> str:
    """Format a count with thousands separators, so parameter counts are readable."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return MISSING
    return f"{int(value):,}"


def fmt_duration(seconds: Any) -> str:
    """Render seconds as `83.2 s (1m 23s)`: exact for scripts, readable for people."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return MISSING
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        readable = f"{hours}h {minutes:02d}m {secs:02d}s"
    elif minutes:
        readable = f"{minutes}m {secs:02d}s"
    else:
        return f"{seconds:.1f} s"
    return f"{seconds:.1f} s ({readable})"


def fmt_value(value: Any) -> str:
    """Format any JSON value for a table cell, choosing the float/int style where it applies."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fmt_float(value) if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str)
    if isinstance(value, dict):
        return fmt_mapping(value)
    return str(value)


def fmt_mapping(value: dict[str, Any]) -> str:
    """`seed=42, stratified=yes`: nested facts (split sizes, strategy) read as a sentence, not JSON."""
    if not value:
        return MISSING
    return ", ".join(f"{key}={_nested(item)}" for key, item in value.items())


def _nested(value: Any) -> str:
    return f"({fmt_mapping(value)})" if isinstance(value, dict) and value else fmt_value(value)


def fmt_shape(value: Any) -> str:
    """Write a tensor shape the way Keras prints it, `(None, 28, 28, 1)`."""
    if not isinstance(value, (list, tuple)):
        return fmt_value(value)
    items = ["None" if item is None else str(item) for item in value]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def humanize_key(key: str) -> str:
    """`rows_dropped_missing` -> `rows dropped missing`: keys written by code, read by people."""
    return key.replace("_", " ").strip()
