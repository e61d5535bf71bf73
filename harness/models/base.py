"""Pieces every model source shares: the task head, request checks and shape checks.

Every model the harness hands to training ends in the same kind of head, so the loss can be chosen
from the task alone: softmax class probabilities for classification (also for two classes, so labels
are always class indices) and a linear layer for regression. The head is float32 even under a mixed
precision policy, because softmax and losses in float16 lose too much precision.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import keras

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.shapes import match_shapes, mismatch_message

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")

_LOSSES: dict[Task, str] = {
    "classification": "sparse_categorical_crossentropy",
    "regression": "mean_squared_error",
}
_OUTPUT_ACTIVATIONS: dict[Task, str] = {"classification": "softmax", "regression": "linear"}


class ModelBuilder(Protocol):
    """What a registered model is: the config plus the three values the data decides.

    A user's `pkg.module:function` is not bound to this: it receives the subset of
    `input_shape`, `num_outputs`, `task` and `model.kwargs` its signature names (imported.py).
    """

    def __call__(
        self, cfg: ModelConfig, *, input_shape: tuple[int, ...], num_outputs: int, task: Task
    ) -> keras.Model: ...


def check_task(task: str) -> Task:
    """Return `task` typed, or raise; callers pass strings from data code."""
    if task not in TASKS:
        raise ModelError(f"`task` must be one of {', '.join(TASKS)}. Received: task={task!r}")
    return task


def default_loss(task: str) -> str:
    """The Keras loss name matching the head that `build_model` puts on every model."""
    return _LOSSES[check_task(task)]


def check_request(input_shape: Sequence[int], num_outputs: int, task: str) -> tuple[tuple[int, ...], Task]:
    """Validate what the data side asks for before any layer is created."""
    checked_task = check_task(task)
    shape = tuple(input_shape)
    if not shape or not all(_is_positive_int(dim) for dim in shape):
        raise ModelError(
            "`input_shape` must be a non-empty tuple of positive integers (without the batch "
            f"dimension). Received: input_shape={shape!r}"
        )
    minimum = 2 if checked_task == "classification" else 1
    if not _is_positive_int(num_outputs) or int(num_outputs) < minimum:
        raise ModelError(
            f"`num_outputs` must be an integer >= {minimum} for {checked_task}. "
            f"Received: num_outputs={num_outputs!r}"
        )
    return tuple(int(dim) for dim in shape), checked_task


def _is_positive_int(value: Any) -> bool:
    """True for ints and NumPy integers above zero, but not for bools."""
    return hasattr(value, "__index__") and not isinstance(value, bool) and int(value) > 0


def check_activation(name: str) -> str:
    """Fail at build time with the config key, not deep inside a layer constructor."""
    try:
        keras.activations.get(name)
    except (ValueError, TypeError) as err:
        raise ModelError(
            "`model.activation` must be a Keras activation name such as relu, gelu, swish or "
            f"tanh. Received: activation={name!r}"
        ) from err
    return name


def check_no_kwargs(cfg: ModelConfig, allowed: Sequence[str] = ()) -> None:
    """Registered builders take only known extra arguments, so a typo is not silently ignored."""
    unknown = sorted(set(cfg.kwargs) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "none"
        raise ModelError(
            f"`model.kwargs` has keys the {cfg.name!r} model does not take. Allowed: {takes}. "
            f"Received: kwargs={cfg.kwargs!r}"
        )


def output_layer(num_outputs: int, task: Task, name: str = "output") -> keras.layers.Dense:
    """The task's output layer, float32 whatever the global dtype policy."""
    return keras.layers.Dense(num_outputs, activation=_OUTPUT_ACTIVATIONS[task], dtype="float32", name=name)


BN_MOMENTUM = 0.9


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """BatchNorm whose statistics are those of the global batch, catching up within an epoch or two.

    With several replicas each would otherwise normalise by the moments of its own share of the
    batch, so 2 workers x 16 would train another model than 1 process x 32. Under a tf.distribute
    strategy Keras's `synchronized=True` all-reduces the moments; under Horovod (no tf.distribute
    replica context) the moments are all-reduced with Horovod. With one replica nothing is
    synchronised: it would only cost time. The saved model holds a plain BatchNormalization.

    Keras's default momentum (0.99) averages over ~100 steps; on small data sets (a few dozen
    steps per epoch) the inference-time statistics then lag the fast-changing activations and
    validation accuracy sits at chance for many epochs while training accuracy is high.
    """
    layer = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)
    synchronise_batch_norm([layer])
    return layer


def synchronise_batch_norm(layers: Sequence[keras.layers.Layer]) -> int:
    """Make the BatchNormalization layers among `layers` use global-batch moments; returns how many.

    Nothing changes with one replica. Keras reads `synchronized` when the layer is called, so
    layers of an already built model (a keras.applications backbone) can be switched too.
    """
    sync = replica_sync()
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    if sync is None:
        return 0
    for layer in norms:
        if sync == "tf":
            layer.synchronized = True
        else:
            average_moments_with_horovod(layer, sys.modules["horovod.tensorflow"])
    return len(norms)


def replica_sync() -> Literal["tf", "horovod"] | None:
    """How replicas share batch statistics for a model built now (inside the strategy's scope).

    "tf" inside a tf.distribute strategy with several replicas, "horovod" once Horovod runs
    several ranks (its strategy has no scope: the initialised library is the sign), else None.
    """
    import tensorflow as tf

    if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return "tf"
    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is not None and hvd.is_initialized() and hvd.size() > 1:
        return "horovod"
    return None


def average_moments_with_horovod(layer: keras.layers.BatchNormalization, hvd: Any) -> None:
    """Make `layer` normalise by the moments of the batch over all Horovod ranks.

    Keras's synchronised BatchNormalization all-reduces through the tf.distribute replica
    context, which Horovod does not have. This replaces the layer's moment computation on this
    instance only, so the layer's class, config and saved form stay plain BatchNormalization.
    One all-reduce of (sum, sum of squares, count) per layer and step; Horovod's all-reduce has
    a gradient (the all-reduce of the gradient), so backpropagation through the shared moments
    is exact, as with one process.
    """
    import tensorflow as tf

    own = layer._moments

    def moments(inputs: Any, mask: Any) -> tuple[Any, Any]:
        if mask is not None:
            return own(inputs, mask)  # type: ignore[no-any-return]
        axes = layer._reduction_axes
        x = tf.cast(inputs, tf.float32)
        sums = [tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes), tf.reduce_sum(tf.ones_like(x), axes)]
        total = hvd.allreduce(tf.stack(sums), op=hvd.Sum)
        mean = tf.math.divide_no_nan(total[0], total[2])
        variance = tf.maximum(tf.math.divide_no_nan(total[1], total[2]) - tf.square(mean), 0.0)
        return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)

    layer._moments = moments


def dense_block(x: Any, units: int, index: int, cfg: ModelConfig) -> Any:
    """Dense -> optional BatchNorm -> activation -> optional dropout; bias is redundant before BN."""
    prefix = f"dense{index}"
    x = keras.layers.Dense(units, use_bias=not cfg.batch_norm, name=prefix)(x)
    if cfg.batch_norm:
        x = batch_norm(f"{prefix}_bn")(x)
    x = keras.layers.Activation(cfg.activation, name=f"{prefix}_act")(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name=f"{prefix}_dropout")(x)
    return x


def task_head(features: Any, cfg: ModelConfig, num_outputs: int, task: Task) -> Any:
    """Hidden dense layers from `cfg.hidden_units`, then the output layer.

    Without hidden layers the dropout (if any) sits directly before the output, so `model.dropout`
    always has an effect.
    """
    x = features
    for index, units in enumerate(cfg.hidden_units, start=1):
        x = dense_block(x, units, index, cfg)
    if not cfg.hidden_units and cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    return output_layer(num_outputs, task)(x)


def single_input_shape(model: keras.Model, source: str) -> tuple[int | None, ...]:
    """The per-example input shape of a one-input model; other models cannot take our data."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError) as err:
        raise ModelError(
            f"{source} must be a built model with known inputs (use keras.Input with the Functional "
            "API or a Sequential model starting with keras.Input)"
        ) from err
    if not inputs or len(inputs) != 1:
        count = len(inputs) if inputs else 0
        raise ModelError(f"{source} must have exactly one input. Received: {count} inputs")
    return tuple(inputs[0].shape[1:])


def check_input_fits(model: keras.Model, input_shape: tuple[int, ...], source: str, hint: str = "") -> None:
    """Raise unless the model accepts examples of `input_shape` (None matches any size).

    Shapes that `harness.shapes.match_shapes` can adapt (a trailing axis of size 1, grayscale to
    3 channels) are accepted: the data is adapted to the model once it is built. The message
    shows both per-example shapes and how to fix it: `hint` when the caller knows better (a
    builder that could take `input_shape`), then the data or model changes that apply.
    """
    expected = single_input_shape(model, source)
    if match_shapes(input_shape, expected) is None:
        raise ModelError(mismatch_message(source, input_shape, expected, hint))


def output_size(model: keras.Model) -> int | None:
    """Size of the model's output (batch, size), or None when it has no such single output."""
    if output_problem(model) is not None:
        return None
    size = model.outputs[0].shape[-1]
    return int(size) if size is not None else None


def output_problem(model: keras.Model) -> str | None:
    """What keeps the model's outputs from being one tensor of shape (batch, size), or None.

    The loss, the metrics and the predictions file take one row of scores per example: several
    outputs, a dict of outputs (one is still a structure the labels do not have) or an output
    with more axes per example would only fail inside training.
    """
    outputs = model.outputs or []
    structure = getattr(model, "output", None)  # a Sequential model has none: it is one tensor
    if isinstance(structure, dict):
        shapes = ", ".join(f"{key!r}: {tuple(value.shape)}" for key, value in structure.items())
        return f"a dict of outputs {{{shapes}}}"
    if len(outputs) != 1:
        return f"{len(outputs)} outputs {output_shapes(model)}" if outputs else "no outputs"
    shape = tuple(outputs[0].shape)
    if len(shape) != 2:
        return f"output shape {shape}, {len(shape) - 1} axes per example instead of 1"
    return None


def output_shapes(model: keras.Model) -> list[tuple[int | None, ...]]:
    return [tuple(output.shape) for output in model.outputs or []]


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, `base_3`, ... so a new layer never clashes inside a loaded model."""
    if base not in taken:
        return base
    index = 2
    while f"{base}_{index}" in taken:
        index += 1
    return f"{base}_{index}"
