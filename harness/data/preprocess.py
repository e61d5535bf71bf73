"""The preprocessing fitted on the training split and saved with the model.

It is stored as JSON (no pickle) so a shared model directory can be read, diffed and loaded
without running code from it, and so `predict` applies exactly what training fitted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.atomic import write_json
from harness.data.arrays import check_numeric, read_npz
from harness.data.images import IMAGE_SUFFIXES, ImageSpec, list_images, read_images, resize_images
from harness.data.newrows import FILE_ID, INDEX_ID, NewRows, PredictOptions, table_rows
from harness.data.raw import Task
from harness.data.table import TableEncoder, name_list, read_csv
from harness.errors import DataError
from harness.shapes import ShapeFit

FORMAT = "harness.preprocessor"
FORMAT_VERSION = 1
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
MIN_SCALE = 1e-7
"""Deviations or ranges below this count as constant features, which are shifted but not divided."""
CHUNK_BYTES = 64 * 2**20

Scaling = Literal["standard", "minmax", "none"]


@dataclass(frozen=True, eq=False)
class Scaler:
    """Shift and scale per entry of the last axis: per feature for tables, per channel for images.

    Per channel rather than per pixel for images: pixels that are constant in training (the
    always-black margins of digits) would otherwise be divided by a near-zero deviation and turn
    tiny test-time differences into huge inputs.
    """

    method: Scaling
    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, method: Scaling) -> Scaler:
        """Fit on `x` (training inputs already multiplied by the input scale)."""
        width = x.shape[-1]
        if method == "standard":
            shift, scale = _mean_std(x)
        elif method == "minmax":
            axes = tuple(range(x.ndim - 1))
            shift = x.min(axis=axes).astype(np.float64)
            scale = x.max(axis=axes).astype(np.float64) - shift
        else:
            shift, scale = np.zeros(width), np.ones(width)
        scale = np.where(scale > MIN_SCALE, scale, 1.0)
        return cls(method, shift.astype(np.float32), scale.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Scale a float32 array in place (the caller owns the copy) and return it."""
        x -= self.shift
        x /= self.scale
        return x

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        if data["method"] not in ("standard", "minmax", "none"):
            raise ValueError(f"scaling method must be standard, minmax or none. Received: {data['method']!r}")
        shift, scale = np.asarray(data["shift"], np.float32), np.asarray(data["scale"], np.float32)
        if shift.shape != scale.shape or shift.ndim != 1:
            raise ValueError("scaling shift and scale must be lists of the same length")
        return cls(data["method"], shift, scale)


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over all axes but the last, in float64, chunk by chunk.

    Two passes over row chunks keep the result exact while never materialising a float64 copy
    of a large image array.
    """
    rows = max(1, CHUNK_BYTES // max(1, x[:1].nbytes))
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    total = sum(x[i : i + rows].sum(axis=axes, dtype=np.float64) for i in range(0, len(x), rows))
    mean = np.asarray(total) / count
    squares = sum(
        np.square(x[i : i + rows].astype(np.float64) - mean).sum(axis=axes) for i in range(0, len(x), rows)
    )
    return mean, np.sqrt(np.asarray(squares) / count)


@dataclass(frozen=True, eq=False)
class TargetScaler:
    """Standardises regression targets per column, so one learning rate suits any target units."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, y: np.ndarray, kind: str = "standard") -> TargetScaler:
        """Standardising statistics of the training targets; `kind="none"` keeps the units."""
        if kind == "none":
            return cls(np.zeros(y.shape[1:], np.float64), np.ones(y.shape[1:], np.float64))
        std = y.std(axis=0)
        return cls(y.mean(axis=0), np.where(std > MIN_SCALE, std, 1.0))

    def apply(self, y: np.ndarray) -> np.ndarray:
        return np.asarray((np.asarray(y, np.float64) - self.mean) / self.std, np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(np.asarray(y, np.float64) * self.std + self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetScaler:
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64))


@dataclass(frozen=True, eq=False)
class Preprocessor:
    """Raw inputs -> model inputs, and model outputs -> labels or target units.

    "Raw" means the units of the training files: CSV columns before encoding, digits pixels
    0-16, image pixels 0-255. `input_scale` maps them to the unit range, `scaler` applies
    data.scaling, `table` encodes CSV columns, `targets` undoes regression standardisation.
    """

    task: Task
    input_shape: tuple[int, ...]
    scaler: Scaler
    input_scale: float = 1.0
    table: TableEncoder | None = None
    class_names: list[str] | None = None
    target_names: list[str] | None = None
    targets: TargetScaler | None = None
    x_key: str = "x"
    target_column: str | None = None
    image: ImageSpec | None = None
    resize: tuple[int, int] | None = None
    model_input: ShapeFit | None = None
    predict_fills: dict[str, float | str] | None = None
    """Per feature column, what `predict --missing impute` fills a missing cell with when training
    learnt no fill of its own (data.missing=drop): the training split's median for numbers, its most
    frequent value for categories. None in files written before predict could impute."""

    @property
    def feature_names(self) -> list[str] | None:
        return None if self.table is None else self.table.feature_names

    def transform(self, x_raw: np.ndarray) -> np.ndarray:
        """Numeric raw inputs (n, *input_shape) -> float32 model inputs; the input is not modified.

        Images are first resized to `resize` (data.image_size for array images); the scaled
        result is reshaped to the model's input when training adapted the data (`model_input`).
        """
        x = np.asarray(x_raw)
        if self.resize is not None and x.ndim in (3, 4):
            x = resize_images(x, self.resize)
        out = self._batch(x).astype(np.float32)
        if self.input_scale != 1.0:
            out *= np.float32(self.input_scale)
        out = self.scaler.apply(out)
        return out if self.model_input is None else self.model_input.apply(out)

    def transform_file(self, path: Path) -> np.ndarray:
        """Model inputs from a predict-time file: CSV, NPZ or NPY, or images for image models.

        Every row or refused: missing values are filled only if training filled them.
        """
        return self.read_new(path).x

    def read_new(self, path: Path, options: PredictOptions | None = None) -> NewRows:
        """Model inputs from a predict-time file, each row with an identifier, and what was noticed.

        CSV rows are identified by their row number or `options.id_column`, NPZ/NPY rows by their
        index, images by their path relative to the input folder.
        """
        path = Path(path)
        options = options or PredictOptions()
        if not path.exists():
            raise DataError(f"input file {path} does not exist.")
        suffix = path.suffix.lower()
        is_images = path.is_dir() or suffix in IMAGE_SUFFIXES
        if options.id_column is not None and (is_images or suffix not in CSV_SUFFIXES):
            raise DataError(
                f"--id-column applies to CSV input. Received: {options.id_column!r} with input {path}, whose "
                f"predictions are identified by {FILE_ID if is_images else INDEX_ID!r} instead."
            )
        if is_images:
            paths, images = self._read_images(path)
            ids = [p.relative_to(path).as_posix() if path.is_dir() else p.name for p in paths]
            rows = NewRows.every_row(images, FILE_ID, ids)
        elif suffix in CSV_SUFFIXES:
            rows = self._read_csv(path, options)
        elif suffix in (".npz", ".npy"):
            x = self._read_npz(path) if suffix == ".npz" else self._read_npy(path)
            rows = NewRows.every_row(x, INDEX_ID, [str(i) for i in range(len(x))] if x.ndim else [])
        else:
            allowed = ", ".join((*CSV_SUFFIXES, ".npz", ".npy", *(IMAGE_SUFFIXES if self.image else ())))
            folder = ", or a folder of images" if self.image else ""
            raise DataError(f"input file {path} must be one of: {allowed}{folder}. Received: suffix {suffix!r}")
        if not len(rows.ids):
            raise DataError(f"input {path} holds no samples to predict.")
        return replace(rows, x=self.transform(rows.x))

    def decode_labels(self, indices: np.ndarray) -> list[str]:
        """Class indices (or rows of class probabilities, reduced by argmax) -> original labels."""
        if self.class_names is None:
            raise DataError(
                "decode_labels needs a classification model; this one predicts regression targets"
            )
        values = np.asarray(indices)
        if values.ndim == 2:
            values = values.argmax(axis=1)
        values = values.astype(np.int64).reshape(-1)
        if values.size and (values.min() < 0 or values.max() >= len(self.class_names)):
            raise DataError(
                f"class indices must be in 0..{len(self.class_names) - 1}. "
                f"Received: indices from {values.min()} to {values.max()}"
            )
        return [self.class_names[i] for i in values.tolist()]

    def scale_targets(self, y: np.ndarray) -> np.ndarray:
        """Regression targets in original units -> the standardised units the model is trained on."""
        if self.targets is None:
            return np.asarray(y)
        values = np.asarray(y, np.float64)
        return self.targets.apply(values[:, None] if values.ndim == 1 else values)

    def inverse_targets(self, y: np.ndarray) -> np.ndarray:
        """Regression model outputs -> original target units (float64); classification: unchanged."""
        if self.targets is None:
            return np.asarray(y)
        return self.targets.inverse(y)

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Preprocessor:
        """Read a saved preprocessor; a missing, foreign, newer or damaged file is a DataError."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"preprocessor file {path} does not exist.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"preprocessor file {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"file {path} must be a harness preprocessor (format {FORMAT!r}).")
        if data.get("version") != FORMAT_VERSION:
            raise DataError(
                f"preprocessor file {path} has format version {data.get('version')!r}; this harness reads "
                f"version {FORMAT_VERSION}."
            )
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"preprocessor file {path} is damaged: {type(err).__name__}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "input_scale": self.input_scale,
            "scaling": self.scaler.to_dict(),
            "columns": None if self.table is None else self.table.to_dict()["columns"],
            "class_names": self.class_names,
            "target_names": self.target_names,
            "targets": None if self.targets is None else self.targets.to_dict(),
            "x_key": self.x_key,
            "target_column": self.target_column,
            "image": None if self.image is None else self.image.to_dict(),
            "resize": None if self.resize is None else list(self.resize),
            "model_input": None if self.model_input is None else self.model_input.to_dict(),
            "predict_fills": self.predict_fills,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        if data["task"] not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression. Received: {data['task']!r}")
        shape = tuple(int(d) for d in data["input_shape"])
        scaler = Scaler.from_dict(data["scaling"])
        if not shape or scaler.shift.shape != (shape[-1],):
            raise ValueError(f"scaling has {scaler.shift.size} entries for input shape {shape}")
        return cls(
            task=data["task"],
            input_shape=shape,
            scaler=scaler,
            input_scale=float(data["input_scale"]),
            table=None if data["columns"] is None else TableEncoder.from_dict({"columns": data["columns"]}),
            class_names=_strings(data["class_names"]),
            target_names=_strings(data["target_names"]),
            targets=None if data["targets"] is None else TargetScaler.from_dict(data["targets"]),
            x_key=str(data["x_key"]),
            target_column=None if data["target_column"] is None else str(data["target_column"]),
            image=None if data["image"] is None else ImageSpec.from_dict(data["image"]),
            resize=None if data.get("resize") is None else _size(data["resize"]),
            model_input=None if data.get("model_input") is None else ShapeFit.from_dict(data["model_input"]),
            predict_fills=_fills(data.get("predict_fills")),
        )

    def _batch(self, x: np.ndarray) -> np.ndarray:
        """Check `x` is a batch of inputs of the training shape; a missing channel axis of 1 is added."""
        shape = self.input_shape
        if x.ndim == len(shape) and shape[-1] == 1 and x.shape[1:] == shape[:-1]:
            x = x[..., None]
        if x.shape[1:] != shape or x.dtype.kind not in "biuf":
            expected = ", ".join(str(d) for d in ("samples", *shape))
            raise DataError(
                f"inputs must be numbers of shape ({expected}), like the training data. "
                f"Received: shape {x.shape}, dtype {x.dtype}"
            )
        return x

    def _read_csv(self, path: Path, options: PredictOptions) -> NewRows:
        if len(self.input_shape) != 1:
            raise DataError(
                f"CSV file {path} cannot feed this model: it takes inputs of shape {self.input_shape}. "
                "Give an .npz file (or image files for an image-folder model)."
            )
        table = read_csv(path)
        encoder = self.table
        if encoder is None:
            unused = (self.target_column, options.id_column)
            columns = [name for name in table.names if name not in unused]
            if len(columns) != self.input_shape[0]:
                raise DataError(
                    f"CSV file {path} must have {self.input_shape[0]} feature columns (the training data "
                    f"had no column names, so columns are taken in file order). Received: {len(columns)}: "
                    f"{name_list(columns)}"
                )
            encoder = TableEncoder.numeric(columns)
        return table_rows(table, encoder, options, self.predict_fills, self.target_column)

    def _read_npz(self, path: Path) -> np.ndarray:
        arrays = read_npz(path)
        if self.x_key in arrays:
            name = self.x_key
        elif len(arrays) == 1:
            name = next(iter(arrays))
        else:
            raise DataError(
                f"NPZ file {path} must hold the inputs under {self.x_key!r} (the key used in training) or "
                f"hold a single array. Received arrays: {', '.join(map(repr, arrays)) or 'none'}"
            )
        check_numeric(arrays[name], name, path)
        return arrays[name]

    def _read_npy(self, path: Path) -> np.ndarray:
        try:
            x: np.ndarray = np.asarray(np.load(path, allow_pickle=False))
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"NPY file {path} cannot be read as a NumPy array: {err}") from None
        check_numeric(x, "array", path)
        return x

    def _read_images(self, path: Path) -> tuple[list[Path], np.ndarray]:
        """The image files of `path` (a folder, searched recursively, or one image) and their pixels."""
        if self.image is None:
            raise DataError(
                f"input {path} is an image or a folder, but this model was not trained on an image folder; "
                "give a .csv or .npz file."
            )
        paths = list_images(path) if path.is_dir() else [path]
        if not paths:
            raise DataError(f"folder {path} must hold images ({', '.join(IMAGE_SUFFIXES)}). Received: none")
        return paths, read_images(paths, self.image)


def _size(values: list[Any]) -> tuple[int, int]:
    height, width = (int(v) for v in values)
    return height, width


def _strings(values: list[Any] | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def _fills(values: dict[str, Any] | None) -> dict[str, float | str] | None:
    if values is None:
        return None
    return {str(k): v if isinstance(v, str) else float(v) for k, v in values.items()}
