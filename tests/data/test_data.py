"""Tests of harness.data: registry, built-ins, splits, preprocessing, CSV/NPZ/image inputs, pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras  # noqa: F401  (imported at collection: TensorFlow and Keras set environment variables on import)
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_diabetes

from harness.config.schema import DataConfig, SyntheticConfig
from harness.data import (
    DATASETS,
    PreparedData,
    Preprocessor,
    in_memory,
    make_dataset,
    make_predict_dataset,
    make_step_dataset,
    memory,
    prepare_data,
    sample_order,
)
from harness.data.split import split_indices
from harness.data.table import Kind, Missing, TableEncoder, read_csv
from harness.errors import ConfigError, DataError

COLORS = ("red", "green", "blue")
ANIMAL_OF = {"red": "cat", "green": "dog", "blue": "bird"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def animals_csv(path: Path, rows: int = 60) -> Path:
    """size (number), color (text), label (text): the label follows the color, so encodings can be checked."""
    lines = ["size,color,label"]
    for i in range(rows):
        color = COLORS[i % 3]
        lines.append(f"{1.5 * i:.1f},{color},{ANIMAL_OF[color]}")
    return write(path, "\n".join(lines) + "\n")


def csv_config(path: Path, **overrides: object) -> DataConfig:
    return DataConfig.model_validate({"dataset": "csv", "path": str(path), "target": "label", **overrides})


def rows_of(x: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(np.round(row, 5)) for row in x.reshape(len(x), -1)}


# --- registry and built-in datasets -------------------------------------------------------------


def test_unknown_dataset_lists_known_names_and_suggests_the_closest() -> None:
    with pytest.raises(DataError) as err:
        prepare_data(DataConfig(dataset="digts"), seed=0)
    message = str(err.value)
    assert "data.dataset" in message and "'digts'" in message
    assert "Did you mean 'digits'?" in message
    assert all(name in message for name in ("iris", "csv", "synthetic_images"))


def test_registry_holds_every_builtin_dataset() -> None:
    expected = {"digits", "iris", "wine", "breast_cancer", "diabetes", "csv", "npz", "image_folder"}
    assert expected | {"synthetic_images", "synthetic_tabular"} <= set(DATASETS.names())


@pytest.mark.parametrize(
    ("name", "shape", "task", "outputs", "samples"),
    [
        ("digits", (8, 8, 1), "classification", 10, 1797),
        ("iris", (4,), "classification", 3, 150),
        ("wine", (13,), "classification", 3, 178),
        ("breast_cancer", (30,), "classification", 2, 569),
        ("diabetes", (10,), "regression", 1, 442),
    ],
)
def test_builtin_dataset_shapes_and_task(
    name: str, shape: tuple[int, ...], task: str, outputs: int, samples: int
) -> None:
    data = prepare_data(DataConfig(dataset=name), seed=0)
    assert (data.task, data.input_shape, data.num_outputs) == (task, shape, outputs)
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == samples
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert x.dtype == np.float32 and x.shape[1:] == shape and len(x) == len(y)
        if task == "classification":
            assert y.dtype == np.int32 and y.min() >= 0 and y.max() < outputs
        else:
            assert y.dtype == np.float32 and y.shape[1:] == (outputs,)
    assert (data.class_names is None) == (task == "regression")
    assert (data.feature_names is None) == (name == "digits")
    summary = json.loads(json.dumps(data.summary()))
    assert summary["dataset"] == name and summary["n_train"] == len(data.x_train)


def test_explicit_task_overrides_the_dataset_default() -> None:
    data = prepare_data(DataConfig(dataset="iris", task="regression"), seed=0)
    assert data.task == "regression" and data.y_train.shape[1:] == (1,) and data.class_names is None


# --- splits ---------------------------------------------------------------------------------------


def test_split_parts_are_disjoint_and_cover_every_sample() -> None:
    split = split_indices(100, None, 0.15, 0.2, seed=3, source="test data")
    assert (len(split.train), len(split.val), len(split.test)) == (65, 15, 20)
    together = np.concatenate([split.train, split.val, split.test])
    assert sorted(together.tolist()) == list(range(100))


def test_stratified_split_keeps_class_proportions() -> None:
    labels = np.repeat([0, 1, 2], [120, 60, 20])
    split = split_indices(200, labels, 0.15, 0.15, seed=0, source="test data")
    assert split.stratified
    for rows in (split.train, split.val, split.test):
        shares = np.bincount(labels[rows], minlength=3) / len(rows)
        assert np.allclose(shares, [0.6, 0.3, 0.1], atol=0.04)


def test_stratification_falls_back_with_a_note_when_a_class_is_too_small() -> None:
    labels = np.array([0] * 30 + [1] * 30 + [2])
    split = split_indices(61, labels, 0.15, 0.15, seed=0, source="test data", class_names=["a", "b", "rare"])
    assert not split.stratified and split.fallback and "class 'rare' has 1 sample" in split.fallback
    assert len(split.train) + len(split.val) + len(split.test) == 61


def test_same_seed_gives_the_same_split_and_another_seed_a_different_one() -> None:
    first, again = (
        prepare_data(DataConfig(dataset="wine"), seed=1),
        prepare_data(DataConfig(dataset="wine"), seed=1),
    )
    other = prepare_data(DataConfig(dataset="wine"), seed=2)
    assert np.array_equal(first.x_train, again.x_train) and np.array_equal(first.y_test, again.y_test)
    assert rows_of(first.x_test) != rows_of(other.x_test) or not np.array_equal(first.y_test, other.y_test)
    assert not np.array_equal(
        split_indices(100, None, 0.15, 0.15, 1, "t").test, split_indices(100, None, 0.15, 0.15, 2, "t").test
    )


# --- preprocessing ------------------------------------------------------------------------------


def test_standard_scaling_is_fitted_on_the_training_split_only() -> None:
    data = prepare_data(DataConfig(dataset="breast_cancer", scaling="standard"), seed=0)
    assert np.allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(data.x_train.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(data.x_test.mean(axis=0)).max() > 0.05
    assert data.notes["scaling"]["fitted_on"] == "train split"


def test_minmax_scaling_maps_the_training_range_to_unit_interval() -> None:
    data = prepare_data(DataConfig(dataset="wine", scaling="minmax"), seed=0)
    assert np.allclose(data.x_train.min(axis=0), 0.0) and np.allclose(data.x_train.max(axis=0), 1.0)


def test_images_are_standardised_per_channel_after_dividing_digits_by_16() -> None:
    raw = prepare_data(DataConfig(dataset="digits", scaling="none"), seed=0)
    assert raw.x_train.min() == 0.0 and raw.x_train.max() == 1.0
    data = prepare_data(DataConfig(dataset="digits"), seed=0)
    assert data.preprocessor.scaler.shift.shape == (1,)
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std()) - 1.0) < 1e-4


def test_regression_targets_are_standardised_and_inverse_targets_restores_them() -> None:
    data = prepare_data(DataConfig(dataset="diabetes"), seed=0)
    assert abs(float(data.y_train.mean())) < 1e-5 and abs(float(data.y_train.std()) - 1.0) < 1e-4
    restored = np.concatenate(
        [data.preprocessor.inverse_targets(y) for y in (data.y_train, data.y_val, data.y_test)]
    )
    assert np.allclose(np.sort(restored[:, 0]), np.sort(load_diabetes().target), atol=1e-3)
    assert data.target_names == ["progression"]


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_with_text_labels_and_a_categorical_column(tmp_path: Path) -> None:
    path = animals_csv(tmp_path / "animals.csv")
    data = prepare_data(csv_config(path, scaling="none"), seed=0)
    assert data.task == "classification" and data.class_names == ["bird", "cat", "dog"]
    assert data.feature_names == ["size", "color=blue", "color=green", "color=red"]
    assert data.notes["encoded_categorical"] == {"color": ["blue", "green", "red"]}
    assert data.notes["label_encoding"] == {"bird": 0, "cat": 1, "dog": 2}
    colors = np.array(["blue", "green", "red"])[data.x_train[:, 1:].argmax(axis=1)]
    labels = data.preprocessor.decode_labels(data.y_train)
    assert labels == [ANIMAL_OF[c] for c in colors]


def test_csv_relative_path_is_resolved_against_base_dir(tmp_path: Path) -> None:
    animals_csv(tmp_path / "animals.csv")
    data = prepare_data(csv_config(Path("animals.csv")), seed=0, base_dir=tmp_path)
    assert data.notes["rows_used"] == 60


def test_csv_numeric_float_target_is_regression(tmp_path: Path) -> None:
    lines = ["a,b,price"] + [f"{i},{i % 7},{2.5 * i + 0.3}" for i in range(40)]
    path = write(tmp_path / "prices.csv", "\n".join(lines))
    data = prepare_data(csv_config(path, target="price"), seed=0)
    assert data.task == "regression" and data.target_names == ["price"] and data.num_outputs == 1
    assert "fractional" in data.notes["task_reason"]


def missing_values_csv(path: Path) -> Path:
    """40 rows; 'a' has 3 empty cells, 'b' one NA, 'kind' one '?', and one row lacks its label."""
    lines = ["a,b,kind,label"]
    for i in range(40):
        a = "" if i in (1, 2, 3) else str(i)
        b = "NA" if i == 4 else str(i % 5)
        kind = "?" if i == 6 else ("x" if i % 2 else "y")
        label = "" if i == 5 else str(i % 2)
        lines.append(f"{a},{b},{kind},{label}")
    return write(path, "\n".join(lines) + "\n")


def test_csv_missing_values_dropped(tmp_path: Path) -> None:
    data = prepare_data(csv_config(missing_values_csv(tmp_path / "m.csv")), seed=0)
    notes = data.notes
    assert (
        notes["rows_read"],
        notes["rows_dropped_missing_target"],
        notes["rows_dropped_missing_features"],
    ) == (40, 1, 5)
    assert notes["rows_used"] == 34 == len(data.x_train) + len(data.x_val) + len(data.x_test)
    assert notes["missing_values"] == {"a": 3, "b": 1, "kind": 1}


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
def test_csv_missing_values_imputed(tmp_path: Path, strategy: str) -> None:
    data = prepare_data(csv_config(missing_values_csv(tmp_path / "m.csv"), missing=strategy), seed=0)
    assert data.notes["rows_used"] == 39 and data.notes["rows_dropped"] == 1
    assert data.notes["values_imputed"] == {"a": 3, "b": 1, "kind": 1}
    assert data.notes["imputed_with"]["kind"] in ("x", "y")
    assert all(np.isfinite(x).all() for x in (data.x_train, data.x_val, data.x_test))


@pytest.mark.parametrize(("strategy", "fill"), [("mean", 2.5), ("median", 1.5), ("most_frequent", 1.0)])
def test_table_encoder_learns_fill_values_from_the_rows_it_is_fitted_on(
    tmp_path: Path, strategy: Missing, fill: float
) -> None:
    table = read_csv(write(tmp_path / "t.csv", "v,c\n1,a\n1,b\n2,b\n6,\nNA,b\n"))
    kinds: dict[str, Kind] = {"v": "numeric", "c": "categorical"}
    encoder = TableEncoder.fit(table, kinds, strategy)
    x, filled = encoder.encode(table)
    assert encoder.columns[0].fill == fill and encoder.columns[1].fill == "b"
    assert filled == {"v": 1, "c": 1}
    assert x[4, 0] == fill and x[3].tolist() == [6.0, 0.0, 1.0]


def test_unknown_category_encodes_as_all_zeros(tmp_path: Path) -> None:
    data = prepare_data(csv_config(animals_csv(tmp_path / "animals.csv"), scaling="none"), seed=0)
    new = write(tmp_path / "new.csv", "color,size\npurple,3.0\nred,4.5\n")
    x = data.preprocessor.transform_file(new)
    assert x.tolist() == [[3.0, 0.0, 0.0, 0.0], [4.5, 0.0, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (
            "size,color,label\n1,red,cat\n",
            {"target": "lable"},
            ["'lable'", "did you mean 'label'?", "data.target"],
        ),
        (
            "size,color,label\n1,red,cat\n",
            {"features": ["size", "colour"]},
            ["'colour'", "did you mean 'color'?"],
        ),
        ("size,color,label\n" + "1,red,cat\n" * 10, {}, ["at least 2 classes", "'label'", "'cat'"]),
        ("size,color,label\n1,red,cat\n2,blue,dog\n", {}, ["at least 3 usable rows", "Received: 2 rows"]),
        ("", {}, ["is empty"]),
        ("size,color,label\n", {}, ["no data rows"]),
        ("size,color,label\n1,red,cat\n2,blue\n", {}, ["line 3", "3 fields"]),
        ("size,color,label\n1,red,cat\n", {"categorical": ["shape"]}, ["data.categorical", "'shape'"]),
    ],
    ids=[
        "target",
        "feature",
        "single-class",
        "too-few-rows",
        "empty",
        "header-only",
        "ragged",
        "categorical",
    ],
)
def test_csv_problems_raise_a_data_error_naming_the_file(
    tmp_path: Path, text: str, overrides: dict[str, object], expected: list[str]
) -> None:
    path = write(tmp_path / "bad_input.csv", text)
    with pytest.raises(DataError) as err:
        prepare_data(csv_config(path, **overrides), seed=0)
    message = str(err.value)
    assert "bad_input.csv" in message
    for part in expected:
        assert part in message


def test_missing_csv_file_names_the_resolved_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.path.*nope\.csv does not exist.*resolved against"):
        prepare_data(csv_config(Path("nope.csv")), seed=0, base_dir=tmp_path)


def garbage_csv(path: Path, cells: dict[int, str], rows: int = 100) -> Path:
    """'age' holds numbers except `cells` (row index -> text); 'color' is text; 'label' 0/1."""
    lines = ["age,color,label"]
    for i in range(rows):
        lines.append(f"{cells.get(i, str(20 + i % 50))},{COLORS[i % 3]},{i % 2}")
    return write(path, "\n".join(lines) + "\n")


def test_numeric_column_with_a_few_stray_cells_is_refused_naming_lines_and_cells(tmp_path: Path) -> None:
    path = garbage_csv(tmp_path / "ages.csv", {5: "abc", 17: "1.2.3", 40: "NA", 41: "x" * 500})
    with pytest.raises(DataError) as err:
        prepare_data(csv_config(path), seed=0)
    message = str(err.value)
    assert "ages.csv" in message and "'age'" in message
    # the header is line 1, so row index 5 is on line 7; 'NA' is a missing value, not a stray cell
    assert "line 7: 'abc'" in message and "line 19: '1.2.3'" in message and "line 42" not in message
    assert "line 43: '" + "x" * 40 + "...'" in message and "x" * 41 not in message
    assert "header being line 1" in message
    assert "data.coerce_numeric=true" in message and "data.categorical" in message


def test_coerce_numeric_reads_stray_cells_as_missing_values_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = garbage_csv(tmp_path / "ages.csv", {5: "abc", 17: "1.2.3", 40: "NA"})
    data = prepare_data(csv_config(path, coerce_numeric=True, missing="median"), seed=0)
    warning = capsys.readouterr().err
    assert warning.startswith("warning: CSV file") and "ages.csv" in warning
    assert "line 7: 'abc'" in warning and "line 19: '1.2.3'" in warning
    assert data.notes["coerced_to_missing"] == {"age": 2}
    assert data.notes["values_imputed"] == {"age": 3} and data.notes["rows_used"] == 100
    assert data.notes["categorical_columns"] == ["color"], "age stays numeric, not 50 categories"
    dropped = prepare_data(csv_config(path, coerce_numeric=True), seed=0)
    assert dropped.notes["rows_used"] == 97 and dropped.notes["missing_values"] == {"age": 3}


def test_text_columns_and_forced_categorical_columns_are_not_stray_cells(tmp_path: Path) -> None:
    text = garbage_csv(tmp_path / "codes.csv", {i: f"code{i}" for i in range(0, 100, 4)})
    data = prepare_data(csv_config(text), seed=0)  # a quarter of the cells are words: a text column
    assert data.notes["categorical_columns"] == ["age", "color"]
    forced = garbage_csv(tmp_path / "forced.csv", {5: "abc"})
    data = prepare_data(csv_config(forced, categorical=["age"]), seed=0)
    assert "abc" in data.preprocessor.table.columns[0].categories  # type: ignore[union-attr]


def test_numeric_target_with_stray_cells_suggests_classification(tmp_path: Path) -> None:
    lines = ["x,y"] + [f"{i},{'oops' if i == 3 else i * 0.5}" for i in range(60)]
    path = write(tmp_path / "reg.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'y'.*line 5: 'oops'.*data.task=classification"):
        prepare_data(csv_config(path, target="y"), seed=0)
    data = prepare_data(csv_config(path, target="y", coerce_numeric=True), seed=0)
    assert data.task == "regression" and data.notes["rows_dropped_missing_target"] == 1


def test_infinite_cells_are_stray_cells_too(tmp_path: Path) -> None:
    path = garbage_csv(tmp_path / "inf.csv", {8: "inf"})
    with pytest.raises(DataError, match="line 10: 'inf'"):
        prepare_data(csv_config(path), seed=0)
    assert prepare_data(csv_config(path, coerce_numeric=True), seed=0).notes["coerced_to_missing"] == {"age": 1}


def test_numbers_with_a_decimal_comma_are_refused_not_read_as_categories(tmp_path: Path) -> None:
    lines = ["price;label"] + [f"{i},5;{i % 2}" for i in range(30)]
    path = write(tmp_path / "comma.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"comma\.csv.*'price'.*decimal comma.*line 2: '0,5'"):
        prepare_data(csv_config(path, coerce_numeric=True), seed=0)


def test_line_numbers_count_from_the_header_and_follow_multi_line_cells(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path / "t.csv", 'a,b\n1,"two\nlines"\n\n3,x\n'))
    assert table.lines.tolist() == [2, 5]


def test_missing_cells_are_named_for_what_they_are_at_predict_time(tmp_path: Path) -> None:
    data = prepare_data(csv_config(animals_csv(tmp_path / "animals.csv")), seed=0)
    holes = write(tmp_path / "holes.csv", "size,color\n1.0,red\nNA,red\n,blue\n2.0,null\n")
    with pytest.raises(DataError) as err:
        data.preprocessor.transform_file(holes)
    message = str(err.value)
    assert "holes.csv" in message and "'size'" in message and "data.missing=drop" in message
    assert "line 3: 'NA' (a missing-value marker), line 4: an empty cell" in message
    typo = write(tmp_path / "typo.csv", "size,color\n1.0,red\n1..5,red\n")
    with pytest.raises(DataError, match=r"typo\.csv.*'size'.*line 3: '1\.\.5'"):
        data.preprocessor.transform_file(typo)


def test_a_header_with_thousands_of_columns_is_listed_briefly(tmp_path: Path) -> None:
    header = ",".join(f"column_number_{i}" for i in range(5000))
    path = write(tmp_path / "wide.csv", header + "\n")
    with pytest.raises(DataError) as err:
        prepare_data(csv_config(path, target="column_number_0"), seed=0)
    assert "and 4970 more" in str(err.value) and len(str(err.value)) < 2000


# --- NPZ and image folders ----------------------------------------------------------------------


def test_npz_images_get_a_channel_axis_and_uint8_is_scaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=x, y=np.arange(40) % 4)
    data = prepare_data(DataConfig(dataset="npz", path=str(tmp_path / "img.npz"), scaling="none"), seed=0)
    assert data.input_shape == (6, 6, 1) and data.num_outputs == 4 and data.task == "classification"
    assert data.notes["channel_axis_added"] and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert np.allclose(data.preprocessor.transform(x[:3]), x[:3, :, :, None] / 255.0, atol=1e-6)


def test_npz_tabular_regression_and_one_hot_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    np.savez(tmp_path / "reg.npz", inputs=x, target=x @ [1.0, -2.0, 0.5])
    data = prepare_data(
        DataConfig(dataset="npz", path=str(tmp_path / "reg.npz"), x_key="inputs", y_key="target"), 0
    )
    assert data.task == "regression" and data.input_shape == (3,) and data.target_names == ["target"]
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(3)[np.arange(50) % 3])
    data = prepare_data(DataConfig(dataset="npz", path=str(tmp_path / "onehot.npz")), seed=0)
    assert data.task == "classification" and data.num_outputs == 3


def test_npz_missing_array_names_the_key_and_the_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", features=np.zeros((10, 2)), y=np.arange(10) % 2)
    with pytest.raises(DataError) as err:
        prepare_data(DataConfig(dataset="npz", path=str(tmp_path / "d.npz"), x_key="feature"), seed=0)
    assert all(
        part in str(err.value) for part in ("data.x_key", "d.npz", "'feature'", "Did you mean 'features'?")
    )


def write_images(root: Path, classes: dict[str, int], count: int = 5) -> None:
    """Tiny 10x12 RGB PNGs per class; each class has its own brightness."""
    from PIL import Image

    for name, level in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((10, 12, 3), level + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder_loads_resized_grayscale_images(tmp_path: Path) -> None:
    write_images(tmp_path / "pics", {"dark": 20, "bright": 220})
    (tmp_path / "pics" / "dark" / "notes.txt").write_text("not an image")
    cfg = DataConfig(
        dataset="image_folder", path="pics", image_size=(8, 8), color_mode="grayscale", scaling="none"
    )
    data = prepare_data(
        cfg.model_copy(update={"validation_split": 0.2, "test_split": 0.2}), seed=0, base_dir=tmp_path
    )
    assert data.input_shape == (8, 8, 1) and data.class_names == ["bright", "dark"]
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 10
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert np.all((x.mean(axis=(1, 2, 3)) > 0.5) == (y == 0))
    predicted = data.preprocessor.transform_file(tmp_path / "pics" / "dark")
    assert predicted.shape == (5, 8, 8, 1) and predicted.max() < 0.2


def test_image_folder_needs_two_classes_with_images(tmp_path: Path) -> None:
    write_images(tmp_path / "one", {"only": 10})
    with pytest.raises(DataError, match="at least 2 classes"):
        prepare_data(DataConfig(dataset="image_folder", path=str(tmp_path / "one")), seed=0)
    (tmp_path / "one" / "empty").mkdir()
    with pytest.raises(DataError, match="no images in 'empty'"):
        prepare_data(DataConfig(dataset="image_folder", path=str(tmp_path / "one")), seed=0)


# --- synthetic data -----------------------------------------------------------------------------


def nearest_centroid_accuracy(data: PreparedData) -> float:
    x_train, x_test = data.x_train.reshape(len(data.x_train), -1), data.x_test.reshape(len(data.x_test), -1)
    centroids = np.stack([x_train[data.y_train == k].mean(axis=0) for k in range(data.num_outputs)])
    predicted = np.argmin(((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    return float((predicted == data.y_test).mean())


@pytest.mark.parametrize("name", ["synthetic_images", "synthetic_tabular"])
def test_synthetic_data_is_seeded_sized_and_learnable(name: str) -> None:
    spec = SyntheticConfig(samples=300, image_shape=(8, 8, 1), features=6, classes=4, noise=0.5)
    cfg = DataConfig(dataset=name, synthetic=spec)
    data = prepare_data(cfg, seed=0)
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 300 and data.num_outputs == 4
    assert data.input_shape == ((8, 8, 1) if name == "synthetic_images" else (6,))
    assert np.array_equal(data.x_train, prepare_data(cfg, seed=0).x_train)
    assert nearest_centroid_accuracy(data) > 0.9


def test_synthetic_tabular_regression_target_is_learnable() -> None:
    data = prepare_data(DataConfig(dataset="synthetic_tabular", task="regression"), seed=0)
    weights, *_ = np.linalg.lstsq(data.x_train, data.y_train, rcond=None)
    residual = data.y_test - data.x_test @ weights
    assert data.task == "regression" and float(residual.var() / data.y_test.var()) < 0.5


# --- the saved preprocessor ---------------------------------------------------------------------


def test_preprocessor_round_trip_transforms_identically(tmp_path: Path) -> None:
    data = prepare_data(csv_config(animals_csv(tmp_path / "animals.csv"), missing="median"), seed=0)
    data.preprocessor.save(tmp_path / "model" / "preprocessor.json")
    loaded = Preprocessor.load(tmp_path / "model" / "preprocessor.json")
    assert loaded.to_dict() == data.preprocessor.to_dict()
    raw = np.random.default_rng(0).normal(size=(7, 4)) * 30
    assert np.array_equal(loaded.transform(raw), data.preprocessor.transform(raw))
    from_file = loaded.transform_file(tmp_path / "animals.csv")
    assert np.array_equal(from_file, data.preprocessor.transform_file(tmp_path / "animals.csv"))
    assert rows_of(data.x_test) <= rows_of(from_file) and len(from_file) == 60


def test_transform_file_csv_without_a_feature_column_names_file_and_column(tmp_path: Path) -> None:
    data = prepare_data(csv_config(animals_csv(tmp_path / "animals.csv")), seed=0)
    incomplete = write(tmp_path / "incomplete.csv", "color,label\nred,cat\n")
    with pytest.raises(DataError) as err:
        data.preprocessor.transform_file(incomplete)
    assert "incomplete.csv" in str(err.value) and "'size'" in str(err.value)


def test_transform_file_npz_uses_the_saved_key_or_the_only_array(tmp_path: Path) -> None:
    data = prepare_data(DataConfig(dataset="iris"), seed=0)
    raw = np.random.default_rng(1).uniform(0, 8, size=(5, 4))
    np.savez(tmp_path / "keyed.npz", x=raw, other=np.zeros(3))
    np.savez(tmp_path / "single.npz", anything=raw)
    np.savez(tmp_path / "ambiguous.npz", a=raw, b=raw)
    expected = data.preprocessor.transform(raw)
    assert np.array_equal(data.preprocessor.transform_file(tmp_path / "keyed.npz"), expected)
    assert np.array_equal(data.preprocessor.transform_file(tmp_path / "single.npz"), expected)
    with pytest.raises(DataError, match=r"ambiguous\.npz.*'x'"):
        data.preprocessor.transform_file(tmp_path / "ambiguous.npz")


def test_transform_rejects_inputs_of_the_wrong_shape() -> None:
    data = prepare_data(DataConfig(dataset="iris"), seed=0)
    with pytest.raises(DataError, match=r"shape \(samples, 4\).*Received: shape \(2, 3\)"):
        data.preprocessor.transform(np.zeros((2, 3)))


def test_decode_labels_maps_indices_and_probabilities_to_names() -> None:
    preprocessor = prepare_data(DataConfig(dataset="iris"), seed=0).preprocessor
    assert preprocessor.decode_labels(np.array([2, 0, 1])) == ["virginica", "setosa", "versicolor"]
    assert preprocessor.decode_labels(np.array([[0.1, 0.7, 0.2]])) == ["versicolor"]
    with pytest.raises(DataError, match="0..2"):
        preprocessor.decode_labels(np.array([3]))


def test_loading_a_missing_damaged_or_newer_preprocessor_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        Preprocessor.load(tmp_path / "absent.json")
    with pytest.raises(DataError, match="not valid JSON"):
        Preprocessor.load(write(tmp_path / "broken.json", "{"))
    saved = prepare_data(DataConfig(dataset="iris"), seed=0).preprocessor.to_dict()
    with pytest.raises(DataError, match="version 99.*reads version 1"):
        Preprocessor.load(write(tmp_path / "newer.json", json.dumps({**saved, "version": 99})))
    del saved["scaling"]
    with pytest.raises(DataError, match="damaged"):
        Preprocessor.load(write(tmp_path / "damaged.json", json.dumps(saved)))


# --- memory estimates before big allocations -----------------------------------------------------


def test_meminfo_cgroup_and_byte_formatting() -> None:
    assert memory.meminfo_available("MemTotal: 100 kB\nMemAvailable:    2048 kB\n") == 2048 * 1024
    assert memory.meminfo_available("MemTotal: 100 kB\n") is None
    assert [memory.format_bytes(n) for n in (512, 1500, 2.5e9, 7e15)] == ["512 bytes", "1.5 kB", "2.5 GB", "7000.0 TB"]
    assert memory.inputs_bytes(10**9, (20000, 20000, 3)) == 4_800_000_000_000_000_000


def test_cgroup_headroom_takes_the_tightest_limit_of_any_ancestor(tmp_path: Path) -> None:
    job = tmp_path / "slurm" / "job_7"
    step = job / "step_0"
    step.mkdir(parents=True)
    (step / "memory.max").write_text("max\n")
    (step / "memory.current").write_text("100\n")
    (job / "memory.max").write_text("1000\n")
    (job / "memory.current").write_text("400\n")
    assert memory.cgroup_headroom(tmp_path, "0::/slurm/job_7/step_0\n") == 600
    assert memory.cgroup_headroom(tmp_path, "0::/\n") is None
    assert memory.cgroup_headroom(tmp_path, "4:memory:/x\n") is None  # cgroup v1: not read


@pytest.fixture
def small_memory(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pretend 10 MB are available, so tests can ask for more without allocating it."""
    available = 10_000_000
    monkeypatch.setattr(memory, "available_memory", lambda: (available, "a test's figure"))
    return available


def test_synthetic_images_too_big_are_refused_before_generating(small_memory: int) -> None:
    cfg = DataConfig.model_validate(
        {"dataset": "synthetic_images", "synthetic": {"samples": 100, "image_shape": [64, 64, 3]}}
    )
    with pytest.raises(ConfigError) as err:
        prepare_data(cfg, seed=0)
    message = str(err.value)
    assert "data.synthetic.samples=100" in message and "data.synthetic.image_shape=[64, 64, 3]" in message
    assert "about 27.0 MB" in message and "10.0 MB available (a test's figure)" in message
    small = cfg.model_copy(update={"synthetic": SyntheticConfig(samples=10, image_shape=(16, 16, 3))})
    assert len(prepare_data(small, seed=0).x_train) > 0


@pytest.mark.parametrize("name", ["synthetic_images", "synthetic_tabular"])
def test_more_synthetic_classes_than_samples_are_refused(name: str) -> None:
    cfg = DataConfig.model_validate({"dataset": name, "synthetic": {"samples": 50, "classes": 1_000_000}})
    with pytest.raises(ConfigError, match=r"data.synthetic.classes=1000000 with data.synthetic.samples=50"):
        prepare_data(cfg, seed=0)


def test_synthetic_tabular_too_big_is_refused(small_memory: int) -> None:
    cfg = DataConfig.model_validate({"dataset": "synthetic_tabular", "synthetic": {"samples": 10**6}})
    with pytest.raises(ConfigError, match=r"data.synthetic.samples=1000000 with data.synthetic.features=20"):
        prepare_data(cfg, seed=0)


def test_image_folder_with_a_huge_image_size_is_refused_before_reading(tmp_path: Path, small_memory: int) -> None:
    write_images(tmp_path / "imgs", {"a": 0, "b": 200})
    cfg = DataConfig(dataset="image_folder", path=str(tmp_path / "imgs"), image_size=(20000, 20000))
    with pytest.raises(ConfigError) as err:
        prepare_data(cfg, seed=0)
    assert "data.image_size=[20000, 20000]" in str(err.value) and "10 rgb images" in str(err.value)


def test_npz_whose_arrays_do_not_fit_is_refused_from_the_headers(tmp_path: Path, small_memory: int) -> None:
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x=np.zeros((1000, 1000), np.float32), y=np.zeros(1000))
    assert path.stat().st_size < 100_000, "compressed, the file says nothing about the arrays' size"
    cfg = DataConfig(dataset="npz", path=str(path))
    with pytest.raises(ConfigError, match=r"big\.npz \(1001000 numbers in 2 arrays\)"):
        prepare_data(cfg, seed=0)


def test_csv_id_column_one_hot_encoded_beyond_memory_is_refused(tmp_path: Path, small_memory: int) -> None:
    lines = ["id,size,label"] + [f"user{i},{i},{i % 2}" for i in range(2000)]
    path = write(tmp_path / "ids.csv", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        prepare_data(csv_config(path), seed=0)
    message = str(err.value)
    assert "ids.csv" in message and "column 'id' alone gives 1400" in message and "data.features" in message
    assert len(prepare_data(csv_config(path, features=["size"]), seed=0).x_train) == 1400


# --- tf.data pipelines --------------------------------------------------------------------------


def epoch(
    n: int,
    batch_size: int = 10,
    shuffle_seed: int | None = None,
    shard: tuple[int, int] | None = None,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
    """The y batches of one epoch over x = y = arange(n); also checks x and y stay aligned."""
    x, y = np.arange(n, dtype=np.float32)[:, None], np.arange(n, dtype=np.int32)
    dataset = make_dataset(
        x, y, batch_size, shuffle_seed=shuffle_seed, shard=shard, drop_remainder=drop_remainder
    )
    batches = []
    for xb, yb in dataset:
        assert np.array_equal(xb.numpy()[:, 0], yb.numpy())
        batches.append(yb.numpy())
    return batches


def test_make_dataset_visits_every_sample_once_in_a_seeded_order() -> None:
    first = np.concatenate(epoch(103, shuffle_seed=5))
    assert sorted(first.tolist()) == list(range(103))
    assert np.array_equal(first, np.concatenate(epoch(103, shuffle_seed=5)))
    assert not np.array_equal(first, np.concatenate(epoch(103, shuffle_seed=6)))
    assert np.array_equal(first, sample_order(103, 5))
    assert np.concatenate(epoch(103)).tolist() == list(range(103))


def test_make_dataset_shards_are_disjoint_and_cover_the_epoch() -> None:
    shards = [np.concatenate(epoch(103, shuffle_seed=7, shard=(i, 3))) for i in range(3)]
    together = np.concatenate(shards)
    assert len(together) == 103 and len(set(together.tolist())) == 103
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="shard"):
        make_dataset(np.zeros((4, 1)), np.zeros(4), 2, shard=(3, 3))


def test_make_dataset_drop_remainder_gives_full_static_batches() -> None:
    x, y = np.zeros((25, 8, 8, 1), np.float32), np.zeros(25, np.int32)
    dataset = make_dataset(x, y, 10, shuffle_seed=0, drop_remainder=True)
    assert isinstance(dataset, tf.data.Dataset)
    assert dataset.element_spec[0].shape.as_list() == [10, 8, 8, 1]
    assert [len(b) for b in epoch(25, drop_remainder=True)] == [10, 10]


# A process that keeps 256 MiB of data as tensors, as the training loop does, makes three epochs'
# pipelines over it and prints how much its peak memory grew, as a fraction of the data.
EPOCHS_OVER_256_MIB = r"""
import resource
import numpy as np
from harness.data import in_memory, make_step_dataset
x, y = np.ones((65536, 1024), np.float32), np.zeros(65536, np.int64)
tensors = in_memory(x, y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for epoch in range(3):
    next(iter(make_step_dataset(*tensors, 32, shuffle_seed=epoch)))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / x.nbytes)
"""


def test_an_epochs_pipeline_does_not_copy_the_data() -> None:
    """Each epoch's iterator used to copy every captured tensor into a graph (tf.data's default
    rewrite): a copy of the whole data per epoch, seconds each for CIFAR-sized arrays."""
    done = subprocess.run(
        [sys.executable, "-c", EPOCHS_OVER_256_MIB],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    grown = float(done.stdout.split()[-1])
    assert grown < 0.25, f"peak memory grew by {grown:.2f}x the data over three epochs"


@pytest.mark.parametrize(
    "build",
    [make_step_dataset, make_dataset, lambda x, y, batch, shuffle_seed: make_predict_dataset(x, batch)],
    ids=["step", "plain", "predict"],
)
def test_pipelines_run_without_tf_data_autotuning(build: Any) -> None:
    """With autotuning on, deleting an iterator that a `tf.function` consumed waited out the tuning
    loop's sleep: 3 s of an idle machine after every 6 s epoch of the benchmark CNN (harness's
    loop makes one iterator per epoch), longer for longer epochs."""
    x, y = np.ones((64, 2), np.float32), np.zeros(64, np.int64)
    options = build(x, y, 8, shuffle_seed=0).options()
    assert options.autotune.enabled is False
    assert options.experimental_optimization.apply_default_optimizations is False


def test_predict_batches_keep_the_order_and_the_last_short_batch() -> None:
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    batches = [b.numpy() for b in make_predict_dataset(x, 3)]
    assert [len(b) for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(batches), x)
    with pytest.raises(ValueError, match="batch_size"):
        make_predict_dataset(x, 0)


def test_in_memory_tensors_are_used_as_they_are() -> None:
    x, y = np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6)
    features, targets = in_memory(x, y)
    assert in_memory(features, targets)[0] is features  # no second copy per epoch
    batches = list(make_step_dataset(features, targets, 2, shuffle_seed=1))
    assert sorted(np.concatenate([b[1].numpy() for b in batches]).tolist()) == list(range(6))


# --- unnamed index columns (pandas to_csv, R write.csv) -------------------------------------------


def sorted_csv_with_index(path: Path, header: str, start: int, quoted: bool = False) -> Path:
    """A file sorted by label with a leading index column: the index alone would predict the label."""
    q = '"' if quoted else ""
    lines = [f"{header},size,label"]
    for i in range(60):
        lines.append(f"{q}{i + start}{q},{(i * 7) % 11}.0,{'cat' if i < 30 else 'dog'}")
    return write(path, "\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("header", "start", "quoted"),
    [("", 0, False), ("Unnamed: 0", 0, False), ('""', 1, True)],
    ids=["pandas", "pandas-resaved", "R"],
)
def test_unnamed_index_column_is_left_out_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: str, start: int, quoted: bool
) -> None:
    path = sorted_csv_with_index(tmp_path / "sorted.csv", header, start, quoted)
    data = prepare_data(csv_config(path), seed=0)
    assert data.feature_names == ["size"]  # the index is not a feature
    assert "row index written by pandas or R" in data.notes["index_column_dropped"]
    err = capsys.readouterr().err
    assert f"note: CSV file {path}: left out the first column" in err and f"values {start}..{start + 59}" in err


def test_the_index_column_is_left_out_at_predict_time_too(tmp_path: Path) -> None:
    """A model trained on unnamed features reads CSV columns in file order: the index would shift them."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(60, 2)), y=np.arange(60) % 2)
    data = prepare_data(DataConfig(dataset="npz", path=str(tmp_path / "t.npz")), seed=0)
    rows = [",a,b", *(f"{i},{i}.0,{-i}.0" for i in range(5))]
    x = data.preprocessor.transform_file(write(tmp_path / "new.csv", "\n".join(rows) + "\n"))
    expected = data.preprocessor.transform(np.array([[i, -i] for i in range(5)], dtype=np.float64))
    np.testing.assert_allclose(x, expected)


@pytest.mark.parametrize(
    "first_column",
    [
        ("id", ["0", "1", "2", "3"]),  # named: the user chose to keep it
        ("", ["0", "5", "2", "3"]),  # not a row numbering
        ("", ["a", "b", "c", "d"]),  # text
        ("", ["0", "1", "NA", "3"]),  # a missing cell
    ],
)
def test_a_leading_column_that_is_not_an_unnamed_index_is_kept(
    tmp_path: Path, first_column: tuple[str, list[str]]
) -> None:
    header, values = first_column
    lines = [f"{header},x,label", *(f"{v},{i}.5,{i % 2}" for i, v in enumerate(values))]
    table = read_csv(write(tmp_path / "t.csv", "\n".join(lines) + "\n"))
    assert len(table.names) == 3 and table.dropped_index is None


def test_an_index_with_the_gaps_of_a_filtered_frame_is_an_index_too(tmp_path: Path) -> None:
    lines = [",x,label", *(f"{v},{i}.5,{i % 2}" for i, v in enumerate([3, 8, 9, 20]))]
    assert read_csv(write(tmp_path / "t.csv", "\n".join(lines) + "\n")).names == ["x", "label"]


# --- cells named for what they hold ------------------------------------------------------------


def test_messages_quote_what_a_missing_cell_holds(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b,y\n1,x,0\nNA,y,1\n3,,0\n4,n/a,1\n")
    table = read_csv(path)
    assert table.describe_cells("a", table.missing("a")) == "line 3: 'NA' (a missing-value marker)"
    described = table.describe_cells("b", table.missing("b"))
    assert described == "line 4: an empty cell, line 5: 'n/a' (a missing-value marker)"
    long = read_csv(write(tmp_path / "l.csv", "a,y\n" + "x" * 100 + ",0\n1,1\n"))
    assert "'" + "x" * 40 + "...'" in long.describe_cells("a", np.array([True, False]))


def test_a_column_missing_in_every_training_row_names_the_texts_found(tmp_path: Path) -> None:
    lines = ["a,b,label", *(f"{i},{'NA' if i % 3 else ''},{'cat' if i % 2 else 'dog'}" for i in range(30))]
    path = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        prepare_data(csv_config(path, missing="mean"), seed=0)
    message = str(err.value)
    assert "column 'b'" in message and "'NA' (a missing-value marker) in" in message
    assert "an empty cell in" in message and "an empty cell in 1 rows" not in message
