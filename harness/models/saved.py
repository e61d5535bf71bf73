"""A path ending in `.keras`: continue from a saved model (fine-tuning).

When the saved model ends in a different number of outputs than the new data needs, its last
layer is replaced by a fresh task head on the features feeding it, so a model trained on one label
set can be fine-tuned on another. `build_model` records that, and `describe_model` reports it.

A model saved compiled keeps its loss and optimizer for training (`train/objectives.py`), unless
its head is replaced: the new head is the harness's, so the loss is chosen for it.

A file that Keras cannot load is explained from its config.json: Lambda layers wrapping a Python
lambda (which Keras's safe mode refuses) and custom objects that are not registered are named,
because Keras's own error often names only the enclosing model.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

from harness.errors import ModelError
from harness.models.base import Task, check_input_fits, output_layer, output_size, unique_name

SUFFIX = ".keras"
REQUIRED_MEMBER = "config.json"
"""Every .keras archive holds the model's config; without it there is no model to build."""

MESSAGE_CHARS = 300
"""Errors from Keras are quoted up to this many characters: some echo a whole config."""

KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")
"""Packages whose objects Keras finds by itself; any other object in a config must be registered."""

REGISTER = "@keras.saving.register_keras_serializable(package=...)"


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
        raise ModelError(_saved_load_error(path, err)) from None
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


def _saved_load_error(path: Path, err: Exception) -> str:
    """Why a `model.name: FILE.keras` does not load, and what to do instead."""
    where = f"model file {str(path)!r}"
    lambdas, unknown = load_obstacles(path)
    if lambdas:
        return (
            f"{where} cannot be loaded: {lambda_text(lambdas)}. Rebuild the model with a layer subclass, or a "
            f"Lambda over a named function, registered with {REGISTER} and save it again (a run trained "
            "from it could not be loaded by harness predict or evaluate either)"
        )
    if unknown:
        return (
            f"{where} cannot be loaded: it uses custom objects Keras does not know: {', '.join(unknown)}. "
            "A .keras file cannot import the code that defines them: name a function instead, "
            "model.name: module:function, whose module defines or imports them (each registered with "
            f"{REGISTER}, a class also with get_config) and which returns keras.saving.load_model(path). "
            f"Keras: {quote_error(err)}"
        )
    return f"{where} is a Keras model file but cannot be loaded: {quote_error(err)}"


def quote_error(err: BaseException) -> str:
    """`Type: message`, cut to MESSAGE_CHARS."""
    text = str(err)
    text = text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."
    return f"{type(err).__name__}: {text}"


def lambda_text(layers: list[str]) -> str:
    """The plain reason a model with Python lambdas cannot be loaded."""
    names = ", ".join(repr(name) for name in layers)
    return (
        f"its Lambda layer{'s' if len(layers) > 1 else ''} {names} wrap{'' if len(layers) > 1 else 's'} a Python "
        "lambda, which cannot be loaded safely: Keras refuses it (safe mode), since loading it would run code "
        "stored in the file"
    )


def load_obstacles(path: Path) -> tuple[list[str], list[str]]:
    """What in a .keras file's model config keeps Keras from loading it (compile state aside).

    Returns the names of Lambda layers that wrap a Python lambda, and the custom objects whose
    name is not registered in this process (`Scale (module 'models')`). Both are empty when the
    config cannot be read: the caller then quotes Keras's error alone.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(REQUIRED_MEMBER))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return [], []
    lambdas: list[str] = []
    unknown: list[str] = []
    for item in _objects(config):
        function = item.get("config", {}).get("function") if isinstance(item.get("config"), dict) else None
        if item.get("class_name") == "Lambda" and isinstance(function, dict):
            if function.get("class_name") == "__lambda__":
                lambdas.append(str(item["config"].get("name", "lambda")))
        label = _unregistered(item)
        if label and label not in unknown:
            unknown.append(label)
    return lambdas, unknown


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object in a Keras config, outside the compile state (not loaded here)."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for key, value in node.items():
            if key != "compile_config":
                yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _unregistered(item: dict[str, Any]) -> str | None:
    """`Scale (module 'models')` for a user object Keras cannot find in its registry, else None."""
    module, class_name = item.get("module"), item.get("class_name")
    if not isinstance(module, str) or not isinstance(class_name, str):
        return None
    if module.split(".", 1)[0] in KERAS_PACKAGES:
        return None
    registered = item.get("registered_name")
    is_function = class_name == "function"
    plain = str(item.get("config")) if is_function else class_name
    key = registered if isinstance(registered, str) and registered != "function" else plain
    if keras.saving.get_registered_object(key) is not None:
        return None
    label = f"function {plain!r}" if is_function else plain
    return label if module == "builtins" else f"{label} (module {module!r})"


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
