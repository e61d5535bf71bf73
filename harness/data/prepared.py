"""The prepared splits that training, evaluation and reports consume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.data.preprocess import Preprocessor
from harness.data.raw import Task


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Train/validation/test arrays ready for the model, and the preprocessing that made them.

    x arrays are float32 model inputs; y is int32 class indices (classification) or float32
    (n, k) standardised targets (regression; `preprocessor.inverse_targets` gives original units).
    `notes` holds JSON-serialisable facts for the report; notes["dataset"] is the registered name.
    """

    task: Task
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    num_outputs: int
    class_names: list[str] | None
    feature_names: list[str] | None
    target_names: list[str] | None
    preprocessor: Preprocessor
    notes: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description for report.json and the run log."""
        return {
            "dataset": self.notes.get("dataset"),
            "task": self.task,
            "n_train": len(self.x_train),
            "n_val": len(self.x_val),
            "n_test": len(self.x_test),
            "input_shape": list(self.input_shape),
            "num_outputs": self.num_outputs,
            "class_names": self.class_names,
            "feature_names": self.feature_names,
            "target_names": self.target_names,
            "notes": self.notes,
        }
