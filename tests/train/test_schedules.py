"""Learning-rate schedules and their scaling with the number of replicas."""

from __future__ import annotations

import math

import pytest
import tensorflow as tf

from harness.config import ScheduleConfig
from harness.train.schedules import make_schedule, scaled_learning_rate


def lr_at(schedule, step: int) -> float:  # type: ignore[no-untyped-def]
    return float(schedule(tf.constant(step)))


def test_warmup_then_cosine_reaches_floor() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    schedule = make_schedule(cfg, base_lr=1.0, steps_per_epoch=10, epochs=5)
    assert lr_at(schedule, 0) == pytest.approx(0.1)
    assert lr_at(schedule, 9) == pytest.approx(1.0)
    assert lr_at(schedule, 10) == pytest.approx(1.0)
    assert lr_at(schedule, 30) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(schedule, 50) == pytest.approx(0.1)


def test_step_schedule_decays_every_step_epochs() -> None:
    cfg = ScheduleConfig(name="step", step_epochs=2, gamma=0.5)
    schedule = make_schedule(cfg, base_lr=0.8, steps_per_epoch=5, epochs=10)
    assert [lr_at(schedule, s) for s in (0, 9, 10, 20)] == pytest.approx([0.8, 0.8, 0.4, 0.2])


def test_constant_schedule_and_lr_scaling() -> None:
    schedule = make_schedule(ScheduleConfig(name="constant"), 0.3, 7, 3)
    assert lr_at(schedule, 0) == lr_at(schedule, 100) == pytest.approx(0.3)
    assert scaled_learning_rate(0.1, 4, "linear") == pytest.approx(0.4)
    assert scaled_learning_rate(0.1, 4, "sqrt") == pytest.approx(0.2)
    assert scaled_learning_rate(0.1, 4, "none") == pytest.approx(0.1)

