"""Data fitted to the model's input shape, and data.image_size for array images."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from harness import cli
from harness.config.schema import DataConfig
from harness.data import Preprocessor, fit_data_to_model, prepare_data
from harness.data import images as images_module
from harness.data.images import resize_images
from harness.errors import DataError
from harness.shapes import ShapeFit, match_shapes, mismatch_fixes, mismatch_message

# --- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "model", "kind"),
    [
        ((28, 28, 1), (28, 28, 1), "same"),
        ((28, 28, 1), (None, None, 1), "same"),
        ((28, 28), (28, 28, 1), "add_axis"),
        ((28, 28, 1), (28, 28), "drop_axis"),
        ((8,), (8, 1), "add_axis"),
        ((8, 1), (8,), "drop_axis"),
        ((16, 16, 1), (16, 16, 3), "gray_to_rgb"),
        ((16, 16, 1), (None, None, 3), "gray_to_rgb"),
    ],
)
def test_shapes_that_fit_after_an_adaptation(
    data: tuple[int, ...], model: tuple[int | None, ...], kind: str
) -> None:
    fit = match_shapes(data, model)
    assert fit is not None and fit.kind == kind
    batch = np.arange(2 * int(np.prod(data)), dtype=np.float32).reshape(2, *data)
    assert fit.apply(batch).shape == (2, *fit.model_shape)
    assert ShapeFit.from_dict(fit.to_dict()) == fit


@pytest.mark.parametrize(
    ("data", "model"),
    [((28, 28, 1), (10, 10)), ((28, 28, 3), (28, 28, 1)), ((28, 28, 3), (28, 28)), ((8,), (4, 2)), ((784,), (28, 28))],
)
def test_other_shapes_do_not_fit(data: tuple[int, ...], model: tuple[int, ...]) -> None:
    assert match_shapes(data, model) is None


def test_mismatch_message_shows_both_shapes_and_the_fixes_that_apply() -> None:
    message = mismatch_message("model 'm'", (28, 28, 1), (32, 32, 1))
    assert "(32, 32, 1)" in message and "(28, 28, 1)" in message
    assert "data.image_size=[32, 32]" in message and "keras.Input((28, 28, 1))" in message
    reshape = mismatch_fixes((784,), (28, 28))
    assert any("keras.layers.Reshape((28, 28))" in fix for fix in reshape)
    assert not any("image_size" in fix for fix in mismatch_fixes((13,), (28, 28)))


# --- adapting prepared data ----------------------------------------------------------------------


def npz_images(path: Path, n: int = 60, size: int = 12, channel: bool = False) -> Path:
    rng = np.random.default_rng(0)
    x = (rng.random((n, size, size)) * 255).astype(np.uint8)
    np.savez(path, x=x[..., None] if channel else x, y=np.arange(n) % 2)
    return path


def model_for(shape: tuple[int, ...]) -> keras.Model:
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])


def test_npz_images_without_channels_are_fitted_to_a_model_without_channels(tmp_path: Path) -> None:
    path = npz_images(tmp_path / "d.npz")
    data = prepare_data(DataConfig(dataset="npz", path=str(path)), seed=0)
    assert data.input_shape == (12, 12, 1)
    said: list[str] = []
    fitted = fit_data_to_model(data, model_for((12, 12)), said.append)
    assert fitted.x_train.shape[1:] == (12, 12) and fitted.input_shape == (12, 12)
    assert said == ["data (12, 12, 1) adapted to the model input (12, 12): the trailing axis of size 1 dropped"]
    assert fitted.notes["input_adapted"] == said[0]
    np.testing.assert_array_equal(fitted.x_train, data.x_train[..., 0])
    assert fit_data_to_model(fitted, model_for((12, 12)), said.append) is fitted and len(said) == 1


def test_the_adaptation_is_saved_so_predict_feeds_the_model_the_same_way(tmp_path: Path) -> None:
    path = npz_images(tmp_path / "d.npz")
    data = prepare_data(DataConfig(dataset="npz", path=str(path)), seed=0)
    fitted = fit_data_to_model(data, model_for((12, 12)))
    fitted.preprocessor.save(tmp_path / "pre.json")
    loaded = Preprocessor.load(tmp_path / "pre.json")
    x = loaded.transform_file(path)
    assert x.shape == (60, 12, 12)
    expected = fitted.preprocessor.transform(np.load(path)["x"])
    np.testing.assert_array_equal(x, expected)


def test_grayscale_images_are_repeated_for_a_three_channel_model(tmp_path: Path) -> None:
    data = prepare_data(DataConfig(dataset="digits"), seed=0)
    fitted = fit_data_to_model(data, model_for((8, 8, 3)))
    assert fitted.x_train.shape[1:] == (8, 8, 3)
    np.testing.assert_array_equal(fitted.x_train[..., 2], data.x_train[..., 0])
    assert fitted.preprocessor.transform(np.zeros((1, 8, 8))).shape == (1, 8, 8, 3)


def test_a_tabular_row_fits_a_model_taking_n_by_1() -> None:
    data = prepare_data(DataConfig(dataset="iris"), seed=0)
    fitted = fit_data_to_model(data, model_for((4, 1)))
    assert fitted.x_val.shape[1:] == (4, 1)


# --- data.image_size for array images ------------------------------------------------------------


def test_image_size_resizes_npz_images_and_predict_resizes_the_same_way(tmp_path: Path) -> None:
    path = npz_images(tmp_path / "d.npz")
    data = prepare_data(DataConfig(dataset="npz", path=str(path), image_size=(20, 16)), seed=0)
    assert data.input_shape == (20, 16, 1) and data.x_train.dtype == np.float32
    assert data.notes["resized"] == {"from": [12, 12], "to": [20, 16], "by": "data.image_size, bilinear"}
    data.preprocessor.save(tmp_path / "pre.json")
    loaded = Preprocessor.load(tmp_path / "pre.json")
    assert loaded.resize == (20, 16)
    assert loaded.transform_file(path).shape == (60, 20, 16, 1)


def test_image_size_resizes_built_in_images() -> None:
    data = prepare_data(DataConfig(dataset="digits", image_size=(32, 32)), seed=0)
    assert data.input_shape == (32, 32, 1)
    synthetic = prepare_data(
        DataConfig.model_validate(
            {
                "dataset": "synthetic_images",
                "image_size": [16, 16],
                "synthetic": {"samples": 64, "image_shape": [8, 8, 3]},
            }
        ),
        seed=0,
    )
    assert synthetic.input_shape == (16, 16, 3)


def test_image_size_on_data_that_is_not_images_is_refused() -> None:
    with pytest.raises(DataError) as err:
        prepare_data(DataConfig(dataset="iris", image_size=(32, 32)), seed=0)
    message = str(err.value)
    assert "data.image_size=[32, 32]" in message and "iris" in message and "shape (4,)" in message


def test_resizing_in_chunks_gives_the_same_images(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).random((10, 9, 7, 2)).astype(np.float32)
    whole = resize_images(x, (15, 5))
    monkeypatch.setattr(images_module, "RESIZE_CHUNK_BYTES", 9 * 7 * 2 * 4 * 3)  # 3 images per chunk
    np.testing.assert_allclose(resize_images(x, (15, 5)), whole, rtol=1e-6)
    assert whole.shape == (10, 15, 5, 2) and resize_images(x, (9, 7)) is x


def test_image_folders_still_default_to_64_by_64() -> None:
    assert images_module.FOLDER_IMAGE_SIZE == (64, 64) and DataConfig().image_size is None


def test_an_application_too_small_for_the_images_suggests_image_size() -> None:
    from harness.config.schema import ModelConfig
    from harness.errors import ModelError
    from harness.models.applications import build_application

    with pytest.raises(ModelError, match=r"at least 32x32.*Fix: set data.image_size"):
        build_application(ModelConfig(), "ResNet50", input_shape=(12, 12, 1), num_outputs=2, task="classification")


# --- end to end ----------------------------------------------------------------------------------

BUILDERS = """
import keras


def flat_images(num_outputs):
    return keras.Sequential(
        [keras.Input((12, 12)), keras.layers.Flatten(), keras.layers.Dense(num_outputs, activation="softmax")]
    )


def rgb_32(num_outputs):
    return keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(num_outputs, activation="softmax")]
    )
"""


@pytest.fixture
def builders(workdir: Path) -> Iterator[str]:
    name = f"shape_builders_{uuid.uuid4().hex[:8]}"
    (workdir / f"{name}.py").write_text(BUILDERS)
    yield name
    sys.modules.pop(name, None)


FAST = ["training.epochs=1", "training.progress=lines", "training.batch_size=16"]


def test_npz_28x28_style_images_train_a_model_without_a_channel_axis_and_predict(
    workdir: Path, builders: str, capsys: pytest.CaptureFixture[str]
) -> None:
    npz_images(workdir / "d.npz")
    code = cli.main(["train", *FAST, "data.dataset=npz", "data.path=d.npz", f"model.name={builders}:flat_images"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "data (12, 12, 1) adapted to the model input (12, 12): the trailing axis of size 1 dropped" in out
    run = next((workdir / "runs").iterdir())
    assert cli.main(["predict", str(run), "d.npz", "-o", "p.csv"]) == 0
    assert len((workdir / "p.csv").read_text().splitlines()) == 61


def test_image_size_and_channels_fit_an_rgb_model(
    workdir: Path, builders: str, capsys: pytest.CaptureFixture[str]
) -> None:
    npz_images(workdir / "d.npz", channel=True)
    args = ["data.dataset=npz", "data.path=d.npz", "data.image_size=[32,32]", f"model.name={builders}:rgb_32"]
    code = cli.main(["train", *FAST, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "data (32, 32, 1) adapted to the model input (32, 32, 3): the grayscale channel repeated" in out
