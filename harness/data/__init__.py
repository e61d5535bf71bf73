"""Datasets, seeded splits, preprocessing fitted on the training split, tf.data pipelines.

`prepare_data(cfg.data, seed, base_dir)` resolves `data.dataset` in `DATASETS`; register a
custom dataset with `@DATASETS.register("name")` on a function `(DataConfig, seed, base_dir)
-> RawData`.
"""

# Importing these modules registers the built-in datasets in DATASETS.
from harness.data import arrays, builtin, images, synthetic, tabular  # noqa: F401
from harness.data.adapt import fit_data_to_model
from harness.data.pipeline import (
    in_memory,
    make_dataset,
    make_predict_dataset,
    make_step_dataset,
    sample_order,
    step_layout,
)
from harness.data.prepare import prepare_data
from harness.data.prepared import PreparedData
from harness.data.preprocess import Preprocessor
from harness.data.raw import Loader, RawData, Task
from harness.data.registry import DATASETS

__all__ = [
    "DATASETS",
    "Loader",
    "PreparedData",
    "Preprocessor",
    "RawData",
    "Task",
    "fit_data_to_model",
    "in_memory",
    "make_dataset",
    "make_predict_dataset",
    "make_step_dataset",
    "prepare_data",
    "sample_order",
    "step_layout",
]
