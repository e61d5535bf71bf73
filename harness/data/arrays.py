"""The `npz` dataset: inputs and targets stored as NumPy arrays in one .npz archive."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.config.schema import DataConfig
from harness.data.memory import FLOAT32, check_memory
from harness.data.raw import RawData, resolve_data_path
from harness.data.registry import DATASETS
from harness.errors import DataError
from harness.registry import closest


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz archive; pickled (object) arrays are refused, never executed."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(
                    f"NPZ file {path} must be an .npz archive (np.savez). Received: a single .npy array"
                )
            _check_size(path, archive)
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise DataError(f"NPZ file {path} does not exist.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"NPZ file {path} cannot be read as a NumPy .npz archive of plain arrays: {err}"
        ) from None


def _check_size(path: Path, archive: np.lib.npyio.NpzFile) -> None:
    """Refuse an archive whose arrays would not fit in memory, from their headers alone.

    A compressed archive can be a thousand times smaller than its arrays, so the file size says
    nothing; each .npy header gives the shape without reading the data.
    """
    elements = 0
    if archive.zip is None:
        return
    members = set(archive.zip.namelist())
    for name in archive.files:
        with archive.zip.open(f"{name}.npy" if f"{name}.npy" in members else name) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape = np.lib.format.read_array_header_1_0(stream)[0]
            elif version == (2, 0):
                shape = np.lib.format.read_array_header_2_0(stream)[0]
            else:
                return  # a newer header format: NumPy itself reports what it cannot read
        elements += math.prod(shape)
    check_memory(
        elements * FLOAT32,
        f"NPZ file {path} ({elements} numbers in {len(archive.files)} arrays)",
        "Use a smaller file (a subset of the samples, or smaller images).",
    )


def pick_array(arrays: dict[str, np.ndarray], key: str, config_key: str, path: Path) -> np.ndarray:
    """The array named `key`; a miss names the config key, lists the arrays and a close match."""
    if key in arrays:
        return arrays[key]
    match = closest(key, list(arrays))
    hint = f" Did you mean {match!r}?" if match else ""
    raise DataError(
        f"{config_key} must name an array in NPZ file {path}. Received: {config_key}={key!r}.{hint} "
        f"Arrays in the file: {', '.join(map(repr, arrays)) or 'none'}."
    )


def check_numeric(x: np.ndarray, name: str, path: Path) -> None:
    """Inputs must be finite numbers: NaN or inf would silently poison every statistic."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"array {name!r} of NPZ file {path} must hold numbers. Received: dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.size(x) - np.isfinite(x).sum())
        raise DataError(
            f"array {name!r} of NPZ file {path} must hold finite numbers. Received: {bad} NaN or inf values "
            "(data.missing applies to CSV files only)"
        )


@DATASETS.register("npz")
def load_npz(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """Inputs under data.x_key (2-D tabular, or images), targets under data.y_key."""
    path = resolve_data_path(cfg, base_dir, "NPZ file")
    arrays = read_npz(path)
    x = pick_array(arrays, cfg.x_key, "data.x_key", path)
    y = pick_array(arrays, cfg.y_key, "data.y_key", path)
    check_numeric(x, cfg.x_key, path)
    if x.ndim < 2 or len(x) != len(y):
        raise DataError(
            f"NPZ file {path}: arrays {cfg.x_key!r} and {cfg.y_key!r} must have one row per sample, and "
            f"{cfg.x_key!r} at least 2 dimensions. Received: shapes {x.shape} and {y.shape}"
        )
    if y.dtype.kind not in "US":
        check_numeric(y, cfg.y_key, path)
    notes: dict[str, Any] = {"arrays": {name: list(a.shape) for name, a in arrays.items()}}
    x, y = _channels_last(x, notes), _one_hot_to_index(y, cfg.task, notes)
    images = x.ndim >= 4
    input_scale = 1 / 255 if images and x.dtype == np.uint8 else 1.0
    if input_scale != 1.0:
        notes["input_scale"] = "uint8 pixel values divided by 255"
    return RawData(
        source=f"NPZ file {path}",
        x=x,
        y=y,
        target_name=cfg.y_key,
        input_scale=input_scale,
        notes=notes,
    )


def _channels_last(x: np.ndarray, notes: dict[str, Any]) -> np.ndarray:
    """(n, h, w) grayscale images get a channel axis, which convolutional models expect."""
    if x.ndim != 3:
        return x
    notes["channel_axis_added"] = True
    return x[..., None]


def _one_hot_to_index(y: np.ndarray, task: str, notes: dict[str, Any]) -> np.ndarray:
    """One-hot label rows become class indices, unless the config asks for regression."""
    if task == "regression" or y.ndim != 2 or y.shape[1] < 2 or y.dtype.kind not in "biuf":
        return y
    if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
        return y
    notes["one_hot_labels"] = "converted to class indices"
    return np.asarray(np.argmax(y, axis=1))
