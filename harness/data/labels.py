"""Choosing the task and turning labels into class indices or targets into a float matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.raw import RawData, Task
from harness.data.table import cell_text
from harness.errors import DataError

MAX_AUTO_CLASSES = 20
"""With data.task=auto, integer targets with at most this many distinct values are class labels."""


@dataclass(frozen=True, eq=False)
class Targets:
    """Encoded targets of every sample: int64 class indices (n,) or float64 targets (n, k)."""

    task: Task
    y: np.ndarray
    class_names: list[str] | None
    target_names: list[str] | None
    reason: str


def infer_task(y: np.ndarray) -> tuple[Task, str]:
    """Classification for text or few distinct integer values, regression for fractional numbers."""
    if y.dtype.kind in "OUSb":
        return "classification", "the targets are labels, not numbers"
    if y.ndim > 1 and y.shape[1] > 1:
        return "regression", f"each sample has {y.shape[1]} target values"
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        return "regression", "the targets are fractional numbers"
    distinct = len(np.unique(y))
    if distinct <= MAX_AUTO_CLASSES:
        return "classification", f"the targets are {distinct} distinct integers (at most {MAX_AUTO_CLASSES})"
    return "regression", f"the targets are {distinct} distinct integers (more than {MAX_AUTO_CLASSES})"


def resolve_targets(raw: RawData, requested: str) -> Targets:
    """Encode `raw.y` for the task data.task asks for, or the inferred one with data.task=auto."""
    if requested != "auto":
        task, reason = requested, f"data.task={requested}"
    elif raw.task is not None:
        task, reason = raw.task, "defined by the dataset"
    else:
        task, why = infer_task(raw.y)
        reason = f"data.task=auto: {why}"
    if task == "classification":
        return _class_targets(raw, reason)
    return _regression_targets(raw, reason)


def label_text(value: object) -> str:
    """A class name for a label value: integral numbers lose their '.0' so 1.0 reads as '1'."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _class_targets(raw: RawData, reason: str) -> Targets:
    y = raw.y[:, 0] if raw.y.ndim == 2 and raw.y.shape[1] == 1 else raw.y
    if y.ndim != 1:
        raise DataError(
            f"target {raw.target_name!r} of {raw.source} must be one label per sample for classification. "
            f"Received: shape {raw.y.shape}. Set data.task=regression for several targets per sample."
        )
    if raw.class_names is not None and raw.task == "classification":
        indices, names = y.astype(np.int64), list(raw.class_names)
    else:
        values, indices = np.unique(y, return_inverse=True)
        names = [label_text(v) for v in values.tolist()]
    present = np.unique(indices)
    if len(present) < 2:
        raise DataError(
            f"target {raw.target_name!r} of {raw.source} must hold at least 2 classes for classification. "
            f"Received: only the class {cell_text(names[int(present[0])])} in {len(y)} rows."
        )
    return Targets("classification", indices.astype(np.int64), names, None, reason)


def _regression_targets(raw: RawData, reason: str) -> Targets:
    if raw.y.dtype.kind not in "iufb":
        example = raw.y.reshape(-1)[0]
        raise DataError(
            f"target {raw.target_name!r} of {raw.source} must be numbers for data.task=regression. "
            f"Received: text such as {cell_text(str(example))}. Use data.task=classification or auto."
        )
    y = raw.y.astype(np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2:
        raise DataError(
            f"target {raw.target_name!r} of {raw.source} must have shape (samples,) or (samples, k) for "
            f"regression. Received: shape {raw.y.shape}"
        )
    names = raw.target_names
    if names is None or len(names) != y.shape[1]:
        single = y.shape[1] == 1
        names = [raw.target_name] if single else [f"{raw.target_name}[{i}]" for i in range(y.shape[1])]
    return Targets("regression", y, None, list(names), reason)
