"""What a dataset loader hands to `prepare_data`: every sample, as its source stores it.

Loaders stop before the split on purpose: every statistic (imputation values, categories,
scaling, target standardisation) is learnt afterwards from the training split alone, in one
place, the same way for every dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from harness.config.schema import DataConfig
from harness.errors import DataError

if TYPE_CHECKING:
    from harness.data.images import ImageSpec
    from harness.data.table import Kind, Table

Task = Literal["classification", "regression"]


@dataclass(frozen=True, eq=False)
class RawData:
    """Every sample of one dataset before the split; exactly one of `x` and `table` is set.

    `x` holds numbers in the source's own units (digits pixels 0-16, image bytes 0-255);
    `input_scale` maps them to the unit range, and the saved preprocessor applies the same
    factor at predict time, so files given to `predict` use the training files' units.
    `table` is a CSV whose columns are encoded only after the split.
    """

    source: str
    y: np.ndarray
    target_name: str
    x: np.ndarray | None = None
    table: Table | None = None
    column_kinds: dict[str, Kind] = field(default_factory=dict)
    task: Task | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    target_names: list[str] | None = None
    input_scale: float = 1.0
    image: ImageSpec | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.x is None) == (self.table is None):
            raise ValueError("RawData needs exactly one of `x` (an array) and `table` (a CSV table)")

    def __len__(self) -> int:
        return len(self.y)


Loader = Callable[[DataConfig, int, Path], RawData]
"""A registered dataset: `(data config, seed, base folder for relative paths) -> RawData`."""


def resolve_data_path(cfg: DataConfig, base_dir: Path, kind: str, folder: bool = False) -> Path:
    """Return `data.path` made absolute against the config file's folder, checked to exist.

    Relative paths follow the config file rather than the working directory so that a run
    launched from anywhere (a Slurm job starts in the submit folder) reads the same data.
    """
    if not cfg.path:
        raise DataError(
            f"data.path must name the {kind} to read for dataset {cfg.dataset!r}. Received: data.path=None"
        )
    given = Path(cfg.path).expanduser()
    path = given if given.is_absolute() else Path(base_dir) / given
    where = "" if given.is_absolute() else f" (data.path={cfg.path!r} resolved against {base_dir})"
    if not path.exists():
        raise DataError(f"data.path must name an existing {kind}. {path} does not exist{where}.")
    if folder and not path.is_dir():
        raise DataError(f"data.path must name a folder for dataset {cfg.dataset!r}. {path} is a file.")
    if not folder and not path.is_file():
        raise DataError(f"data.path must name a {kind} for dataset {cfg.dataset!r}. {path} is a folder.")
    return path
