"""Learning-rate schedules with linear warmup, driven by the optimizer's step counter.

Because the schedule is a pure function of `optimizer.iterations`, a resumed run continues the
exact LR curve of an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from harness.config import ScheduleConfig


@keras.saving.register_keras_serializable(package="harness")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]  # Keras is untyped
    """Linear warmup to `base_lr`, then constant, cosine or step decay."""

    def __init__(
        self,
        base_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        kind: str = "constant",
        step_size: int = 1,
        gamma: float = 0.1,
        min_lr_ratio: float = 0.0,
    ) -> None:
        self.base_lr = float(base_lr)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.kind = kind
        self.step_size = max(int(step_size), 1)
        self.gamma = float(gamma)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        base = tf.constant(self.base_lr, tf.float32)
        warm = float(self.warmup_steps)
        after = tf.maximum(step - warm, 0.0)
        decayed = self._decay(base, after)
        if self.warmup_steps == 0:
            return decayed
        warmup_lr = base * (step + 1.0) / warm
        return tf.where(step < warm, warmup_lr, decayed)

    def _decay(self, base: tf.Tensor, after: tf.Tensor) -> tf.Tensor:
        if self.kind == "cosine":
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.minimum(after / span, 1.0)
            cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
            return base * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
        if self.kind == "step":
            return base * tf.pow(self.gamma, tf.floor(after / float(self.step_size)))
        return base

    def get_config(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "min_lr_ratio": self.min_lr_ratio,
        }


def scaled_learning_rate(base_lr: float, replicas: int, rule: str) -> float:
    """Scale the single-replica LR for a larger global batch (Goyal et al. 2017)."""
    if rule == "linear":
        return base_lr * replicas
    if rule == "sqrt":
        return base_lr * math.sqrt(replicas)
    return base_lr


def make_schedule(cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, epochs: int) -> WarmupSchedule:
    """Translate the epoch-based config into a step-based schedule."""
    return WarmupSchedule(
        base_lr=base_lr,
        total_steps=steps_per_epoch * epochs,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        kind=cfg.name,
        step_size=cfg.step_epochs * steps_per_epoch,
        gamma=cfg.gamma,
        min_lr_ratio=cfg.min_lr_ratio,
    )
