"""Callbacks the harness builds, and why training stopped early.

A stopped run must say what stopped it: the configured early stopping with its monitor,
patience and best epoch, or the user callback (by class name) that set `stop_training`.
Keras only exposes a flag on the model, so `watch_stops` notes which callback turned it on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras

from harness.config.schema import EarlyStoppingConfig

STOPPED_TRAINING = "_harness_stopped_training"
"""Attribute `watch_stops` sets on the callback that turned `model.stop_training` on."""

WATCHED_HOOKS = (
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
)


class ConfiguredEarlyStopping(keras.callbacks.EarlyStopping):  # type: ignore[misc]  # Keras is untyped
    """The early stopping of `training.early_stopping` (a subclass, so the stop reason can tell
    it from a user's own `EarlyStopping`)."""


def make_early_stopping(cfg: EarlyStoppingConfig) -> ConfiguredEarlyStopping:
    return ConfiguredEarlyStopping(
        monitor=cfg.monitor,
        patience=cfg.patience,
        min_delta=cfg.min_delta,
        restore_best_weights=cfg.restore_best,
    )


def watch_stops(callbacks: Sequence[keras.callbacks.Callback]) -> list[keras.callbacks.Callback]:
    """The same callbacks, each hook it overrides wrapped to note whether it stopped training.

    Only overridden hooks are wrapped: Keras skips (and may run asynchronously) the default ones,
    and a callback that overrides nothing cannot stop training.
    """
    for callback in callbacks:
        for hook in WATCHED_HOOKS:
            method = getattr(callback, hook, None)
            if method is None or getattr(method, "_is_default", False) or hasattr(method, "__wrapped__"):
                continue
            setattr(callback, hook, _noting_stop(callback, method))
    return list(callbacks)


def _noting_stop(callback: keras.callbacks.Callback, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def hook(*args: Any, **kwargs: Any) -> Any:
        model = getattr(callback, "model", None)
        before = bool(getattr(model, "stop_training", False))
        result = method(*args, **kwargs)
        if not before and bool(getattr(model, "stop_training", False)):
            setattr(callback, STOPPED_TRAINING, True)
        return result

    return hook


def stop_reason(callbacks: Sequence[keras.callbacks.Callback], epoch: int) -> str:
    """Why training stopped after `epoch` (0-based), for the run output, state and report."""
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.EarlyStopping) and callback.stopped_epoch == epoch and epoch > 0:
            return early_stopping_reason(callback, epoch)
    stoppers = [type(c).__name__ for c in callbacks if getattr(c, STOPPED_TRAINING, False)]
    if stoppers:
        return f"stopped by callback {stoppers[0]} after epoch {epoch + 1}"
    return f"stopped by a callback after epoch {epoch + 1}"


def early_stopping_reason(callback: keras.callbacks.EarlyStopping, epoch: int) -> str:
    """E.g. "early stopping: val_loss did not improve for 5 epochs (best 0.312 at epoch 7)"."""
    delta = abs(float(callback.min_delta))
    by = f" by more than {delta:g}" if delta else ""
    best = callback.best
    best_text = "no best value" if best is None else f"best {float(best):.4g} at epoch {int(callback.best_epoch) + 1}"
    owner = "" if isinstance(callback, ConfiguredEarlyStopping) else f" (callback {type(callback).__name__})"
    return (
        f"early stopping{owner}: {callback.monitor} did not improve{by} for {callback.patience} "
        f"epoch{'s' if callback.patience != 1 else ''} ({best_text}); stopped after epoch {epoch + 1}"
    )
