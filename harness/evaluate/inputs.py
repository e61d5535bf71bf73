"""Read what the training code leaves in a run directory: the metrics log and test predictions.

Both are optional for a report. A run killed mid-write (preemption, timeout) leaves a truncated
last line in `metrics.jsonl`; that line is dropped, because the report is still worth having.
Any other bad line, or a file that cannot be read, is skipped with a warning naming the file.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
PREDICTIONS_FILE = "test_predictions.npz"


@dataclass(frozen=True)
class Predictions:
    y_true: np.ndarray
    y_pred: np.ndarray


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch metrics in epoch order, one dict per epoch; [] if the log does not exist.

    Several lines may share an epoch (step lines, or an epoch repeated after a resume); they
    are merged in file order so the latest value of each key wins.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        records = parse_jsonl(path)
    except OSError as err:
        warnings.warn(f"{path}: cannot read the metrics log, skipping its tables and plots ({err})", stacklevel=2)
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        epoch = record.get("epoch")
        if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) and math.isfinite(epoch):
            by_epoch.setdefault(int(epoch), {}).update(_numeric_items(record))
    return [{**by_epoch[epoch], "epoch": epoch} for epoch in sorted(by_epoch)]


def parse_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse JSON lines, dropping a truncated last line silently and warning about others."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if index != last:
                warnings.warn(f"{path}:{index + 1}: skipping a line that is not JSON ({err})", stacklevel=2)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            warnings.warn(f"{path}:{index + 1}: skipping a line that is not a JSON object", stacklevel=2)
    return records


def _numeric_items(record: dict[str, Any]) -> dict[str, float]:
    """Keep finite numbers only: a NaN loss or a string value must not break a plot."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def read_predictions(run_dir: Path) -> Predictions | None:
    """Test predictions for the ROC and regression plots; None (with a warning) if unusable."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return Predictions(y_true=np.asarray(arrays["y_true"]), y_pred=np.asarray(arrays["y_pred"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"{path}: cannot read test predictions, skipping their plots ({err})", stacklevel=2)
        return None
