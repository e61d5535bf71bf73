"""Small datasets shipped inside scikit-learn, so examples and smoke tests work offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.utils import Bunch

from harness.config.schema import DataConfig
from harness.data.raw import RawData
from harness.data.registry import DATASETS


@DATASETS.register("digits")
def load_digits(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """1797 8x8 grayscale handwritten digits; pixels are 0-16 in the source, 0-1 after `input_scale`."""
    bunch = datasets.load_digits()
    return RawData(
        source="scikit-learn digits: 1797 8x8 grayscale images of handwritten digits, pixel values 0-16",
        x=bunch.images[..., None].astype(np.float32),
        y=bunch.target,
        target_name="digit",
        task="classification",
        class_names=[str(name) for name in bunch.target_names],
        input_scale=1 / 16,
    )


def _tabular_classification(name: str, bunch: Bunch, what: str) -> RawData:
    return RawData(
        source=f"scikit-learn {name}: {what}",
        x=bunch.data.astype(np.float32),
        y=bunch.target,
        target_name="class",
        task="classification",
        class_names=[str(c) for c in bunch.target_names],
        feature_names=[str(f) for f in bunch.feature_names],
    )


@DATASETS.register("iris")
def load_iris(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """150 iris flowers, 4 measurements, 3 species."""
    return _tabular_classification("iris", datasets.load_iris(), "150 flowers, 4 measurements, 3 species")


@DATASETS.register("wine")
def load_wine(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """178 wines, 13 chemical measurements, 3 cultivars."""
    return _tabular_classification(
        "wine", datasets.load_wine(), "178 wines, 13 chemical measurements, 3 cultivars"
    )


@DATASETS.register("breast_cancer")
def load_breast_cancer(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """569 tumours, 30 features, malignant or benign (class indices as scikit-learn defines them)."""
    return _tabular_classification(
        "breast_cancer", datasets.load_breast_cancer(), "569 tumours, 30 features, malignant or benign"
    )


@DATASETS.register("diabetes")
def load_diabetes(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """442 patients, 10 features, disease progression after one year (regression).

    The unscaled features are loaded: scikit-learn's default pre-scaling uses every row,
    which would leak test statistics; data.scaling standardises on the training split instead.
    """
    bunch = datasets.load_diabetes(scaled=False)
    return RawData(
        source="scikit-learn diabetes: 442 patients, 10 features, disease progression after one year",
        x=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.float64),
        target_name="progression",
        task="regression",
        feature_names=[str(f) for f in bunch.feature_names],
        target_names=["progression"],
    )
