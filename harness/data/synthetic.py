"""Seeded synthetic datasets of any size, for smoke tests and throughput benchmarks.

Both are learnable on purpose (each class has its own pattern, blurred by Gaussian noise of
data.synthetic.noise), so a few training steps must show the loss going down: a smoke test on
pure noise could not tell a broken pipeline from a working one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.config.schema import DataConfig, SyntheticConfig
from harness.data.memory import check_memory, inputs_bytes
from harness.data.raw import RawData
from harness.data.registry import DATASETS
from harness.errors import ConfigError

PATTERN_CELLS = 4
"""Class patterns are constant over square cells of this many pixels a side (at most)."""


def balanced_labels(samples: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class indices with every class equally often (up to one), in a shuffled order."""
    return rng.permutation(np.arange(samples) % classes)


def class_patterns(classes: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """One blocky random image in [0, 1] per class; blocks give convolutions local structure to find."""
    height, width, channels = shape
    grid_h, grid_w = max(1, -(-height // PATTERN_CELLS)), max(1, -(-width // PATTERN_CELLS))
    coarse = rng.uniform(0.0, 1.0, size=(classes, grid_h, grid_w, channels)).astype(np.float32)
    rows = np.arange(height) * grid_h // height
    cols = np.arange(width) * grid_w // width
    return coarse[:, rows][:, :, cols]


@DATASETS.register("synthetic_images")
def load_synthetic_images(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """data.synthetic.samples images: their class's pattern plus noise, clipped to [0, 1]."""
    spec = cfg.synthetic
    _check_classes(spec)
    check_memory(
        inputs_bytes(spec.samples + spec.classes, spec.image_shape),  # the samples and a pattern per class
        f"data.synthetic.samples={spec.samples} with data.synthetic.image_shape={list(spec.image_shape)}",
        "Lower data.synthetic.samples or data.synthetic.image_shape.",
    )
    rng = np.random.default_rng(seed)
    y = balanced_labels(spec.samples, spec.classes, rng)
    patterns = class_patterns(spec.classes, spec.image_shape, rng)
    noise = rng.standard_normal((spec.samples, *spec.image_shape), dtype=np.float32)
    x = np.clip(patterns[y] + np.float32(spec.noise) * noise, 0.0, 1.0)
    return RawData(
        source=_describe("images", spec, f"shape {list(spec.image_shape)}", seed),
        x=x,
        y=y,
        target_name="class",
        task="classification",
        class_names=[f"class_{i}" for i in range(spec.classes)],
    )


@DATASETS.register("synthetic_tabular")
def load_synthetic_tabular(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """Gaussian clusters, one centre per class; with data.task=regression a noisy linear target."""
    spec = cfg.synthetic
    if cfg.task != "regression":
        _check_classes(spec)
    check_memory(
        2 * inputs_bytes(spec.samples + spec.classes, (spec.features,)),  # float64 samples and class centres
        f"data.synthetic.samples={spec.samples} with data.synthetic.features={spec.features}",
        "Lower data.synthetic.samples or data.synthetic.features.",
    )
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(spec.features)]
    if cfg.task == "regression":
        return _tabular_regression(spec, rng, names, seed)
    y = balanced_labels(spec.samples, spec.classes, rng)
    centres = rng.standard_normal((spec.classes, spec.features))
    x = centres[y] + spec.noise * rng.standard_normal((spec.samples, spec.features))
    return RawData(
        source=_describe("tabular data", spec, f"{spec.features} features", seed),
        x=x.astype(np.float32),
        y=y,
        target_name="class",
        task="classification",
        class_names=[f"class_{i}" for i in range(spec.classes)],
        feature_names=names,
    )


def _tabular_regression(
    spec: SyntheticConfig, rng: np.random.Generator, names: list[str], seed: int
) -> RawData:
    x = rng.standard_normal((spec.samples, spec.features))
    weights = rng.standard_normal(spec.features) / np.sqrt(spec.features)
    y = x @ weights + spec.noise * rng.standard_normal(spec.samples)
    return RawData(
        source=f"synthetic regression: {spec.samples} samples, {spec.features} features, linear target "
        f"plus Gaussian noise (sd {spec.noise}), seed {seed}",
        x=x.astype(np.float32),
        y=y,
        target_name="target",
        task="regression",
        feature_names=names,
    )


def _check_classes(spec: SyntheticConfig) -> None:
    """Every class needs samples: more classes than samples only allocates patterns nobody sees."""
    if spec.classes > spec.samples:
        raise ConfigError(
            f"data.synthetic.classes must not exceed data.synthetic.samples, so every class has samples. "
            f"Received: data.synthetic.classes={spec.classes} with data.synthetic.samples={spec.samples}"
        )


def _describe(kind: str, spec: SyntheticConfig, shape: str, seed: int) -> str:
    return (
        f"synthetic {kind}: {spec.samples} samples, {shape}, {spec.classes} classes, a pattern per class "
        f"plus Gaussian noise (sd {spec.noise}), seed {seed}"
    )
