"""`build_model`: turn `model.name` into a Keras model fitted to the data, and describe it.

The name's form picks the source, checked in this order:
a path ending in `.keras` (fine-tune a saved model), `applications.<Name>` (keras.applications
backbone), `pkg.module:function` (the user's builder), otherwise a registered name.

A model that comes compiled (a user builder that calls `model.compile`, or a saved model file)
keeps its compile state: `compiled_setup` reads the loss, optimizer and metrics it was compiled
with, which training uses unless the config sets its own (`harness.train.objectives`); the
report records them as `compiled_with`. `has_logits_head` tells whether a classification model
ends in logits rather than probabilities.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.imports import is_import_path
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
    if is_import_path(name):
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
        "compiled_with": _compiled_texts(model),
    }


def _compiled_texts(model: keras.Model) -> dict[str, Any] | None:
    """What the model came compiled with (the config may override it: see the report's training section)."""
    setup = compiled_setup(model)
    if setup is None:
        return None
    return {"loss": setup.loss_text, "optimizer": setup.optimizer_text, "metrics": list(setup.metrics_text)}


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


# ---- compiled models -------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSetup:
    """What a model was compiled with, as Keras objects, and how to print each.

    `loss` is a `keras.losses.Loss` or a loss function (a name given to `compile` is looked up),
    or None when `compile` set no loss; `optimizer` likewise. The texts read like the call that
    made them, e.g. "SparseCategoricalCrossentropy(from_logits=True)", "SGD(learning_rate=0.001)".
    """

    loss: Any | None
    optimizer: Any | None
    metrics: tuple[Any, ...]
    loss_text: str | None
    optimizer_text: str | None
    metrics_text: tuple[str, ...]

    def per_example_loss(self) -> Callable[[Any, Any], Any] | None:
        """The loss as a function returning one value per example (the training loop weighs them)."""
        loss = self.loss
        if loss is None or not isinstance(loss, keras.losses.Loss):
            return loss
        try:
            return type(loss).from_config({**loss.get_config(), "reduction": None})  # type: ignore[no-any-return]
        except Exception:  # a custom Loss whose config does not round-trip: `call` is per-example by contract
            return loss.call  # type: ignore[no-any-return]


def compiled_setup(model: keras.Model) -> CompiledSetup | None:
    """The compile state of `model`, or None if it was never compiled."""
    if not getattr(model, "compiled", False):
        return None
    given = getattr(getattr(model, "_compile_config", None), "config", None) or {}
    loss = _single(given.get("loss", getattr(model, "loss", None)), "loss", model)
    if isinstance(loss, str):
        loss = _keras_loss(loss, model)
    optimizer = getattr(model, "optimizer", None)
    metrics = _metric_list(given.get("metrics"))
    return CompiledSetup(
        loss=loss,
        optimizer=optimizer,
        metrics=metrics,
        loss_text=None if loss is None else describe_object(loss),
        optimizer_text=None if optimizer is None else describe_object(optimizer),
        metrics_text=tuple(describe_object(metric) for metric in metrics),
    )


def _single(value: Any, what: str, model: keras.Model) -> Any:
    """The one entry of a per-output list or dict: harness models have a single output."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ModelError(
                f"model {model.name!r} is compiled with {len(value)} {what}es for one output; "
                f"compile it with a single {what}"
            )
        return value[0]
    return value


def _keras_loss(name: str, model: keras.Model) -> Any:
    try:
        return keras.losses.get(name)
    except (ValueError, TypeError) as err:
        raise ModelError(f"model {model.name!r} is compiled with loss={name!r}, which Keras does not know") from err


def _metric_list(metrics: Any) -> tuple[Any, ...]:
    if metrics is None:
        return ()
    if isinstance(metrics, dict):
        return tuple(m for value in metrics.values() for m in (value if isinstance(value, (list, tuple)) else [value]))
    if isinstance(metrics, (list, tuple)):
        return tuple(metrics)
    return (metrics,)


# Config entries that say nothing about what the object computes.
_QUIET_KEYS = {"name", "dtype", "reduction"}


def describe_object(obj: Any) -> str:
    """A short text for a loss, optimizer or metric, as the call that would make it.

    Only arguments that differ from the class's defaults are shown, except an optimizer's
    learning rate, which is always shown.
    """
    if isinstance(obj, str):
        return obj
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return str(obj.__name__)
    config = _config(obj)
    defaults = _init_defaults(type(obj))
    parts = []
    for key, value in config.items():
        always = key == "learning_rate" and isinstance(obj, keras.optimizers.Optimizer)
        if key in _QUIET_KEYS or key not in defaults and not always:
            continue
        if always or not _same(value, defaults.get(key, inspect.Parameter.empty)):
            parts.append(f"{key}={_value_text(value)}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def _config(obj: Any) -> dict[str, Any]:
    try:
        config = obj.get_config()
    except Exception:  # objects without a usable config are described by their class alone
        return {}
    return config if isinstance(config, dict) else {}


def _init_defaults(cls: type) -> dict[str, Any]:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, float) and isinstance(default, (int, float)) and not isinstance(default, bool):
        return math.isclose(value, default, rel_tol=1e-6)
    return bool(value == default)


def _value_text(value: Any) -> str:
    """Floats as people wrote them (Keras stores 0.001 as float32: 0.0010000000474974513)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict) and "class_name" in value:
        return str(value["class_name"])  # a learning-rate schedule
    return repr(value)


# ---- logits ----------------------------------------------------------------------------------

PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")
# Layers that pass values through unchanged in meaning (shape or regularisation only).
_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Identity,
    keras.layers.GaussianNoise,
    keras.layers.ActivityRegularization,
)


def has_logits_head(model: keras.Model, task: str) -> bool:
    """True when a classification model outputs unnormalised scores (logits), not probabilities.

    The output is logits unless the last computing layer applies softmax or sigmoid (see
    `output_activation`). Regression models never have a logits head.
    """
    return task == "classification" and output_activation(model) not in PROBABILITY_ACTIVATIONS


def output_activation(model: keras.Model) -> str:
    """The activation the model's output passes through last: "softmax", "relu", ... or "linear".

    It is the last computing layer's own activation, or a separate Activation/Softmax layer;
    shape-only layers (Flatten, Reshape, Dropout, ...) and linear Activation layers in between are
    looked through, and a nested model is looked into.
    """
    step = _output_producer(model)
    while step is not None:
        layer, node_index = step
        if isinstance(layer, keras.Model):
            step = _output_producer(layer)
            continue
        if isinstance(layer, keras.layers.Softmax):
            return "softmax"
        activation = getattr(layer, "activation", None)
        linear_activation_layer = isinstance(layer, keras.layers.Activation) and _activation_name(activation) in (
            "linear",
            "",
        )
        if activation is not None and not linear_activation_layer:
            return _activation_name(activation) or "linear"
        if activation is None and not isinstance(layer, _PASS_THROUGH) and not linear_activation_layer:
            return "linear"  # a computing layer without an activation produces scores
        step = _input_producer(layer, node_index)
    return "linear"


def _activation_name(activation: Any) -> str:
    if activation is None:
        return ""
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", "")
    return str(name).lower()


def _producer(tensor: Any) -> tuple[Any, int] | None:
    """The layer (and its call's node index) that produced a symbolic tensor, or None at an input."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or isinstance(history.operation, keras.layers.InputLayer):
        return None
    return history.operation, history.node_index


def _output_producer(model: keras.Model) -> tuple[Any, int] | None:
    """The layer that produces the model's (single) output."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs and len(outputs) == 1:
        return _producer(outputs[0])
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return (layers[-1], 0) if layers else None


def _input_producer(layer: Any, node_index: int) -> tuple[Any, int] | None:
    """The layer feeding `layer`'s single input in the call `node_index`, or None."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if node_index >= len(nodes):
        return None
    tensors = nodes[node_index].input_tensors
    return _producer(tensors[0]) if len(tensors) == 1 else None
