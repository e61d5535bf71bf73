"""Models the harness cannot train or load, refused before training with what to change.

A builder's output must be one tensor of shape (batch, num_outputs); a `.keras` file that Keras
refuses (a Python lambda, an unregistered custom layer) is explained from its own config.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import pytest

from harness import cli
from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.imports import importable
from harness.models import build_model
from harness.models.base import output_problem, output_size

BUILDERS = """
import keras

def sequence_output(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    x = keras.layers.Reshape((16, 4))(keras.layers.Dense(64)(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(x))

def dict_output(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, {"cls": keras.layers.Dense(num_outputs, activation="softmax")(inputs)})

def two_outputs(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    head = keras.layers.Dense(num_outputs, activation="softmax")
    return keras.Model(inputs, [head(inputs), keras.layers.Dense(1)(inputs)])
"""


@pytest.fixture
def builders(tmp_path: Path) -> Iterator[str]:
    """A module of builders in tmp_path/code, importable for the test, forgotten afterwards."""
    name = f"structure_builders_{uuid.uuid4().hex[:8]}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{name}.py").write_text(textwrap.dedent(BUILDERS), encoding="utf-8")
    with importable([tmp_path / "code"]):
        yield name
    sys.modules.pop(name, None)


def build(name: str, shape: tuple[int, ...] = (4,), outputs: int = 3) -> keras.Model:
    return build_model(ModelConfig(name=name), input_shape=shape, num_outputs=outputs, task="classification")


@pytest.mark.parametrize(
    ("builder", "received", "fix"),
    [
        ("sequence_output", "output shape (None, 16, 3), 2 axes per example", "Flatten()"),
        ("dict_output", "a dict of outputs {'cls': (None, 3)}", "not a dict"),
        ("two_outputs", "2 outputs [(None, 3), (None, 1)]", "one output tensor"),
    ],
)
def test_an_output_that_is_not_one_batch_by_classes_tensor_is_refused(
    builders: str, builder: str, received: str, fix: str
) -> None:
    with pytest.raises(ModelError) as info:
        build(f"{builders}:{builder}")
    message = str(info.value)
    assert "must have a single output of shape (batch, 3), i.e. (None, 3)" in message
    assert f"Received: {received}" in message and fix in message


def test_output_size_is_only_for_one_row_of_scores_per_example() -> None:
    inputs = keras.Input((4,))
    flat = keras.layers.Dense(3)(inputs)
    sequence = keras.layers.Dense(3)(keras.layers.Reshape((2, 2))(inputs))
    assert output_size(keras.Model(inputs, flat)) == 3 and output_problem(keras.Model(inputs, [flat])) is None
    assert output_size(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])) == 3
    assert output_size(keras.Model(inputs, sequence)) is None
    assert output_size(keras.Model(inputs, {"cls": flat})) is None


def test_training_refuses_a_sequence_output_before_creating_the_run_directory(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = f"models_{uuid.uuid4().hex[:8]}"
    (workdir / f"{module}.py").write_text(textwrap.dedent(BUILDERS), encoding="utf-8")
    (workdir / "iris.yaml").write_text("run:\n  name: seq\ndata:\n  dataset: iris\n", encoding="utf-8")
    try:
        code = cli.main(["train", "iris.yaml", "training.progress=none", f"model.name={module}:sequence_output"])
    finally:
        sys.modules.pop(module, None)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "(None, 16, 3)" in err and "(batch, 3)" in err
    assert not (workdir / "runs" / "seq").exists()


# --- .keras files Keras refuses ---------------------------------------------------------------


class Unregistered(keras.layers.Layer):
    """A custom layer Keras has no registry entry for."""

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        return x


def saved(tmp_path: Path, layer: Callable[[], keras.layers.Layer]) -> Path:
    inputs = keras.Input((4,))
    x = layer()(inputs)
    path = tmp_path / "pretrained.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    return path


def test_a_saved_python_lambda_is_refused_as_unsafe(tmp_path: Path) -> None:
    path = saved(tmp_path, lambda: keras.layers.Lambda(lambda t: t * 2.0, name="doubled"))
    with pytest.raises(ModelError) as info:
        build(str(path))
    message = str(info.value)
    assert "Lambda layer 'doubled' wraps a Python lambda, which cannot be loaded safely" in message
    assert "layer subclass" in message and "Keras does not know" not in message


def test_a_saved_unregistered_layer_is_named_with_how_to_load_it(tmp_path: Path) -> None:
    path = saved(tmp_path, Unregistered)
    with pytest.raises(ModelError) as info:
        build(str(path))
    message = str(info.value)
    assert f"custom objects Keras does not know: Unregistered (module '{__name__}')" in message
    assert "model.name: module:function" in message and "keras.saving.load_model(path)" in message
