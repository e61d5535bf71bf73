"""A path ending in `.keras`: continue from a saved model (fine-tuning).

When the saved model ends in a different number of outputs than the new data needs, its last
layer is replaced by a fresh task head on the features feeding it, so a model trained on one label
set can be fine-tuned on another. `build_model` records that, and `describe_model` reports it.

A model saved compiled keeps its loss and optimizer for training (`train/objectives.py`), unless
its head is replaced: the new head is the harness's, so the loss is chosen for it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from harness.errors import ModelError
from harness.models.base import Task, check_input_fits, output_layer, output_size, unique_name

SUFFIX = ".keras"
REQUIRED_MEMBER = "config.json"
"""Every .keras archive holds the model's config; without it there is no model to build."""

MESSAGE_CHARS = 300
"""Errors from Keras are quoted up to this many characters: some echo a whole config."""


def is_keras_file(name: str) -> bool:
    return name.endswith(SUFFIX)


def load_saved(
    name: str, *, input_shape: tuple[int, ...], num_outputs: int, task: Task
) -> tuple[keras.Model, bool]:
    """Return the loaded model (with a new head when needed) and whether the head was replaced."""
    path = Path(name).expanduser()
    model = _load(path)
    check_input_fits(model, input_shape, f"model file {name!r}")
    if len(model.outputs) != 1:
        raise ModelError(
            f"model file {name!r} must have exactly one output. Received: {len(model.outputs)} outputs"
        )
    if output_size(model) == num_outputs:
        return model, False
    return replace_head(model, num_outputs, task, name), True


def check_keras_file(path: Path) -> None:
    """Say exactly what is wrong with a .keras path before Keras tries it.

    Keras reports a damaged or foreign file as "File not found", which sends people looking for
    a file that is right there; a .keras file is a zip archive holding config.json.
    """
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist")
    if path.is_dir():
        raise ModelError(f"model file {str(path)!r} is a folder; a saved Keras model is one .keras file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except PermissionError:
        raise ModelError(f"model file {str(path)!r} exists but cannot be read (permission denied)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelError(
            f"model file {str(path)!r} exists ({path.stat().st_size} bytes) but is not a valid Keras model "
            f"file: it is not a zip archive ({err}), which every .keras file is. It may be truncated (an "
            "interrupted copy or save) or another kind of file with a .keras name."
        ) from None
    if REQUIRED_MEMBER not in members:
        held = ", ".join(members[:10]) + (f" and {len(members) - 10} more" if len(members) > 10 else "")
        raise ModelError(
            f"model file {str(path)!r} is a zip archive but not a valid Keras model file: it has no "
            f"{REQUIRED_MEMBER}. It holds: {held or 'nothing'}"
        )


def _load(path: Path) -> keras.Model:
    check_keras_file(path)
    try:
        model = _load_compiled(path)
    except Exception as err:
        text = str(err)
        text = text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."
        raise ModelError(
            f"model file {str(path)!r} is a Keras model file but cannot be loaded: {type(err).__name__}: {text}"
        ) from None
    if not isinstance(model, keras.Model):
        raise ModelError(
            f"model file {str(path)!r} must hold a keras.Model. Received: {type(model).__name__}"
        )
    return model


def _load_compiled(path: Path) -> keras.Model:
    """The model with the loss and optimizer it was saved with, when they can be rebuilt.

    A compile state that cannot be restored (a custom loss not registered with Keras) does not
    stop fine-tuning: the model is loaded without it and the loss comes from the config.
    """
    try:
        return keras.saving.load_model(path, compile=True)
    except Exception:  # retried without compile state: the error that matters is the one below
        return keras.saving.load_model(path, compile=False)


def replace_head(model: keras.Model, num_outputs: int, task: Task, name: str) -> keras.Model:
    """Keep everything up to the last layer, put a new float32 task output on its input."""
    last = model.layers[-1]
    features = last.input
    if isinstance(features, (list, tuple)):
        raise ModelError(
            f"cannot replace the head of model file {name!r}: its last layer {last.name!r} takes "
            f"{len(features)} inputs; save a model that ends in a single Dense layer"
        )
    if len(features.shape) > 2:
        features = keras.layers.Flatten(name=unique_name("head_flatten", _layer_names(model)))(features)
    head = output_layer(num_outputs, task, name=unique_name("output", _layer_names(model)))
    return keras.Model(model.inputs, head(features), name=model.name)


def _layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}
