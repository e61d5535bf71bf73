"""Fit prepared data to a built model's input shape (the rule itself is `harness.shapes`).

The model is built for the data's shape, but a user's builder or saved model may take
(28, 28) where the harness prepared (28, 28, 1), or 3 channels where the data is grayscale.
Rather than refuse, the arrays are adapted once, and the adaptation is recorded in the
preprocessor so predict and evaluate feed the model the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from harness.data.memory import check_memory, inputs_bytes
from harness.data.prepared import PreparedData
from harness.shapes import match_shapes


def model_input_shape(model: Any) -> tuple[int | None, ...] | None:
    """The per-example input shape of a one-input model, or None when it has no single input."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])


def fit_data_to_model(
    data: PreparedData, model: Any, say: Callable[[str], None] | None = None
) -> PreparedData:
    """`data` with inputs shaped as `model` takes them; unchanged when they already fit.

    `say` receives one line for the run output when the data is adapted. Shapes that cannot
    be adapted are left alone: the model check (`harness.models.base.check_input_fits`) has
    already explained them. Calling it again on adapted data is a no-op.
    """
    expected = model_input_shape(model)
    fit = None if expected is None else match_shapes(data.input_shape, expected)
    if fit is None or fit.kind == "same":
        return data
    if fit.kind == "gray_to_rgb":
        check_memory(
            inputs_bytes(len(data.x_train) + len(data.x_val) + len(data.x_test), fit.model_shape),
            f"the images repeated into 3 channels for the model's input {fit.model_shape}",
            "Use a model that takes 1 channel, or smaller images (data.image_size).",
        )
    if say is not None:
        say(fit.describe())
    preprocessor = replace(data.preprocessor, model_input=fit)
    return replace(
        data,
        x_train=fit.apply(data.x_train),
        x_val=fit.apply(data.x_val),
        x_test=fit.apply(data.x_test),
        input_shape=fit.model_shape,
        preprocessor=preprocessor,
        notes={**data.notes, "input_adapted": fit.describe()},
    )
