"""Matching the data's per-example shape with a model's input shape.

One rule, used where the model is checked (harness.models) and where the data is adapted
(harness.data.adapt), so the check never accepts what the data side cannot adapt:

- equal shapes (a `None` in the model's shape matches any size) fit as they are;
- shapes that differ only by a trailing axis of size 1 fit after a reshape, which changes no
  value: images (28, 28) for a model taking (28, 28, 1), or the other way round, and a table
  row (n,) for a model taking (n, 1);
- grayscale images (h, w, 1) fit a model taking (h, w, 3) by repeating the channel, as
  ImageNet-style backbones are usually fed grayscale images.

Anything else is refused with both shapes and the fixes that apply (`mismatch_fixes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Shape = tuple[int | None, ...]
FitKind = Literal["same", "add_axis", "drop_axis", "gray_to_rgb"]


@dataclass(frozen=True)
class ShapeFit:
    """How examples of `data_shape` become examples of `model_shape` (the model's, `None`s resolved)."""

    kind: FitKind
    data_shape: tuple[int, ...]
    model_shape: tuple[int, ...]

    def describe(self) -> str:
        """One line for the run output, e.g. "data (28, 28, 1) -> model input (28, 28): ..."."""
        what = {
            "same": "no change",
            "add_axis": "a trailing axis of size 1 added",
            "drop_axis": "the trailing axis of size 1 dropped",
            "gray_to_rgb": "the grayscale channel repeated into 3 channels",
        }[self.kind]
        return f"data {self.data_shape} adapted to the model input {self.model_shape}: {what}"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A batch (n, *data_shape) as (n, *model_shape); reshapes are views, only channels copy."""
        if self.kind == "add_axis":
            return x[..., None]
        if self.kind == "drop_axis":
            return x[..., 0]
        if self.kind == "gray_to_rgb":
            return np.repeat(x, 3, axis=-1)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "data_shape": list(self.data_shape), "model_shape": list(self.model_shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapeFit:
        given = tuple(int(d) for d in data["data_shape"])
        fit = match_shapes(given, tuple(int(d) for d in data["model_shape"]))
        if fit is None or fit.kind != data["kind"]:
            raise ValueError(f"model input {data!r} is not an adaptation the harness makes")
        return fit


def _fits(data: tuple[int, ...], model: Shape) -> bool:
    return len(data) == len(model) and all(m is None or m == d for d, m in zip(data, model, strict=True))


def match_shapes(data_shape: tuple[int, ...], model_shape: Shape) -> ShapeFit | None:
    """The adaptation that makes `data_shape` examples fit `model_shape`, or None if there is none."""
    data = tuple(int(d) for d in data_shape)
    if _fits(data, model_shape):
        return ShapeFit("same", data, data)
    if _fits((*data, 1), model_shape):
        return ShapeFit("add_axis", data, (*data, 1))
    if len(data) >= 2 and data[-1] == 1 and _fits(data[:-1], model_shape):
        return ShapeFit("drop_axis", data, data[:-1])
    if len(data) == 3 and data[-1] == 1 and model_shape[-1] == 3 and _fits((*data[:2], 3), model_shape):
        return ShapeFit("gray_to_rgb", data, (*data[:2], 3))
    return None


def mismatch_fixes(data_shape: tuple[int, ...], model_shape: Shape) -> list[str]:
    """What a user can change when the shapes do not fit, most specific first."""
    fixes: list[str] = []
    image = len(data_shape) in (2, 3)
    spatial = model_shape[:2] if len(model_shape) in (2, 3) else ()
    if image and len(spatial) == 2 and all(d is not None for d in spatial) and tuple(data_shape[:2]) != spatial:
        fixes.append(f"set data.image_size={list(spatial)} to resize the images to the model's input")
    channels = (data_shape[-1], model_shape[-1]) if len(data_shape) == len(model_shape) == 3 else None
    if channels and channels[0] not in (1, channels[1]) and channels[1] is not None:
        fixes.append(
            f"give the model {channels[0]} input channels (the data has {channels[0]}, the model takes {channels[1]})"
        )
    known = [d for d in model_shape if d is not None]
    if len(known) == len(model_shape) and math.prod(data_shape) == math.prod(known):
        fixes.append(
            f"start the model with keras.Input({tuple(data_shape)}) followed by keras.layers.Reshape({tuple(known)})"
        )
    fixes.append(f"build the model for the data's shape: keras.Input({tuple(data_shape)})")
    return fixes


def mismatch_message(source: str, data_shape: tuple[int, ...], model_shape: Shape, hint: str = "") -> str:
    """The error text for shapes that cannot be adapted: both shapes, then the fixes."""
    fixes = mismatch_fixes(data_shape, model_shape)
    if hint:
        fixes.insert(0, hint)
    return (
        f"{source} expects inputs of shape {tuple(model_shape)} but the data has shape {tuple(data_shape)} "
        f"(per example, without the batch axis), and no automatic adaptation applies (only a trailing axis "
        f"of size 1, or 1 -> 3 image channels, is adapted). Fix: {'; or '.join(fixes)}"
    )
