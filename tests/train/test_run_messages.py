"""What a run says about itself: why it stopped early, and mixed precision without a GPU."""

from __future__ import annotations

import json
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras
import pytest
import tensorflow as tf

from harness import cli
from harness.config.schema import EarlyStoppingConfig
from harness.train.callbacks import ConfiguredEarlyStopping, make_early_stopping, stop_reason, watch_stops
from harness.train.precision import PrecisionWarning, warn_if_slow_precision


def tiny_model() -> keras.Model:
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def run_epochs(callbacks: list[keras.callbacks.Callback], losses: list[float]) -> int:
    """Drive the callbacks as the training loop does; return the epoch training stopped after."""
    model = tiny_model()
    hooks = keras.callbacks.CallbackList(watch_stops(callbacks), model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch, loss in enumerate(losses):
        hooks.on_epoch_begin(epoch)
        hooks.on_epoch_end(epoch, {"val_loss": loss, "loss": loss})
        if model.stop_training:
            return epoch
    return -1


# --- early stopping -------------------------------------------------------------------------------


def test_configured_early_stopping_names_monitor_patience_and_best_epoch() -> None:
    stop = make_early_stopping(EarlyStoppingConfig(enabled=True, monitor="val_loss", patience=2))
    epoch = run_epochs([stop], [0.9, 0.5, 0.312, 0.4, 0.35, 0.33])
    assert epoch == 4
    assert stop_reason([stop], epoch) == (
        "early stopping: val_loss did not improve for 2 epochs (best 0.312 at epoch 3); stopped after epoch 5"
    )


def test_min_delta_is_named_when_set() -> None:
    stop = make_early_stopping(EarlyStoppingConfig(enabled=True, patience=1, min_delta=0.05))
    epoch = run_epochs([stop], [1.0, 0.98, 0.97])
    assert "val_loss did not improve by more than 0.05 for 1 epoch (best 1 at epoch 1)" in stop_reason([stop], epoch)


def test_a_users_own_early_stopping_is_named_as_such() -> None:
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1)
    assert not isinstance(stop, ConfiguredEarlyStopping)
    epoch = run_epochs([stop], [1.0, 2.0])
    assert stop_reason([stop], epoch).startswith("early stopping (callback EarlyStopping): loss did not improve")


class StopAtSecondEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if epoch == 1:
            self.model.stop_training = True


class Quiet(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        pass


def test_a_user_callback_that_stops_training_is_named_by_class() -> None:
    callbacks: list[keras.callbacks.Callback] = [Quiet(), StopAtSecondEpoch(), Quiet()]
    epoch = run_epochs(callbacks, [1.0, 1.0, 1.0])
    assert stop_reason(callbacks, epoch) == "stopped by callback StopAtSecondEpoch after epoch 2"


def test_watching_keeps_the_callbacks_and_leaves_default_hooks_alone() -> None:
    quiet = Quiet()
    assert watch_stops([quiet]) == [quiet]
    assert getattr(quiet.on_train_batch_end, "_is_default", False)  # Keras may still skip or batch it
    assert watch_stops([quiet])[0].on_epoch_end.__wrapped__.__self__ is quiet  # wrapped once only


STOPPERS = """
import keras


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def make():
    return StopAfterFirstEpoch()
"""


@pytest.fixture
def stoppers(workdir: Path) -> Iterator[str]:
    name = f"stoppers_{uuid.uuid4().hex[:8]}"
    (workdir / f"{name}.py").write_text(STOPPERS)
    yield name
    sys.modules.pop(name, None)


FAST = ["data.dataset=iris", "model.name=mlp", "training.progress=lines", "training.batch_size=16"]


def test_the_stop_reason_reaches_the_run_output_and_the_report(
    workdir: Path, stoppers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["train", *FAST, "training.epochs=5", f"training.callbacks=[{stoppers}:make]"])
    out, err = capsys.readouterr()
    assert code == 0, err
    reason = "stopped by callback StopAfterFirstEpoch after epoch 1"
    assert f"1 epochs ({reason})" in out
    run = next((workdir / "runs").iterdir())
    assert json.loads((run / "report.json").read_text())["training"]["stop_reason"] == reason


# --- mixed precision on CPU ----------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_without_a_gpu_warns(precision: str) -> None:
    with pytest.warns(PrecisionWarning, match=rf"training.precision={precision} .*several times slower on CPU"):
        assert warn_if_slow_precision(precision, gpus=0)


@pytest.mark.parametrize(
    ("precision", "gpus", "enabled"),
    [("float32", 0, True), ("mixed_bfloat16", 1, True), ("mixed_float16", 0, False)],
)
def test_no_precision_warning_with_a_gpu_float32_or_off_the_chief(precision: str, gpus: int, enabled: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_slow_precision(precision, gpus=gpus, enabled=enabled)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="checks a machine without a GPU")
def test_a_bf16_run_on_cpu_warns_before_training(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", *FAST, "training.epochs=1", "training.precision=mixed_bfloat16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "PrecisionWarning: training.precision=mixed_bfloat16 on a machine without a GPU" in err
    assert "Use training.precision=float32" in err
