"""`pkg.module:function`: a user's own builder, called like a registered model.

The function receives `input_shape`, `num_outputs`, `task` and `model.kwargs` and returns the whole
`keras.Model`, head included. Every failure names the import path, because the traceback of a
config-driven import rarely says which config entry caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.imports import import_object
from harness.models.base import Task, check_input_fits, output_size


def is_import_path(name: str) -> bool:
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr)


def resolve(path: str) -> Callable[..., Any]:
    """Import `pkg.module` and return its `function`; errors name the path and the cause."""
    try:
        function = import_object(path)
    except ImportError as err:
        raise ModelError(f"cannot build the model: {err}") from err
    if not callable(function):
        raise ModelError(f"model {path!r} must name a function. Received: {type(function).__name__}")
    return function  # type: ignore[no-any-return]


def build_imported(
    cfg: ModelConfig, path: str, *, input_shape: tuple[int, ...], num_outputs: int, task: Task
) -> keras.Model:
    """Call the user's function and check the result fits the data."""
    function = resolve(path)
    try:
        model = function(input_shape=input_shape, num_outputs=num_outputs, task=task, **cfg.kwargs)
    except Exception as err:
        raise ModelError(f"model function {path!r} failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, keras.Model):
        raise ModelError(
            f"model function {path!r} must return a keras.Model. Received: {type(model).__name__}"
        )
    source = f"model {model.name!r} from {path!r}"
    check_input_fits(model, input_shape, source)
    size = output_size(model)
    if size != num_outputs:
        raise ModelError(
            f"{source} must end in {num_outputs} outputs for this data ({task}). "
            f"Received: output shape {_output_shapes(model)}"
        )
    return model


def _output_shapes(model: keras.Model) -> list[tuple[int | None, ...]]:
    return [tuple(output.shape) for output in model.outputs]
