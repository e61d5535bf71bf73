"""End-to-end training through the CLI: run directory, resume, NaN guard, callbacks, predict."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from harness import cli
from harness.evaluate import load_report
from harness.train import checkpoint
from harness.train.loop import Trainer
from tests.conftest import CONFIGS, wait_until

FAST = ["training.progress=lines", "training.steps_per_execution=4"]
IRIS = [
    "data.dataset=iris",
    "model.name=mlp",
    "model.hidden_units=[16]",
    "model.batch_norm=false",
    "training.batch_size=16",
    *FAST,
]
RUN_FILES = [
    "config.yaml",
    "env.json",
    "metrics.jsonl",
    "model.keras",
    "preprocessing.json",
    "report.json",
    "report.md",
    "report.html",
    "model_card.md",
    "test_predictions.npz",
]


def train(*args: str) -> int:
    return cli.main(["train", *args])


def metrics(run_dir: Path) -> list[dict[str, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timing = ("epoch_time_s", "samples_per_s")
    return [{k: v for k, v in line.items() if k not in timing} for line in lines]


def weights(run_dir: Path) -> list[np.ndarray]:
    return keras.saving.load_model(run_dir / "model.keras").get_weights()


@pytest.mark.slow
def test_default_job_trains_and_writes_every_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train("training.progress=lines") == 0
    run_dir = workdir / "runs" / "digits-cnn"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    report = load_report(run_dir)
    assert report["test"]["accuracy"] >= 0.95
    assert report["training"]["epochs_run"] == 12
    assert len(metrics(run_dir)) == 12
    assert checkpoint.resolve(run_dir / "checkpoints", "best") is not None
    assert "data:image/png;base64" in (run_dir / "report.html").read_text()
    out = capsys.readouterr().out
    assert "report:" in out and "global batch 32" in out


class StopAfterEpoch(keras.callbacks.Callback):
    """Simulates a killed job: raises after the checkpoint of epoch `epoch` was written."""

    epoch = 2

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def stop_after_epoch_two() -> keras.callbacks.Callback:
    return StopAfterEpoch()


def test_interrupted_then_resumed_equals_uninterrupted(workdir: Path) -> None:
    common = [*IRIS, "training.epochs=4", "model.dropout=0.2"]
    assert train(*common, "run.name=full") == 0
    interrupted = [*common, "run.name=cut", f"training.callbacks=['{__name__}:stop_after_epoch_two']"]
    assert train(*interrupted) == 130
    cut = workdir / "runs" / "cut"
    assert len(metrics(cut)) == 1  # epoch 2's line is written after callbacks; it is redone on resume
    assert not (cut / "report.json").exists()
    assert train(*common, "run.name=cut", "--resume") == 0
    full = workdir / "runs" / "full"
    assert metrics(cut) == metrics(full)
    for a, b in zip(weights(cut), weights(full), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_from_mid_epoch_step_checkpoint(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = [*IRIS, "training.epochs=3", "training.checkpoint.every_steps=3"]
    assert train(*common, "run.name=full") == 0
    original = Trainer._check_finite

    def interrupt_at_step_12(self, logs, epoch, state, run):  # type: ignore[no-untyped-def]
        original(self, logs, epoch, state, run)
        if state.global_step == 12:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_check_finite", interrupt_at_step_12)
    assert train(*common, "run.name=cut") == 130
    state = json.loads((checkpoint.resolve(workdir / "runs/cut/checkpoints") / "state.json").read_text())
    # 106 samples / batch 16 = 7 steps per epoch; step checkpoints every 3 global steps
    assert state["global_step"] == 9 and state["step_in_epoch"] == 2 and state["epoch"] == 1
    monkeypatch.setattr(Trainer, "_check_finite", original)
    assert train(*common, "run.name=cut", "--resume") == 0
    assert metrics(workdir / "runs/cut") == metrics(workdir / "runs/full")
    for a, b in zip(weights(workdir / "runs/cut"), weights(workdir / "runs/full"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_with_message_and_keeps_checkpoint(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "data.dataset=diabetes",
        "model.name=mlp",
        "model.batch_norm=false",
        "training.epochs=30",
        "training.optimizer.name=sgd",
        "training.optimizer.learning_rate=1e6",
        "training.schedule.name=step",
        "training.schedule.step_epochs=1",
        "training.schedule.gamma=1.0",
        "training.schedule.warmup_epochs=1",
        "run.name=nan",
        *FAST,
    ]
    assert train(*args) == 1
    err = capsys.readouterr().err
    assert "loss became" in err and "learning_rate" in err
    run_dir = workdir / "runs" / "nan"
    assert not (run_dir / "report.json").exists()
    latest = checkpoint.resolve(run_dir / "checkpoints")
    if latest is not None:  # the first epoch's checkpoint, written before the loss blew up
        for value in np.load(latest / "model.npz").values():
            assert np.isfinite(value).all()


def test_early_stopping_stops_and_reports_it(workdir: Path) -> None:
    args = [
        *IRIS,
        "training.epochs=50",
        "training.early_stopping.enabled=true",
        "training.early_stopping.patience=1",
        "training.early_stopping.min_delta=10",
        "run.name=es",
    ]
    assert train(*args) == 0
    report = load_report(workdir / "runs" / "es")
    assert report["training"]["stopped_early"] is True
    assert report["training"]["epochs_run"] == 2


def test_regression_run_reports_original_units(workdir: Path) -> None:
    assert train(str(CONFIGS / "regression.yaml"), "training.epochs=3", *FAST) == 0
    run_dir = workdir / "runs" / "diabetes-mlp"
    report = load_report(run_dir)
    assert report["task"] == "regression"
    assert 20 < report["test"]["mae"] < 200  # diabetes targets range 25..346
    assert "val_mae" in metrics(run_dir)[0]


def test_tensorboard_and_predict_round_trip(workdir: Path) -> None:
    assert train(*IRIS, "training.epochs=2", "training.tensorboard=true", "run.name=tb") == 0
    run_dir = workdir / "runs" / "tb"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    saved = np.load(run_dir / "test_predictions.npz")
    from sklearn.datasets import load_iris

    x = load_iris().data
    np.savez(workdir / "new.npz", x=x[:5])
    assert cli.main(["predict", str(run_dir), str(workdir / "new.npz"), "-o", str(workdir / "p.csv")]) == 0
    rows = (workdir / "p.csv").read_text().splitlines()
    assert rows[0].startswith("index,prediction,prob_")  # the identifier comes first
    assert len(rows) == 6
    assert saved["y_pred"].shape[1] == 3


def test_evaluate_and_report_rebuild(workdir: Path) -> None:
    assert train(*IRIS, "training.epochs=2", "run.name=ev") == 0
    run_dir = workdir / "runs" / "ev"
    before = load_report(run_dir)["test"]["accuracy"]
    (run_dir / "report.md").unlink()
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert load_report(run_dir)["test"]["accuracy"] == pytest.approx(before)
    (run_dir / "report.html").unlink()
    assert cli.main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file() and (run_dir / "report.md").is_file()
    assert train(*IRIS, "training.epochs=1", "run.name=ev2") == 0
    assert cli.main(["report", str(run_dir), str(workdir / "runs/ev2"), "--out", "cmp"]) == 0
    assert (workdir / "cmp" / "comparison.md").is_file()


def test_stop_request_checkpoints_then_resume_matches(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A preemption request stops at a step boundary with a checkpoint; resuming loses nothing."""
    from harness.config import load_config
    from harness.errors import Preempted
    from harness.train.run import RunRequest
    from harness.train.run import train as train_run

    common = [*IRIS, "training.epochs=3"]
    assert train(*common, "run.name=full") == 0
    calls = iter(range(1000))
    config = load_config(None, [*common, "run.name=cut"])
    with pytest.raises(Preempted, match="checkpoint was saved"):
        train_run(RunRequest(config), stop_requested=lambda: next(calls) >= 2)
    cut = workdir / "runs" / "cut"
    state = json.loads((cut / "state.json").read_text())
    assert state["state"] == "preempted"
    saved = json.loads((checkpoint.resolve(cut / "checkpoints") / "state.json").read_text())
    # 7 steps an epoch in chunks of at most 4: the third chunk ends mid-way through epoch 2
    assert (saved["global_step"], saved["epoch"], saved["step_in_epoch"]) == (11, 1, 4)
    train_run(RunRequest(config, resume="auto"))
    assert json.loads((cut / "state.json").read_text())["state"] == "completed"
    assert metrics(cut) == metrics(workdir / "runs" / "full")
    for a, b in zip(weights(cut), weights(workdir / "runs" / "full"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigusr2_stops_training_with_exit_code_75(workdir: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    args = [sys.executable, "-m", "harness", "train", *IRIS, "training.epochs=100000", "run.name=sig"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    metrics_file = workdir / "runs" / "sig" / "metrics.jsonl"
    wait_until(
        lambda: metrics_file.exists() and metrics_file.read_text().count("\n") >= 2,
        120,
        0.2,
        "two epochs in metrics.jsonl",
    )
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "saving a checkpoint" in out and "continues from it" in err
    assert json.loads((workdir / "runs" / "sig" / "state.json").read_text())["state"] == "preempted"


@pytest.mark.parametrize("raised", [KeyboardInterrupt, RuntimeError], ids=["ctrl-c", "error"])
def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing_in_the_way(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: type[BaseException]
) -> None:
    """Nothing to resume, so no half-made directory that neither --resume nor a rerun would take."""
    original = Trainer._check_finite

    def stop_at_step_4(self, logs, epoch, state, run):  # type: ignore[no-untyped-def]
        original(self, logs, epoch, state, run)
        if state.global_step == 4:
            raise raised("stopped")

    monkeypatch.setattr(Trainer, "_check_finite", stop_at_step_4)
    common = [*IRIS, "training.epochs=2", "run.name=early"]
    if raised is KeyboardInterrupt:
        assert train(*common) == 130
    else:
        with pytest.raises(RuntimeError):
            train(*common)
    assert not (workdir / "runs/early").exists()
    assert "held no checkpoint yet" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "_check_finite", original)
    assert train(*common) == 0, "the same command runs again"


def test_a_run_directory_that_appears_while_starting_is_not_taken_over(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs started with one run.name: the second must not write into the first's directory."""
    import harness.train.run as run_module

    original = run_module.prepare_data

    def other_run_starts_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        (workdir / "runs/race").mkdir(parents=True)
        (workdir / "runs/race/metrics.jsonl").write_text('{"epoch": 1}\n')
        return original(*args, **kwargs)

    monkeypatch.setattr(run_module, "prepare_data", other_run_starts_meanwhile)
    assert train(*IRIS, "training.epochs=1", "run.name=race") == 2
    assert "appeared while this run was starting" in capsys.readouterr().err
    assert [p.name for p in (workdir / "runs/race").iterdir()] == ["metrics.jsonl"]
    assert (workdir / "runs/race/metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_first_ctrl_c_saves_a_checkpoint_and_resume_continues(workdir: Path) -> None:
    """Ctrl-C in a terminal costs the steps since the last checkpoint at most, as SIGTERM does."""
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "harness", "train", *IRIS, "training.epochs=400", "run.name=ctrlc"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = workdir / "runs/ctrlc/metrics.jsonl"
        wait_until(lambda: log.is_file() and len(log.read_text().splitlines()) >= 2, 120, what="two epochs")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, out
    assert "received SIGINT: saving a checkpoint at the next step" in out
    state = json.loads((workdir / "runs/ctrlc/state.json").read_text())
    assert state["state"] == "interrupted", state
    saved = json.loads((checkpoint.resolve(workdir / "runs/ctrlc/checkpoints") / "state.json").read_text())
    done = len(metrics(workdir / "runs/ctrlc"))
    assert saved["global_step"] > 0 and done < 400
    assert train(*IRIS, f"training.epochs={done + 1}", "run.name=ctrlc", "--resume") == 0


def test_the_last_line_names_a_report_that_was_written(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(*IRIS, "training.epochs=1", "run.name=md", "report.html=false") == 0
    named = capsys.readouterr().out.splitlines()[-1].removeprefix("report: ")
    assert named.endswith("report.md") and Path(named).is_file(), named


RELU_HEAD = '''
import keras


def build(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="relu")(hidden))
'''
DIABETES = ["data.dataset=diabetes", "training.epochs=1", "training.batch_size=32", *FAST]


def test_regression_targets_are_standardised_unless_target_scaling_is_none(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "relu_head.py").write_text(RELU_HEAD)
    assert train(*DIABETES, "model.name=relu_head:build", "run.name=std") == 0
    out = capsys.readouterr().out
    assert "warning: the model's output ends in relu" in out and "data.target_scaling=none" in out
    assert train(*DIABETES, "model.name=relu_head:build", "run.name=raw", "data.target_scaling=none") == 0
    assert "warning: the model's output ends in relu" not in capsys.readouterr().out
    targets = json.loads((workdir / "runs/raw/preprocessing.json").read_text())["targets"]
    assert targets == {"mean": [0.0], "std": [1.0]}, "kept in their units"


def test_a_loss_that_needs_positive_targets_is_refused_on_standardised_ones(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(*DIABETES, "model.name=mlp", "training.loss=poisson", "run.name=p") == 2
    err = capsys.readouterr().err
    assert "training.loss='poisson'" in err and "data.target_scaling=none" in err
    assert not (workdir / "runs/p").exists()
    assert train(*DIABETES, "model.name=mlp", "training.loss=mape", "run.name=p") == 2
    assert "training.loss='mape'" in capsys.readouterr().err
    assert train(*DIABETES, "model.name=mlp", "training.loss=mape", "run.name=p", "data.target_scaling=none") == 0


def test_a_failed_run_never_removes_a_directory_another_run_put_in_its_place(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--overwrite` by a second run swaps in its own folder: the first run's cleanup must leave it."""
    original = Trainer._check_finite

    def replaced_then_fails(self, logs, epoch, state, run):  # type: ignore[no-untyped-def]
        original(self, logs, epoch, state, run)
        if state.global_step == 4:
            run_dir = workdir / "runs/swap"
            run_dir.rename(workdir / "runs/.swap-old")
            (run_dir / "checkpoints").mkdir(parents=True)
            (run_dir / ".harness-run").write_text("{}")  # the other run's directory, marker and all
            raise RuntimeError("stopped")

    monkeypatch.setattr(Trainer, "_check_finite", replaced_then_fails)
    with pytest.raises(RuntimeError):
        train(*IRIS, "training.epochs=2", "run.name=swap")
    assert (workdir / "runs/swap/.harness-run").is_file(), "the other run's directory is left alone"
