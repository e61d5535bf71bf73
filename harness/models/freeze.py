"""`model.freeze`: keep the first N layers, or the named layers, fixed during training.

Frozen BatchNormalization layers also run in inference mode in Keras 3, which is what fine-tuning
a pretrained backbone needs.
"""

from __future__ import annotations

import keras

from harness.errors import ModelError
from harness.registry import closest


def freezable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in order, without InputLayers (they hold no weights)."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def apply_freeze(model: keras.Model, freeze: int | list[str]) -> list[str]:
    """Set `trainable=False` on the selected layers and return their names."""
    layers = freezable_layers(model)
    chosen = _first_layers(layers, freeze) if isinstance(freeze, int) else _named_layers(layers, freeze)
    for layer in chosen:
        layer.trainable = False
    return [layer.name for layer in chosen]


def _first_layers(layers: list[keras.layers.Layer], count: int) -> list[keras.layers.Layer]:
    if count < 0 or count >= len(layers):
        raise ModelError(
            f"`model.freeze` must be between 0 and {len(layers) - 1} for this model of "
            f"{len(layers)} layers, so at least one layer still trains. Received: freeze={count}"
        )
    return layers[:count]


def _named_layers(layers: list[keras.layers.Layer], names: list[str]) -> list[keras.layers.Layer]:
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        hints = [_with_hint(name, list(by_name)) for name in unknown]
        raise ModelError(
            f"`model.freeze` names layers the model does not have: {', '.join(hints)}. "
            f"Layers: {', '.join(by_name)}"
        )
    return [by_name[name] for name in dict.fromkeys(names)]


def _with_hint(name: str, known: list[str]) -> str:
    hint = closest(name, known)
    return f"{name!r} (did you mean {hint!r}?)" if hint else repr(name)
