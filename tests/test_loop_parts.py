"""Parts of the training loop: LR schedules, checkpoint files, progress output, precision and XLA."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from harness import cli
from harness.config import ScheduleConfig
from harness.errors import RunDirError
from harness.evaluate import load_report
from harness.train import checkpoint
from harness.train.checkpoint import LoopState
from harness.train.progress import BarReporter, LineReporter, format_logs
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


def test_checkpoint_round_trip_and_pruning(tmp_path: Path) -> None:
    variables = [tf.Variable(np.arange(6.0).reshape(2, 3)), tf.Variable(np.ones(4))]
    opt = [tf.Variable(3)]
    first = checkpoint.save(
        tmp_path, variables, opt, LoopState(epoch=1, global_step=5, best_value=0.5), best=True
    )
    variables[0].assign(np.zeros((2, 3)))
    second = checkpoint.save(tmp_path, variables, opt, LoopState(epoch=2, global_step=10), best=False)
    third = checkpoint.save(tmp_path, variables, opt, LoopState(epoch=3, global_step=15), best=False)
    assert checkpoint.resolve(tmp_path, "previous") == second  # kept to fall back to
    fourth = checkpoint.save(tmp_path, variables, opt, LoopState(epoch=4, global_step=20), best=False)
    assert checkpoint.resolve(tmp_path, "best") == first
    assert checkpoint.resolve(tmp_path, "latest") == fourth
    assert checkpoint.resolve(tmp_path, "previous") == third
    assert not second.exists(), "a checkpoint no pointer names is deleted"
    assert not list(tmp_path.glob(".step-*")), "no temporary folder is left behind"
    state = checkpoint.load(first, variables, opt)
    assert state.epoch == 1 and state.best_value == 0.5
    np.testing.assert_array_equal(variables[0].numpy(), np.arange(6.0).reshape(2, 3))


def test_checkpoint_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    folder = checkpoint.save(tmp_path, [tf.Variable(np.ones(3))], [], LoopState(), best=False)
    with pytest.raises(RunDirError, match="shape"):
        checkpoint.load(folder, [tf.Variable(np.ones(4))], [])
    with pytest.raises(RunDirError, match="was the config changed"):
        checkpoint.load(folder, [tf.Variable(np.ones(3)), tf.Variable(1.0)], [])


def test_line_reporter_prints_one_line_per_epoch() -> None:
    stream = io.StringIO()
    reporter = LineReporter(stream)
    reporter.start_epoch(1, 2, 10, 0)
    reporter.update(5, {"loss": 1.0})
    reporter.end_epoch(1, 2, {"loss": 0.5, "lr": 0.001, "samples_per_s": 1234.5})
    assert stream.getvalue() == "epoch 1/2 loss=0.5000 lr=0.001 samples_per_s=1234\n"
    assert format_logs({"epoch": 3, "accuracy": 0.25}) == "accuracy=0.2500"


def test_bar_reporter_renders_on_a_terminal() -> None:
    reporter = BarReporter()
    reporter.console.file = io.StringIO()
    reporter.start_epoch(1, 1, 4, 0)
    reporter.update(4, {"loss": 0.1})
    reporter.end_epoch(1, 1, {"loss": 0.1})
    reporter.close()
    assert "epoch 1/1 loss=0.1000" in reporter.console.file.getvalue()


@pytest.mark.parametrize(
    "extra",
    [
        ["training.jit_compile=true"],
        ["training.precision=mixed_bfloat16"],
        ["training.precision=mixed_float16"],
    ],
    ids=["xla", "bfloat16", "float16"],
)
def test_xla_and_mixed_precision_train(workdir: Path, extra: list[str]) -> None:
    args = [
        "train",
        "data.dataset=iris",
        "model.name=mlp",
        "training.epochs=3",
        "training.progress=none",
        "training.optimizer.learning_rate=0.01",
        *extra,
    ]
    try:
        assert cli.main(args) == 0
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")
    report = load_report(workdir / "runs" / "digits-cnn")
    assert report["test"]["accuracy"] > 0.5
