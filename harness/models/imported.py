"""`pkg.module:function`: a user's own builder, called with what it accepts.

The harness offers `input_shape` (one example, without the batch axis), `num_outputs` (classes,
or regression targets) and `task` ("classification" or "regression"), plus the `model.kwargs`
of the config. The function's signature decides what it receives: a zero-argument builder, as
Keras tutorials write them (`build_and_compile_cnn_model()`), gets nothing; one that names some
of the three gets those; one with `**kwargs` gets all three. Every `model.kwargs` key must be a
parameter of the function (or land in its `**kwargs`), so a typo is not silently ignored.

The function returns the whole `keras.Model`, head included, compiled or not: a compiled model
keeps its loss, optimizer and metrics (`build.compiled_setup` reads them). A model built without
`input_shape`/`num_outputs` does not know the data, so its input and output are checked against
the data after the call. The module is imported with the config file's folder and the working
directory importable (`harness.imports`). Every failure names the import path, because the
traceback of a config-driven import rarely says which config entry caused it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import keras

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.imports import import_object, importable, search_folders, user_location
from harness.models.base import Task, check_input_fits, output_problem, output_shapes, output_size
from harness.registry import closest

OFFERED = ("input_shape", "num_outputs", "task")


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
    """Call the user's function with what it accepts and check the result fits the data."""
    offered = {"input_shape": input_shape, "num_outputs": num_outputs, "task": task}
    with importable(search_folders()):  # the function may import more of the user's code when called
        function = resolve(path)
        arguments = builder_arguments(function, path, offered, cfg.kwargs)
        try:
            model = function(**arguments)
        except Exception as err:
            raise ModelError(
                f"model function {path!r} failed: {type(err).__name__}: {err}{user_location(err)}"
            ) from err
    if not isinstance(model, keras.Model):
        raise ModelError(
            f"model function {path!r} must return a keras.Model. Received: {type(model).__name__}"
        )
    check_fits_data(model, path, arguments, offered)
    return model


def builder_arguments(
    function: Callable[..., Any], path: str, offered: Mapping[str, Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The keyword arguments to call `function` with: the offered values it names, plus kwargs.

    Raises a ModelError naming the signature and what the harness offers when a required
    parameter cannot be supplied or a `model.kwargs` key is not accepted.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return {**offered, **kwargs}  # no signature to read (some C callables): offer everything
    parameters = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    by_name = {name for name, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    clash = sorted(set(kwargs) & set(offered))
    if clash:
        raise _mismatch(
            path, signature, offered, kwargs,
            f"model.kwargs must not set {', '.join(clash)}: the harness passes it from the data",
        )  # fmt: skip
    unknown = sorted(key for key in kwargs if key not in by_name and not takes_any)
    if unknown:
        named = [_with_hint(key, sorted(by_name - set(offered))) for key in unknown]
        raise _mismatch(
            path, signature, offered, kwargs,
            f"it does not accept model.kwargs {', '.join(named)}; remove "
            f"{'it' if len(unknown) == 1 else 'them'}, or add a parameter (or **kwargs) to the function",
        )  # fmt: skip
    arguments = {name: value for name, value in offered.items() if name in by_name or takes_any}
    arguments.update(kwargs)
    positional_only = [
        name for name, p in parameters.items() if p.kind is p.POSITIONAL_ONLY and p.default is p.empty
    ]
    if positional_only:
        raise _mismatch(
            path, signature, offered, kwargs,
            f"{', '.join(positional_only)} {'is' if len(positional_only) == 1 else 'are'} positional-only (before "
            "`/`), and the harness passes every value by name; remove the `/` from the signature",
        )  # fmt: skip
    missing = [
        name
        for name, p in parameters.items()
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in arguments
    ]
    if missing:
        raise _mismatch(
            path, signature, offered, kwargs,
            f"it requires {', '.join(missing)}, which the harness cannot supply; give "
            f"{'it a default' if len(missing) == 1 else 'them defaults'} or set "
            f"{', '.join(f'model.kwargs.{name}' for name in missing)}",
        )  # fmt: skip
    return arguments


def _with_hint(key: str, names: list[str]) -> str:
    hint = closest(key, names)
    return f"{key} (did you mean {hint}?)" if hint else key


def _mismatch(
    path: str, signature: inspect.Signature, offered: Mapping[str, Any], kwargs: Mapping[str, Any], problem: str
) -> ModelError:
    name = path.partition(":")[2]
    offers = ", ".join(f"{key}={value!r}" for key, value in offered.items())
    keys = ", ".join(kwargs) if kwargs else "none"
    return ModelError(
        f"model function {path!r} cannot be called: {problem}. Signature: {name}{signature}. "
        f"The harness offers {offers} (any subset, by name) and the model.kwargs keys: {keys}"
    )


def check_fits_data(
    model: keras.Model, path: str, arguments: Mapping[str, Any], offered: Mapping[str, Any]
) -> None:
    """The model's input and output must fit the data; the hint depends on what the builder took."""
    source = f"model {model.name!r} from {path!r}"
    input_hint = (
        "build the model for the data's shape (keras.Input(input_shape))"
        if "input_shape" in arguments
        else "let the function take `input_shape` and build the model with keras.Input(input_shape)"
    )
    check_input_fits(model, offered["input_shape"], source, hint=input_hint)
    num_outputs, task = offered["num_outputs"], offered["task"]
    what = f"{num_outputs} classes" if task == "classification" else f"{num_outputs} target(s)"
    problem = output_problem(model)
    if problem is not None:
        raise ModelError(
            f"{source} must have a single output of shape (batch, {num_outputs}), i.e. (None, {num_outputs}), "
            f"for this data ({task} with {what}). Received: {problem}. Fix: {_structure_hint(model)}"
        )
    if output_size(model) != num_outputs:
        takes = "num_outputs" in arguments
        hint = (
            f"end the model in Dense(num_outputs{', activation=...' if task == 'classification' else ''})"
            if takes
            else "let the function take `num_outputs` and end the model in Dense(num_outputs), "
            f"or make it end in {num_outputs} units"
        )
        raise ModelError(
            f"{source} must end in {num_outputs} outputs for this data ({task} with {what}). "
            f"Received: output shape {output_shapes(model)}. Fix: {hint}"
        )


def _structure_hint(model: keras.Model) -> str:
    if isinstance(getattr(model, "output", None), dict) or len(model.outputs or []) != 1:
        return "return a model with one output tensor, keras.Model(inputs, outputs), not a dict or several outputs"
    return (
        "make the last layer see one feature vector per example: put keras.layers.Flatten() or a global "
        "pooling layer (GlobalAveragePooling1D/2D) before the final Dense(num_outputs)"
    )
