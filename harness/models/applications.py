"""`applications.<Name>`: a keras.applications backbone with the harness task head.

Nothing is ever downloaded: the backbone is created with `weights=None` and, when `model.weights`
names a local file, those weights are loaded into the headless backbone before the head is added.
Cluster nodes often have no internet access, and a silent download would hide which weights a run
used. With several replicas the backbone's BatchNormalization layers use the moments of the
global batch, as the registered models' do (base.batch_norm).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.models.base import Task, synchronise_batch_norm, task_head

PREFIX = "applications."

RESERVED_KWARGS = (
    "include_top",
    "weights",
    "input_shape",
    "input_tensor",
    "classes",
    "classifier_activation",
)
POOLING = ("avg", "max")


def application_names() -> list[str]:
    """The model constructors keras.applications exports (its submodules are lower case)."""
    return sorted(
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


def application_constructor(name: str) -> Callable[..., keras.Model]:
    """Look `name` up in keras.applications; a miss lists close names (or all of them)."""
    known = application_names()
    if name in known:
        return getattr(keras.applications, name)  # type: ignore[no-any-return]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
    raise ModelError(f"unknown Keras application {PREFIX + name!r}.{hint} Known: {', '.join(known)}.")


def build_application(
    cfg: ModelConfig, app: str, *, input_shape: tuple[int, ...], num_outputs: int, task: Task
) -> keras.Model:
    """Backbone(include_top=False, weights=None, pooling='avg') + optional local weights + head.

    The result is one flat Functional model (backbone layers included by name), so
    `model.freeze` can address individual backbone layers.
    """
    constructor = application_constructor(app)
    weights = _weights_path(cfg.weights)
    kwargs = _backbone_kwargs(cfg.kwargs)
    if weights is not None and len(input_shape) == 3 and input_shape[-1] == 1:
        input_shape = (*input_shape[:2], 3)  # pretrained weights take RGB: the data's gray is repeated
    try:
        base = constructor(include_top=False, weights=None, input_shape=input_shape, **kwargs)
    except (ValueError, TypeError) as err:
        resize = (
            " Fix: set data.image_size to a size the model accepts (e.g. [32, 32] or larger; image folders, "
            "NPZ and built-in images are all resized)."
            if len(input_shape) == 3
            else ""
        )
        raise ModelError(
            f"keras.applications.{app} cannot be built for input_shape={input_shape} with "
            f"kwargs={cfg.kwargs!r}: {str(err).rstrip('.')}.{resize}"
        ) from err
    if weights is not None:
        _load_backbone_weights(base, weights, app)
    synchronise_batch_norm(base.layers)  # several replicas: batch statistics of the global batch
    outputs = task_head(base.output, cfg, num_outputs, task)
    return keras.Model(base.inputs, outputs, name=app.lower())


def _backbone_kwargs(extra: dict[str, Any]) -> dict[str, Any]:
    """Merge `model.kwargs` over pooling='avg'; the keys the harness controls are refused."""
    reserved = sorted(set(extra) & set(RESERVED_KWARGS))
    if reserved:
        raise ModelError(
            f"`model.kwargs` must not set {', '.join(reserved)} for keras.applications models: "
            "the harness builds the backbone without its top and never downloads weights "
            f"(use model.weights for a local file). Received: kwargs={extra!r}"
        )
    kwargs = {"pooling": "avg", **extra}
    if kwargs["pooling"] not in POOLING:
        raise ModelError(
            f"`model.kwargs.pooling` must be one of {', '.join(POOLING)} so the head receives a "
            f"feature vector. Received: pooling={kwargs['pooling']!r}"
        )
    return kwargs


def _weights_path(weights: str | None) -> Path | None:
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"`model.weights` must be an existing local weights file (nothing is downloaded). "
            f"Received: weights={weights!r}, which does not exist"
        )
    return path


def _load_backbone_weights(base: keras.Model, path: Path, app: str) -> None:
    """Load into the headless backbone, so no-top files (`*_notop.h5`, `*.weights.h5`) fit."""
    try:
        base.load_weights(str(path))
    except Exception as err:
        raise ModelError(
            f"cannot load weights file {str(path)!r} into keras.applications.{app} without its "
            f"top (the file must hold headless weights for the same input channels and kwargs): {err}"
        ) from err
