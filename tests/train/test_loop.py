"""Parts of the training loop: LR schedules, checkpoint files, progress output, precision and XLA."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import cli
from harness.config import ScheduleConfig, load_config
from harness.data import prepare_data
from harness.distribute import make_strategy
from harness.errors import ConfigError, RunDirError
from harness.evaluate import load_report
from harness.train import checkpoint
from harness.train.checkpoint import LoopState
from harness.train.loop import Trainer, check_global_batch
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
        ["training.jit_compile=true", "run.deterministic=false"],
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


# --- callbacks, called as Model.fit calls them -----------------------------------------------------


class Recorder(keras.callbacks.Callback):
    """Every hook call as (hook, index or None, sorted log keys); optionally stops after `stop_at`."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, int | None, tuple[str, ...]]] = []
        self.stop_at = stop_at

    def _note(self, hook: str, index: int | None, logs: dict[str, Any] | None) -> None:
        self.calls.append((hook, index, tuple(sorted(logs or {}))))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._note("train_begin", None, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._note("train_end", None, logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._note("epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._note("epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._note("batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._note("batch_end", batch, logs)
        if self.stop_at is not None and batch >= self.stop_at:
            self.model.stop_training = True

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._note("test_begin", None, logs)

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._note("test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._note("test_batch_end", batch, logs)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._note("test_end", None, logs)


def iris_trainer(callback: keras.callbacks.Callback, *extra: str) -> Trainer:
    """Iris (106 training, 22 validation samples), batch 16: 7 steps per epoch in chunks of 3."""
    overrides = [
        "data.dataset=iris",
        "model.name=mlp",
        "model.hidden_units=[8]",
        "training.batch_size=16",
        "training.steps_per_execution=3",
        "training.epochs=2",
        "distribute.strategy=single",
        *extra,
    ]
    config = load_config(None, overrides)
    data = prepare_data(config.data, config.run.seed)
    return Trainer(config, data, make_strategy(config.distribute), callbacks=[callback])


def test_callbacks_are_called_once_per_compiled_chunk_as_model_fit_calls_them() -> None:
    recorder = Recorder()
    trainer = iris_trainer(recorder)
    assert (len(trainer.data.x_train), len(trainer.data.x_val)) == (106, 22)
    trainer.fit()
    train_logs = ("accuracy", "loss")
    test = [
        ("test_begin", None, ()),
        ("test_batch_begin", 0, ()),
        ("test_batch_end", 1, train_logs),  # 22 samples in batches of 16: steps 0 and 1, one compiled call
        ("test_end", None, train_logs),
    ]
    epoch_logs = (
        "accuracy",
        "epoch",
        "epoch_time_s",
        "loss",
        "lr",
        "samples_per_s",
        "step",
        "val_accuracy",
        "val_loss",
    )
    one_epoch = [
        ("batch_begin", 0, ()),
        ("batch_end", 2, train_logs),
        ("batch_begin", 3, ()),
        ("batch_end", 5, train_logs),
        ("batch_begin", 6, ()),
        ("batch_end", 6, train_logs),  # the last chunk holds one step
        *test,
    ]
    assert recorder.calls == [
        ("train_begin", None, ()),
        ("epoch_begin", 0, ()),
        *one_epoch,
        ("epoch_end", 0, epoch_logs),
        ("epoch_begin", 1, ()),
        *one_epoch,
        ("epoch_end", 1, epoch_logs),
        ("train_end", None, epoch_logs),
    ]


def test_a_callback_stopping_mid_epoch_ends_training_after_that_chunk() -> None:
    recorder = Recorder(stop_at=2)
    result = iris_trainer(recorder).fit()
    hooks = [(hook, index) for hook, index, _ in recorder.calls if not hook.startswith("test")]
    assert hooks == [
        ("train_begin", None),
        ("epoch_begin", 0),
        ("batch_begin", 0),
        ("batch_end", 2),
        ("epoch_end", 0),
        ("train_end", None),
    ]
    assert result.stopped_early and len(result.history) == 1
    assert result.state.global_step == 3


# --- the global batch must fit the training split --------------------------------------------------


@pytest.mark.parametrize(("batch", "replicas", "samples"), [(106, 1, 106), (26, 4, 106), (1, 2, 2)])
def test_a_global_batch_up_to_the_training_split_is_accepted(batch: int, replicas: int, samples: int) -> None:
    check_global_batch(batch, replicas, samples)


def test_a_global_batch_larger_than_the_training_split_is_refused_with_the_largest_that_fits() -> None:
    with pytest.raises(ConfigError) as err:
        check_global_batch(1_000_000_000, 1, 106)
    message = str(err.value)
    assert "training.batch_size=1000000000" in message and "106 training samples" in message
    assert "training.batch_size=106 or less" in message
    with pytest.raises(ConfigError, match=r"x 4 replica\(s\) is a global batch of 128.*batch_size=26 or less"):
        check_global_batch(32, 4, 106)
    with pytest.raises(ConfigError, match="even a batch of 1 per replica is too many"):
        check_global_batch(1, 4, 3)


def test_the_trainer_refuses_a_global_batch_larger_than_the_training_split() -> None:
    with pytest.raises(ConfigError, match="training.batch_size=107"):
        iris_trainer(Recorder(), "training.batch_size=107")
