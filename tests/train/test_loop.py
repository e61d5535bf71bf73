"""The training loop: precision and XLA, callbacks per compiled chunk, and the global batch it accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import pytest

from harness import cli
from harness.config import load_config
from harness.data import prepare_data
from harness.distribute import make_strategy
from harness.errors import ConfigError
from harness.evaluate import load_report
from harness.train.loop import Trainer, check_global_batch


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
