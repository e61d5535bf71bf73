"""`build_model`: turn `model.name` into a Keras model fitted to the data, and describe it.

The name's form picks the source, checked in this order:
a path ending in `.keras` (fine-tune a saved model), `applications.<Name>` (keras.applications
backbone), `pkg.module:function` (the user's builder), otherwise a registered name.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.models import applications, imported, saved
from harness.models.base import Task, check_request
from harness.models.builtin import MODELS
from harness.models.freeze import apply_freeze, freezable_layers

OTHER_FORMS = "applications.<Name>, 'pkg.module:function' or a path ending in .keras"


@dataclass(frozen=True)
class BuildNotes:
    """What `describe_model` cannot read off the model itself."""

    source: str
    head_replaced: bool
    frozen: tuple[str, ...]


_NOTES: weakref.WeakKeyDictionary[keras.Model, BuildNotes] = weakref.WeakKeyDictionary()


def build_model(
    cfg: ModelConfig, *, input_shape: tuple[int, ...], num_outputs: int, task: str
) -> keras.Model:
    """Build (or load) the model `cfg.name` describes, with the task head, then apply `cfg.freeze`.

    Set any mixed precision policy before calling: layers take the global policy when created,
    while the output layer is always float32.
    """
    shape, checked_task = check_request(input_shape, num_outputs, task)
    model, source, head_replaced = _dispatch(cfg, shape, num_outputs, checked_task)
    frozen = apply_freeze(model, cfg.freeze)
    _NOTES[model] = BuildNotes(source=source, head_replaced=head_replaced, frozen=tuple(frozen))
    return model


def _dispatch(
    cfg: ModelConfig, shape: tuple[int, ...], num_outputs: int, task: Task
) -> tuple[keras.Model, str, bool]:
    """Return the model, the kind of source it came from, and whether its head was replaced."""
    name = cfg.name
    if saved.is_keras_file(name):
        model, replaced = saved.load_saved(name, input_shape=shape, num_outputs=num_outputs, task=task)
        return model, "file", replaced
    if name.startswith(applications.PREFIX):
        app = name.removeprefix(applications.PREFIX)
        model = applications.build_application(
            cfg, app, input_shape=shape, num_outputs=num_outputs, task=task
        )
        return model, "applications", False
    if imported.is_import_path(name):
        model = imported.build_imported(cfg, name, input_shape=shape, num_outputs=num_outputs, task=task)
        return model, "import", False
    if name not in MODELS:
        raise ModelError(f"{MODELS.miss_message(name)} Other forms: {OTHER_FORMS}.")
    builder = MODELS.get(name)
    return builder(cfg, input_shape=shape, num_outputs=num_outputs, task=task), "registry", False


def describe_model(model: keras.Model, cfg: ModelConfig) -> dict[str, Any]:
    """A JSON-serialisable summary for run reports and model cards."""
    notes = _NOTES.get(model)
    trainable = _count(model.trainable_weights)
    parameters = int(model.count_params())
    return {
        "name": cfg.name,
        "keras_name": model.name,
        "source": notes.source if notes else "unknown",
        "parameters": parameters,
        "trainable_parameters": trainable,
        "non_trainable_parameters": parameters - trainable,
        "input_shape": _shape(model.inputs),
        "output_shape": _shape(model.outputs),
        "layers": len(freezable_layers(model)),
        "frozen_layers": list(notes.frozen) if notes else [],
        "head_replaced": notes.head_replaced if notes else False,
        "dtype_policy": model.dtype_policy.name,
    }


def _count(weights: Sequence[Any]) -> int:
    total = 0
    for weight in weights:
        size = 1
        for dim in weight.shape:
            size *= int(dim)
        total += size
    return total


def _shape(tensors: Sequence[Any]) -> list[int | None]:
    """Per-example shape of the (single) tensor; the batch axis is left out."""
    return [None if dim is None else int(dim) for dim in tensors[0].shape[1:]]
