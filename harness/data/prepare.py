"""`prepare_data`: load a registered dataset, split it, and fit preprocessing on the training part."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from harness.config.schema import DataConfig
from harness.data.images import resize_images
from harness.data.labels import Targets, resolve_targets
from harness.data.memory import check_memory, inputs_bytes
from harness.data.newrows import fills_from_array, fills_from_table
from harness.data.prepared import PreparedData
from harness.data.preprocess import Preprocessor, Scaler, TargetScaler
from harness.data.raw import RawData
from harness.data.registry import get_loader
from harness.data.split import Split, split_indices
from harness.data.table import Missing, TableEncoder
from harness.errors import DataError

MAX_LISTED_CATEGORIES = 50
"""Notes list at most this many categories per column, so an ID-like column cannot flood the report."""


def prepare_data(cfg: DataConfig, seed: int, base_dir: Path | None = None) -> PreparedData:
    """Load, split and preprocess the dataset data.dataset names.

    Every fitted statistic (categories, fill values, scaling, target standardisation) comes from
    the training split only, so validation and test scores are honest estimates. The same
    config and seed give the same arrays on every rank and on every resume.
    """
    raw = get_loader(cfg.dataset)(cfg, seed, Path.cwd() if base_dir is None else Path(base_dir))
    targets = resolve_targets(raw, cfg.task)
    strata = targets.y if targets.task == "classification" and cfg.stratify else None
    split = split_indices(
        len(raw), strata, cfg.validation_split, cfg.test_split, seed, raw.source, targets.class_names
    )
    if cfg.max_samples is not None:
        split = limit_split(split, cfg.max_samples, seed)
    x, encoder, filled = _numeric_inputs(raw, split.train, cfg.missing)
    x, resized = _resize(raw, x, cfg)
    preprocessor = _fit(raw, targets, encoder, x, split.train, cfg)
    parts = {name: _part(preprocessor, x, targets, rows) for name, rows in split.parts().items()}
    classes = targets.class_names
    return PreparedData(
        task=targets.task,
        x_train=parts["train"][0],
        y_train=parts["train"][1],
        x_val=parts["val"][0],
        y_val=parts["val"][1],
        x_test=parts["test"][0],
        y_test=parts["test"][1],
        input_shape=preprocessor.input_shape,
        num_outputs=len(classes) if classes is not None else int(targets.y.shape[1]),
        class_names=classes,
        feature_names=preprocessor.feature_names,
        target_names=targets.target_names,
        preprocessor=preprocessor,
        notes={**_notes(cfg, raw, targets, split, preprocessor, filled, seed), **resized},
    )


def limit_split(split: Split, max_samples: int, seed: int) -> Split:
    """Keep a seeded random share of each part, so the subset has about `max_samples` rows.

    Every part keeps at least one row; sampling within parts keeps the split's proportions.
    """
    total = len(split.train) + len(split.val) + len(split.test)
    if max_samples >= total:
        return split
    rng = np.random.default_rng(seed)

    def take(rows: np.ndarray) -> np.ndarray:
        keep = max(1, round(len(rows) * max_samples / total))
        return np.sort(rng.choice(rows, size=keep, replace=False))

    return replace(split, train=take(split.train), val=take(split.val), test=take(split.test))


def _numeric_inputs(
    raw: RawData, train: np.ndarray, missing: Missing
) -> tuple[np.ndarray, TableEncoder | None, dict[str, int]]:
    """All samples as numbers; CSV columns are encoded with what the training rows teach.

    Array datasets with named features get a numeric-only encoder too, so `predict` can read a
    CSV whose header uses those names.
    """
    if raw.table is not None:
        encoder = TableEncoder.fit(raw.table.take(train), raw.column_kinds, missing)
        _check_encoded_size(raw, encoder)
        x, filled = encoder.encode(raw.table)
        return x, encoder, filled
    x = cast(np.ndarray, raw.x)
    names = raw.feature_names
    named = names is not None and x.ndim == 2 and len(names) == x.shape[1]
    return x, TableEncoder.numeric(names) if named and names else None, {}


def _resize(raw: RawData, x: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Array images resized to data.image_size (image folders are read at that size already).

    Returns the inputs and a note for the report; data.image_size on data that is not images
    (2-D tables, or a CSV) is refused rather than ignored, so a wrong config cannot pass silently.
    """
    if cfg.image_size is None or raw.image is not None:
        return x, {}
    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    if raw.table is not None or x.ndim != 4:
        shape = f"rows of {len(raw.table.names)} columns" if raw.table is not None else f"shape {x.shape[1:]}"
        raise DataError(
            f"data.image_size applies to images: image folders, and arrays of samples (height, width) or "
            f"(height, width, channels). Received: data.image_size={list(size)} for {raw.source}, whose samples "
            f"have {shape}. Remove data.image_size for this data."
        )
    check_memory(
        inputs_bytes(len(x), (*size, x.shape[-1])),
        f"{len(x)} images of {raw.source} resized to data.image_size={list(size)}",
        "Lower data.image_size, or use data.max_samples for a subset.",
    )
    note = {"resized": {"from": list(x.shape[1:3]), "to": list(size), "by": "data.image_size, bilinear"}}
    return resize_images(x, size), note


def _check_encoded_size(raw: RawData, encoder: TableEncoder) -> None:
    """One-hot encoding gives a column one input per category: an ID-like column can need terabytes."""
    widest = max(encoder.columns, key=lambda column: column.width)
    width = sum(column.width for column in encoder.columns)
    check_memory(
        inputs_bytes(len(raw), (width,)),
        f"{raw.source} encoded as {len(raw)} rows of {width} inputs (column {widest.name!r} alone gives "
        f"{widest.width}, one per {'category' if widest.kind == 'categorical' else 'value'})",
        "Leave ID-like text columns out of data.features (data.features lists the columns to use).",
    )


def _fit(
    raw: RawData,
    targets: Targets,
    encoder: TableEncoder | None,
    x: np.ndarray,
    train: np.ndarray,
    cfg: DataConfig,
) -> Preprocessor:
    """Fit scaling on the training inputs exactly as `transform` sees them (after input_scale)."""
    width = x.shape[-1]
    unscaled = Preprocessor(
        task=targets.task,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        scaler=Scaler("none", np.zeros(width, np.float32), np.ones(width, np.float32)),
        input_scale=raw.input_scale,
        table=encoder,
        class_names=targets.class_names,
        target_names=targets.target_names,
        x_key=cfg.x_key,
        target_column=raw.target_name,
        image=raw.image,
        resize=None if raw.image is not None or cfg.image_size is None else (int(x.shape[1]), int(x.shape[2])),
    )
    scaler = Scaler.fit(unscaled.transform(x[train]), cfg.scaling)
    target_scaler = TargetScaler.fit(targets.y[train], cfg.target_scaling) if targets.task == "regression" else None
    return replace(unscaled, scaler=scaler, targets=target_scaler, predict_fills=_predict_fills(raw, encoder, x, train))


def _predict_fills(
    raw: RawData, encoder: TableEncoder | None, x: np.ndarray, train: np.ndarray
) -> dict[str, float | str] | None:
    """What `predict --missing impute` fills with, from the training split like every other statistic."""
    if encoder is None:
        return None
    if raw.table is not None:
        return fills_from_table(raw.table.take(train), encoder)
    return fills_from_array(x[train], encoder)


def _part(
    preprocessor: Preprocessor, x: np.ndarray, targets: Targets, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and encoded targets of one split part."""
    if targets.task == "classification":
        y = targets.y[rows].astype(np.int32)
    else:
        y = preprocessor.scale_targets(targets.y[rows])
    return preprocessor.transform(x[rows]), y


def _notes(
    cfg: DataConfig,
    raw: RawData,
    targets: Targets,
    split: Split,
    preprocessor: Preprocessor,
    filled: dict[str, int],
    seed: int,
) -> dict[str, Any]:
    """JSON-serialisable facts for the report: where the data came from and what was done to it."""
    notes: dict[str, Any] = {
        "dataset": cfg.dataset,
        "source": raw.source,
        "samples": len(raw),
        "task": targets.task,
        "task_reason": targets.reason,
    }
    notes.update(raw.notes)
    if raw.table is not None and preprocessor.table is not None:
        notes.update(_table_notes(preprocessor.table, filled, cfg.missing))
    notes["split"] = _split_notes(split, seed)
    if targets.class_names is not None:
        notes.update(_class_notes(targets, split))
    notes["scaling"] = {
        "method": cfg.scaling,
        "statistics": "per feature" if len(preprocessor.input_shape) == 1 else "per channel",
        "fitted_on": "train split",
    }
    if raw.input_scale != 1.0:
        notes["input_scale"] = raw.input_scale
    if preprocessor.targets is not None:
        notes["target_scaling"] = {"fitted_on": "train split", **preprocessor.targets.to_dict()}
    return notes


def _table_notes(encoder: TableEncoder, filled: dict[str, int], missing: Missing) -> dict[str, Any]:
    categorical = {c.name: list(c.categories) for c in encoder.columns if c.kind == "categorical"}
    notes: dict[str, Any] = {
        "feature_columns": [c.name for c in encoder.columns],
        "encoded_categorical": {name: _listed(cats) for name, cats in categorical.items()},
    }
    if missing != "drop":
        notes["values_imputed"] = dict(filled)
        notes["imputed_with"] = {c.name: c.fill for c in encoder.columns if c.name in filled}
    return notes


def _listed(categories: list[str]) -> list[str] | dict[str, Any]:
    if len(categories) <= MAX_LISTED_CATEGORIES:
        return categories
    return {"count": len(categories), "first": categories[:MAX_LISTED_CATEGORIES]}


def _split_notes(split: Split, seed: int) -> dict[str, Any]:
    notes: dict[str, Any] = {
        "seed": seed,
        "train": len(split.train),
        "validation": len(split.val),
        "test": len(split.test),
        "stratified": split.stratified,
    }
    if split.fallback:
        notes["stratify_fallback"] = split.fallback
    return notes


def _class_notes(targets: Targets, split: Split) -> dict[str, Any]:
    names = targets.class_names or []
    counts = {
        part: {names[i]: int(c) for i, c in enumerate(np.bincount(targets.y[rows], minlength=len(names)))}
        for part, rows in split.parts().items()
    }
    notes: dict[str, Any] = {
        "label_encoding": {name: i for i, name in enumerate(names)},
        "class_counts": counts,
    }
    absent = [name for name, count in counts["train"].items() if count == 0]
    if absent:
        notes["classes_missing_from_train"] = absent
    return notes
