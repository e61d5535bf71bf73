"""Read what the training code leaves in a run directory: the metrics log and test predictions.

Both are optional for a report, which is still worth having without them. The metrics log is
read as every part reads it (`harness.rundir.read_metrics`): a last line cut short by a run
killed mid-write is dropped, any other bad line is skipped with a warning naming the file and
line. A file that cannot be read is skipped with a warning naming it.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import RunDirError
from harness.rundir import RunDir, read_metrics


@dataclass(frozen=True)
class Predictions:
    y_true: np.ndarray
    y_pred: np.ndarray


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch metrics in epoch order, one dict per epoch; [] if the log does not exist.

    Several lines may share an epoch (step lines, or an epoch repeated after a resume); they
    are merged in file order so the latest value of each key wins.
    """
    path = RunDir(run_dir).metrics
    try:
        records = read_metrics(path)
    except RunDirError as err:
        warnings.warn(f"{err}; skipping the metrics tables and plots", stacklevel=2)
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        by_epoch.setdefault(int(record["epoch"]), {}).update(_numeric_items(record))
    return [{**by_epoch[epoch], "epoch": epoch} for epoch in sorted(by_epoch)]


def _numeric_items(record: dict[str, Any]) -> dict[str, float]:
    """Keep finite numbers only: a NaN loss or a string value must not break a plot."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def read_predictions(run_dir: Path) -> Predictions | None:
    """Test predictions for the ROC and regression plots; None (with a warning) if unusable."""
    path = RunDir(run_dir).predictions
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return Predictions(y_true=np.asarray(arrays["y_true"]), y_pred=np.asarray(arrays["y_pred"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"{path}: cannot read test predictions, skipping their plots ({err})", stacklevel=2)
        return None
