"""Model building: every source form, the task head, freezing, and the errors users see."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.models import MODELS, build_model, default_loss, describe_model

TINY = {"hidden_units": [8], "filters": [4, 8], "blocks_per_stage": [1, 1], "width": 4}


def tiny(**overrides: Any) -> ModelConfig:
    """A config small enough that building and saving takes milliseconds."""
    return ModelConfig(**{**TINY, **overrides})


def build(
    cfg: ModelConfig, shape: tuple[int, ...] = (8, 8, 1), outputs: int = 3, task: str = "classification"
) -> keras.Model:
    return build_model(cfg, input_shape=shape, num_outputs=outputs, task=task)


def non_input_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


@pytest.fixture
def mixed_precision() -> Iterator[None]:
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a module with a unique name into tmp_path, importable for this test only."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"user_models_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


# --- registered models -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("mlp", (6,)),
        ("mlp", (8, 8, 1)),
        ("cnn", (8, 8, 1)),
        ("cnn", (32, 32, 3)),
        ("resnet", (8, 8, 1)),
        ("resnet", (32, 32, 3)),
    ],
)
@pytest.mark.parametrize(("task", "activation"), [("classification", "softmax"), ("regression", "linear")])
def test_registered_model_has_task_head(
    name: str, shape: tuple[int, ...], task: str, activation: str
) -> None:
    model = build(tiny(name=name), shape, outputs=4, task=task)
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, 4)
    assert model.layers[-1].activation.__name__ == activation
    assert MODELS.names() == ["cnn", "mlp", "resnet"]


def test_output_stays_float32_under_mixed_precision(mixed_precision: None) -> None:
    model = build(tiny(name="cnn"))
    assert model.get_layer("block1_conv").compute_dtype == "float16"
    assert model.output.dtype == "float32"


def test_cnn_skips_pooling_once_image_is_2x2() -> None:
    model = build(tiny(name="cnn", filters=[4, 4, 4]), (8, 8, 1))
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [layer.name for layer in pools] == ["block1_pool", "block2_pool"]


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_image_models_reject_tabular_input(name: str) -> None:
    with pytest.raises(ModelError, match=r"needs image input.*\(20,\).*mlp"):
        build(tiny(name=name), (20,))


def test_unknown_name_lists_registered_models() -> None:
    with pytest.raises(ModelError, match=r"'cnnn'.*Did you mean 'cnn'\?.*Known: cnn, mlp, resnet"):
        build(tiny(name="cnnn"))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"activation": "relux"}, r"activation='relux'"),
        ({"kwargs": {"pooling": "max"}}, r"pooling='max'"),
        ({"kwargs": {"depth": 3}}, r"Allowed: pooling"),
    ],
)
def test_bad_builder_settings_name_the_value(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build(tiny(name="cnn", **overrides))


@pytest.mark.parametrize(
    ("shape", "outputs", "task", "match"),
    [
        ((8, 8, 1), 1, "classification", "num_outputs=1"),
        ((), 3, "classification", "input_shape=()"),
        ((8, 8, 1), 3, "ranking", "task='ranking'"),
    ],
)
def test_bad_request_is_rejected(shape: tuple[int, ...], outputs: int, task: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build(tiny(), shape, outputs, task)


# --- import paths ------------------------------------------------------------------------------

GOOD_MODULE = """
import keras

def small(input_shape, num_outputs, task, units=4):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(units, name="hidden")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(x), name="small")

def not_a_model(input_shape, num_outputs, task):
    return "model"

def two_outputs(input_shape, num_outputs, task):
    return small(input_shape, 2, task)
"""


def test_import_path_builds_user_model(user_module: Callable[[str], str]) -> None:
    path = f"{user_module(GOOD_MODULE)}:small"
    cfg = tiny(name=path, kwargs={"units": 5})
    model = build(cfg, (6,), outputs=3)
    assert model.get_layer("hidden").units == 5
    assert model.output_shape == (None, 3)
    assert describe_model(model, cfg)["source"] == "import"


@pytest.mark.parametrize(
    ("source", "attr", "match"),
    [
        ("def broken(:\n", "small", "does not import: SyntaxError"),
        (GOOD_MODULE, "missing", "has no attribute 'missing'"),
        (GOOD_MODULE, "not_a_model", "must return a keras.Model. Received: str"),
    ],
)
def test_import_path_errors_name_the_path(
    user_module: Callable[[str], str], source: str, attr: str, match: str
) -> None:
    path = f"{user_module(source)}:{attr}"
    with pytest.raises(ModelError, match=match) as info:
        build(tiny(name=path), (6,))
    assert path.split(":")[0] in str(info.value)


def test_import_path_of_missing_module() -> None:
    with pytest.raises(ModelError, match=r"no_such_pkg\.models.*ModuleNotFoundError"):
        build(tiny(name="no_such_pkg.models:build"))


def test_import_path_with_wrong_output_size(user_module: Callable[[str], str]) -> None:
    path = f"{user_module(GOOD_MODULE)}:two_outputs"
    with pytest.raises(ModelError, match=r"must end in 3 outputs.*\(None, 2\)"):
        build(tiny(name=path), (6,), outputs=3)


# --- .keras files ------------------------------------------------------------------------------


@pytest.fixture
def saved_cnn(tmp_path: Path) -> tuple[Path, keras.Model]:
    model = build(tiny(name="cnn"), (8, 8, 1), outputs=3)
    path = tmp_path / "cnn.keras"
    model.save(path)
    return path, model


def test_keras_file_round_trip_keeps_weights(saved_cnn: tuple[Path, keras.Model]) -> None:
    path, original = saved_cnn
    cfg = tiny(name=str(path))
    loaded = build(cfg, (8, 8, 1), outputs=3)
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), original.predict(x, verbose=0), rtol=1e-5)
    assert describe_model(loaded, cfg)["head_replaced"] is False


def test_keras_file_with_other_outputs_gets_new_head(saved_cnn: tuple[Path, keras.Model]) -> None:
    path, original = saved_cnn
    cfg = tiny(name=str(path))
    model = build(cfg, (8, 8, 1), outputs=5, task="regression")
    assert model.output_shape == (None, 5)
    assert model.layers[-1].activation.__name__ == "linear"
    np.testing.assert_array_equal(
        model.get_layer("block1_conv").kernel.numpy(), original.get_layer("block1_conv").kernel.numpy()
    )
    assert describe_model(model, cfg)["head_replaced"] is True


def test_keras_file_with_other_input_shape_shows_both(saved_cnn: tuple[Path, keras.Model]) -> None:
    path, _ = saved_cnn
    with pytest.raises(ModelError, match=r"\(8, 8, 1\).*\(16, 16, 1\)"):
        build(tiny(name=str(path)), (16, 16, 1))


def test_text_file_named_keras_is_not_reported_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "x.keras"
    path.write_text("not a model")
    with pytest.raises(ModelError) as err:
        build(tiny(name=str(path)))
    message = str(err.value)
    assert "x.keras" in message and "exists (11 bytes)" in message and "not a zip archive" in message
    assert "not found" not in message.lower()


def test_truncated_keras_file_says_it_is_damaged(saved_cnn: tuple[Path, keras.Model]) -> None:
    path, _ = saved_cnn
    cut = path.with_name("cut.keras")
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError) as err:
        build(tiny(name=str(cut)), (8, 8, 1), outputs=3)
    message = str(err.value)
    assert "cut.keras" in message and "not a valid Keras model file" in message and "truncated" in message
    assert "not found" not in message.lower()


def test_zip_without_a_model_config_and_a_folder_are_named(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "weights_only.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(ModelError, match=r"weights_only\.keras.*zip archive.*no config\.json.*model\.weights\.h5"):
        build(tiny(name=str(path)))
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(ModelError, match=r"folder\.keras.*is a folder"):
        build(tiny(name=str(tmp_path / "folder.keras")))


def test_keras_file_that_keras_cannot_load_quotes_a_short_error(
    saved_cnn: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    import zipfile

    path, _ = saved_cnn
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        unknown_layer = b'{"class_name": "' + b"Nope" * 500 + b'"}'
        for item in source.infolist():
            target.writestr(item, unknown_layer if item.filename == "config.json" else source.read(item))
    with pytest.raises(ModelError) as err:
        build(tiny(name=str(broken)), (8, 8, 1), outputs=3)
    message = str(err.value)
    assert "broken.keras" in message and "cannot be loaded" in message and len(message) < 600


def test_missing_keras_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"absent\.keras.*does not exist"):
        build(tiny(name=str(tmp_path / "absent.keras")))


# --- freezing ----------------------------------------------------------------------------------


def test_freeze_first_layers_by_count() -> None:
    cfg = tiny(name="cnn", freeze=3)
    model = build(cfg)
    flags = [layer.trainable for layer in non_input_layers(model)]
    assert flags[:3] == [False, False, False]
    assert all(flags[3:])
    summary = describe_model(model, cfg)
    assert summary["frozen_layers"] == ["block1_conv", "block1_bn", "block1_act"]
    assert summary["trainable_parameters"] < summary["parameters"]


def test_freeze_layers_by_name() -> None:
    model = build(tiny(name="cnn", freeze=["block2_conv", "dense1"]))
    frozen = {layer.name for layer in non_input_layers(model) if not layer.trainable}
    assert frozen == {"block2_conv", "dense1"}


def test_freeze_unknown_layer_lists_layers() -> None:
    with pytest.raises(ModelError, match=r"'dense_1' \(did you mean 'dense1'\?\).*Layers: block1_conv, "):
        build(tiny(name="cnn", freeze=["dense_1"]))


def test_freeze_count_must_leave_a_trainable_layer() -> None:
    with pytest.raises(ModelError, match=r"freeze=99"):
        build(tiny(name="mlp", freeze=99), (6,))


# --- keras.applications -------------------------------------------------------------------------

MOBILENET = {"name": "applications.MobileNetV2", "kwargs": {"alpha": 0.35}}


def test_application_builds_without_download() -> None:
    cfg = tiny(**MOBILENET, freeze=5)
    model = build(cfg, (32, 32, 3), outputs=4)
    assert model.output_shape == (None, 4)
    assert not model.get_layer("Conv1").trainable
    assert describe_model(model, cfg)["source"] == "applications"


def test_application_loads_local_headless_weights(tmp_path: Path) -> None:
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg", alpha=0.35
    )
    path = tmp_path / "base.weights.h5"
    base.save_weights(path)
    model = build(tiny(**MOBILENET, weights=str(path)), (32, 32, 3))
    np.testing.assert_array_equal(
        model.get_layer("Conv1").kernel.numpy(), base.get_layer("Conv1").kernel.numpy()
    )


def test_application_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.weights.h5"
    with pytest.raises(ModelError, match=r"absent\.weights\.h5"):
        build(tiny(**MOBILENET, weights=str(missing)), (32, 32, 3))


def test_unknown_application_lists_close_names() -> None:
    with pytest.raises(ModelError, match=r"Did you mean applications\.MobileNetV2"):
        build(tiny(name="applications.MobileNetv2"), (32, 32, 3))


def test_application_refuses_download_kwargs() -> None:
    with pytest.raises(ModelError, match=r"must not set weights"):
        build(tiny(name="applications.MobileNetV2", kwargs={"weights": "imagenet"}), (32, 32, 3))


# --- loss and description ----------------------------------------------------------------------


def test_default_loss_follows_task() -> None:
    assert default_loss("classification") == "sparse_categorical_crossentropy"
    assert default_loss("regression") == "mean_squared_error"
    with pytest.raises(ModelError, match="task='ranking'"):
        default_loss("ranking")


def test_describe_model_is_json_and_counts_parameters() -> None:
    cfg = tiny(name="resnet")
    model = build(cfg, (8, 8, 1), outputs=3)
    summary = json.loads(json.dumps(describe_model(model, cfg)))
    assert summary["parameters"] == model.count_params()
    assert summary["trainable_parameters"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert summary["input_shape"] == [8, 8, 1]
    assert summary["output_shape"] == [3]
    assert summary["layers"] == len(non_input_layers(model))
    assert summary["name"] == "resnet"
