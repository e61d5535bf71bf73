"""A compiled model is trained as compiled; logits are first-class; every Keras loss and optimizer name.

The done-when test trains the model of TensorFlow's "Multi-worker training with Keras" tutorial,
brought unchanged as `mnist_setup:build_and_compile_cnn_model`, on 28x28 images in an NPZ with
one process, two multiworker processes and two Horovod processes.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from harness import cli
from harness.config import keras_names, load_config, to_yaml
from harness.errors import ConfigError, ModelError
from harness.evaluate import evaluate_predictions, load_report
from harness.models import compiled_setup
from harness.models.base import check_input_fits
from harness.train.evaluation import as_class_probabilities, predict_array, softmax
from harness.train.objectives import (
    check_objectives,
    choose_loss,
    choose_optimizer,
    loss_class,
    make_optimizer,
    optimizer_class,
)
from harness.train.schedules import WarmupSchedule
from tests.conftest import THREADS, needs_horovod

# The tutorial's mnist_setup.py, as published (https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras).
TUTORIAL = """\
import os
import tensorflow as tf
import numpy as np

def mnist_dataset(batch_size):
  (x_train, y_train), _ = tf.keras.datasets.mnist.load_data()
  # The `x` arrays are in uint8 and have values in the [0, 255] range.
  # You need to convert them to float32 with values in the [0, 1] range.
  x_train = x_train / np.float32(255)
  y_train = y_train.astype(np.int64)
  train_dataset = tf.data.Dataset.from_tensor_slices(
      (x_train, y_train)).shuffle(60000).repeat().batch(batch_size)
  return train_dataset

def build_and_compile_cnn_model():
  model = tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(28, 28)),
      tf.keras.layers.Reshape(target_shape=(28, 28, 1)),
      tf.keras.layers.Conv2D(32, 3, activation='relu'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(128, activation='relu'),
      tf.keras.layers.Dense(10)
  ])
  model.compile(
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      optimizer=tf.keras.optimizers.SGD(learning_rate=0.001),
      metrics=['accuracy'])
  return model
"""
TUTORIAL_MODEL = "mnist_setup:build_and_compile_cnn_model"
TUTORIAL_RUN = [
    "data.dataset=npz",
    "data.path=digits28.npz",
    f"model.name={TUTORIAL_MODEL}",
    "training.epochs=3",
    "training.progress=lines",
    "training.steps_per_execution=4",
    "distribute.timeout_s=120",
]
LOSS_LINE = "loss: SparseCategoricalCrossentropy(from_logits=True) from the model's compile()"
OPTIMIZER_LINE = "optimizer: SGD(learning_rate=0.001) from the model's compile()"


def learnable_digits(path: Path, n: int = 800, seed: int = 0) -> None:
    """Ten classes of 28x28 images, each a bright block in its own place: easy even for SGD(0.001)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.normal(0.0, 0.3, (n, 28, 28)).astype(np.float32)
    for i, label in enumerate(y):
        row, col = divmod(int(label), 4)
        x[i, row * 9 : row * 9 + 9, col * 7 : col * 7 + 7] += 2.0
    np.savez(path, x=x, y=y)


def shapes_adapt() -> bool:
    """Whether a (28, 28) model accepts NPZ images that the data side gives a channel axis."""
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(2)])
    try:
        check_input_fits(model, (28, 28, 1), "probe")
    except ModelError:
        return False
    return True


needs_shape_adaptation = pytest.mark.skipif(
    not shapes_adapt(), reason="NPZ images of shape (28, 28) reach the model as (28, 28, 1) in this tree"
)


@pytest.fixture
def tutorial(workdir: Path) -> Iterator[Path]:
    """The tutorial's module and an NPZ of 28x28 images in the working folder."""
    (workdir / "mnist_setup.py").write_text(TUTORIAL)
    learnable_digits(workdir / "digits28.npz")
    yield workdir
    sys.modules.pop("mnist_setup", None)


def tutorial_model() -> keras.Model:
    namespace: dict[str, Any] = {}
    exec(compile(TUTORIAL, "mnist_setup.py", "exec"), namespace)  # noqa: S102 - the tutorial's own code
    return namespace["build_and_compile_cnn_model"]()  # type: ignore[no-any-return]


def check_tutorial_run(run_dir: Path, output: str) -> dict[str, Any]:
    """Far above chance (0.1), with a report that says the compile() settings were used."""
    report = load_report(run_dir)
    assert report["test"]["accuracy"] >= 0.6, report["test"]["accuracy"]
    training = report["training"]
    assert training["loss"] == "SparseCategoricalCrossentropy(from_logits=True)"
    assert training["loss_source"] == "the model's compile()"
    assert training["optimizer"] == "SGD(learning_rate=0.001)"
    assert training["optimizer_source"] == "the model's compile()"
    assert training["outputs"] == "logits" and training["compiled_metrics"] == ["accuracy"]
    assert training["final_lr"] == pytest.approx(0.001)
    assert 0.0 < report["test"]["log_loss"] < 2.3  # on probabilities: ln(10) is chance
    assert report["test"]["roc_auc"] > 0.9
    assert LOSS_LINE in output and OPTIMIZER_LINE in output
    assert "softmax" in (run_dir / "model_card.md").read_text()
    assert "SGD(learning_rate=0.001)" in (run_dir / "report.md").read_text()
    return report


# --- the tutorial model, unchanged, in every launch mode ------------------------------------------


@pytest.mark.slow
@needs_shape_adaptation
def test_tutorial_model_trains_as_compiled_in_one_process(tutorial: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", *TUTORIAL_RUN, "run.name=one"]) == 0
    out = capsys.readouterr().out
    run_dir = tutorial / "runs" / "one"
    check_tutorial_run(run_dir, out)
    assert out.index(LOSS_LINE) < out.index("starting:")  # said before training starts

    # harness evaluate and predict on the saved run apply the softmax too
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert load_report(run_dir)["test"]["log_loss"] < 2.3
    data = np.load(tutorial / "digits28.npz")
    np.savez(tutorial / "new.npz", x=data["x"][:6], y=data["y"][:6])
    assert cli.main(["predict", str(run_dir), str(tutorial / "new.npz"), "-o", str(tutorial / "p.csv")]) == 0
    rows = list(csv.DictReader((tutorial / "p.csv").open()))
    probabilities = np.array([[float(v) for k, v in row.items() if k.startswith("prob_")] for row in rows])
    assert probabilities.shape == (6, 10) and (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)

    # a run that saved its model but not its report (training ended before evaluation): evaluate
    # writes the report, and both it and predict still read the head's logits as logits
    (run_dir / "report.json").unlink()
    assert cli.main(["predict", str(run_dir), str(tutorial / "new.npz"), "-o", str(tutorial / "q.csv")]) == 0
    assert (tutorial / "q.csv").read_text() == (tutorial / "p.csv").read_text()
    assert cli.main(["evaluate", str(run_dir)]) == 0
    rebuilt = load_report(run_dir)
    assert rebuilt["test"]["log_loss"] < 2.3 and rebuilt["test"]["accuracy"] >= 0.6
    assert "rebuilt by harness evaluate" in rebuilt["training"]["note"]
    assert rebuilt["model"]["parameters"] > 0 and rebuilt["config"]["model"]["name"] == TUTORIAL_MODEL


def run_harness(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **THREADS, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@needs_shape_adaptation
@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param("multiworker", id="multiworker-2proc"),
        pytest.param("horovod", id="horovod-2proc", marks=needs_horovod),
    ],
)
def test_tutorial_model_trains_as_compiled_with_two_workers(tutorial: Path, strategy: str) -> None:
    args = ["train", *TUTORIAL_RUN, f"run.name={strategy}", f"distribute.strategy={strategy}"]
    done = run_harness([*args, "training.batch_size=16", "--workers", "2"], tutorial)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = check_tutorial_run(tutorial / "runs" / strategy, done.stdout)
    assert report["training"]["replicas"] == 2 and report["training"]["global_batch_size"] == 32


# --- which loss: config, compile() or automatic ----------------------------------------------------


def linear_model(compiled: dict[str, Any] | None = None, activation: str | None = None) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=activation)])
    if compiled is not None:
        model.compile(**compiled)
    return model


def loss_for(model: keras.Model, *overrides: str, task: str = "classification") -> Any:
    training = load_config(None, list(overrides)).training
    return choose_loss(training, model, task, 3, compiled_setup(model))


LABELS = np.array([0, 2, 1])
SCORES = np.array([[2.0, 0.1, -1.0], [0.0, 0.5, 3.0], [0.2, 1.5, 0.1]], np.float32)


def sparse_logits_loss() -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(LABELS, SCORES, from_logits=True))


def test_a_compiled_loss_is_used_per_example() -> None:
    model = tutorial_model()
    choice = choose_loss(load_config(None, []).training, model, "classification", 10, compiled_setup(model))
    assert (choice.text, choice.source, choice.logits) == (
        "SparseCategoricalCrossentropy(from_logits=True)",
        "the model's compile()",
        True,
    )
    scores = np.zeros((3, 10), np.float32)
    scores[:, :3] = SCORES
    expected = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(LABELS, scores, from_logits=True)
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(choice.fn(LABELS, scores)), expected, rtol=1e-5)


def test_explicit_training_loss_overrides_compile_and_follows_the_head() -> None:
    model = linear_model({"loss": "mse", "optimizer": "sgd"})
    choice = loss_for(model, "training.loss=categorical_crossentropy")
    assert choice.source == "training.loss" and choice.text == "CategoricalCrossentropy(from_logits=True)"
    assert any("linear layer" in note for note in choice.notes)
    assert any("replaces the model's compile() loss" in note for note in choice.notes)
    # integer labels are one-hot encoded for the one-hot loss: the same values as the sparse loss
    np.testing.assert_allclose(keras.ops.convert_to_numpy(choice.fn(LABELS, SCORES)), sparse_logits_loss(), rtol=1e-5)


def test_explicit_from_logits_mapping() -> None:
    choice = loss_for(linear_model(), "training.loss={name: sparse_categorical_crossentropy, from_logits: true}")
    assert choice.logits and choice.text == "SparseCategoricalCrossentropy(from_logits=True)"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(choice.fn(LABELS, SCORES)), sparse_logits_loss(), rtol=1e-5)


def test_auto_loss_on_a_linear_head_takes_logits_and_says_so() -> None:
    choice = loss_for(linear_model())
    assert choice.source == "training.loss=auto for classification" and choice.logits
    assert choice.text == "SparseCategoricalCrossentropy(from_logits=True)"
    assert choice.notes and "from_logits=True" in choice.notes[0]
    softmax_choice = loss_for(linear_model(activation="softmax"))
    assert not softmax_choice.logits and softmax_choice.text == "SparseCategoricalCrossentropy()"


def test_loss_kwargs_reach_the_loss() -> None:
    choice = loss_for(
        linear_model(activation="softmax"),
        "training.loss={name: categorical_crossentropy, kwargs: {label_smoothing: 0.1}}",
    )
    assert choice.text == "CategoricalCrossentropy(label_smoothing=0.1)"


@pytest.mark.parametrize(
    ("loss", "task", "words"),
    [
        ("mse", "classification", ["regression loss", "classification (3 classes)", "data.task=regression"]),
        ("sparse_categorical_crossentropy", "regression", ["classification loss", "regression (3 target(s))"]),
        ("hinge", "regression", ["classification loss"]),
    ],
)
def test_a_loss_that_does_not_fit_the_task_is_refused(loss: str, task: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        loss_for(linear_model(), f"training.loss={loss}", task=task)
    assert all(word in str(err.value) for word in words), str(err.value)


def test_a_compiled_regression_loss_on_classification_data_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"compile\(loss=mean_squared_error\) is a regression loss"):
        loss_for(linear_model({"loss": "mean_squared_error", "optimizer": "sgd"}))


def test_a_compiled_custom_loss_gets_the_labels_as_they_are() -> None:
    seen: list[Any] = []

    def my_loss(y_true: Any, y_pred: Any) -> Any:
        seen.append(y_true)
        return keras.ops.mean(keras.ops.square(y_pred), axis=-1)

    choice = loss_for(linear_model({"loss": my_loss, "optimizer": "sgd"}))
    assert choice.source == "the model's compile()" and choice.text == "my_loss"
    choice.fn(LABELS, SCORES)
    assert np.asarray(seen[0]).tolist() == LABELS.tolist()


# --- which optimizer -------------------------------------------------------------------------------


def optimizer_for(model: keras.Model, *overrides: str, replicas: int = 1) -> Any:
    return choose_optimizer(load_config(None, list(overrides)), compiled_setup(model), replicas, steps_per_epoch=10)


def test_a_compiled_optimizer_is_rebuilt_with_its_settings() -> None:
    model = tutorial_model()
    choice = optimizer_for(model)
    assert isinstance(choice.optimizer, keras.optimizers.SGD)
    assert choice.optimizer is not model.optimizer  # made anew in the current (strategy) scope
    assert float(keras.ops.convert_to_numpy(choice.optimizer.learning_rate)) == pytest.approx(0.001)
    assert (choice.text, choice.source) == ("SGD(learning_rate=0.001)", "the model's compile()")


def test_explicit_training_optimizer_overrides_compile() -> None:
    choice = optimizer_for(tutorial_model(), "training.optimizer.name=nadam", "training.optimizer.learning_rate=0.01")
    assert isinstance(choice.optimizer, keras.optimizers.Nadam)
    assert choice.source == "training.optimizer" and choice.text == "Nadam(learning_rate=0.01)"
    assert any("replaces the model's compile() optimizer SGD(learning_rate=0.001)" in n for n in choice.notes)
    assert isinstance(choice.optimizer._learning_rate, WarmupSchedule)  # the harness schedule applies


def test_explicit_schedule_and_scaling_apply_to_the_compiled_learning_rate() -> None:
    choice = optimizer_for(tutorial_model(), "training.schedule.name=step", "distribute.lr_scaling=linear", replicas=2)
    schedule = choice.optimizer._learning_rate
    assert isinstance(schedule, WarmupSchedule) and schedule.kind == "step"
    assert schedule.base_lr == pytest.approx(0.002)
    assert isinstance(choice.optimizer, keras.optimizers.SGD)


def test_a_compiled_learning_rate_schedule_cannot_take_a_harness_schedule_on_top() -> None:
    decay = keras.optimizers.schedules.ExponentialDecay(0.01, 100, 0.5)
    model = linear_model({"loss": "mse", "optimizer": keras.optimizers.SGD(learning_rate=decay)})
    kept = optimizer_for(model).optimizer._learning_rate
    assert isinstance(kept, keras.optimizers.schedules.ExponentialDecay)  # kept as compiled
    with pytest.raises(ConfigError, match="training.schedule cannot apply"):
        optimizer_for(model, "training.schedule.name=cosine")


def test_an_uncompiled_model_gets_the_default_optimizer() -> None:
    choice = optimizer_for(linear_model())
    assert isinstance(choice.optimizer, keras.optimizers.Adam)
    assert choice.source == "the default training.optimizer" and choice.text == "Adam(learning_rate=0.002)"


@pytest.mark.parametrize(
    ("name", "kwargs", "cls"),
    [
        ("nadam", {}, keras.optimizers.Nadam),
        ("lion", {"beta_1": 0.95}, keras.optimizers.Lion),
        ("adamax", {}, keras.optimizers.Adamax),
        ("adagrad", {"initial_accumulator_value": 0.2}, keras.optimizers.Adagrad),
        ("ftrl", {}, keras.optimizers.Ftrl),
        ("adafactor", {}, keras.optimizers.Adafactor),
        ("sgd", {"nesterov": True}, keras.optimizers.SGD),
    ],
)
def test_every_keras_optimizer_name_with_its_own_arguments(name: str, kwargs: dict[str, Any], cls: type) -> None:
    overrides = [f"training.optimizer.name={name}", f"training.optimizer.kwargs={json.dumps(kwargs)}"]
    config = load_config(None, overrides)
    check_objectives(config.training, "exp.yaml")
    optimizer = make_optimizer(config.training.optimizer, 0.01)
    assert type(optimizer) is cls
    for key, value in kwargs.items():
        assert getattr(optimizer, key) == pytest.approx(value)


# --- names known without Keras, compared with the installed Keras -----------------------------------


def test_loss_tables_match_keras() -> None:
    from keras.src.losses import ALL_OBJECTS_DICT

    keras_names_all = set(ALL_OBJECTS_DICT) - {"Loss", "LossFunctionWrapper"}
    assert keras_names_all == set(keras_names.LOSSES) | set(keras_names.LOSS_ALIASES)
    for name in keras_names_all:
        canonical = keras_names.canonical_loss(name)
        assert canonical is not None
        assert loss_class(name)().fn is keras.losses.get(canonical), name  # type: ignore[attr-defined]
        takes_logits = "from_logits" in inspect.signature(loss_class(name)).parameters
        assert takes_logits == (canonical in keras_names.FROM_LOGITS_LOSSES), name


def test_optimizer_table_matches_keras() -> None:
    from keras.src.optimizers import ALL_OBJECTS_DICT

    wrappers = {"optimizer", "lossscaleoptimizer", "multioptimizer", "optimizermap"}
    assert set(ALL_OBJECTS_DICT) - wrappers <= set(keras_names.OPTIMIZERS)
    for name in keras_names.OPTIMIZERS:
        assert issubclass(optimizer_class(name), keras.optimizers.Optimizer)


def test_optimizer_names_are_case_insensitive() -> None:
    assert load_config(None, ["training.optimizer.name=Nadam"]).training.optimizer.name == "nadam"


def test_saved_config_keeps_whether_the_optimizer_was_set(tmp_path: Path) -> None:
    """A resumed, requeued or reproduced run must make the same choice as the first one."""
    cases = (
        ([], False),
        (["training.optimizer.learning_rate=0.01"], True),
        (["training.optimizer.name=sgd", "training.optimizer.momentum=0.5"], True),
    )
    for overrides, is_set in cases:
        path = tmp_path / "config.yaml"
        path.write_text(to_yaml(load_config(None, [*overrides, "training.epochs=2"])))
        again = load_config(path)
        assert again.training.optimizer_is_set is is_set and not again.training.schedule_is_set
        assert again == load_config(None, [*overrides, "training.epochs=2"])
        check_objectives(again.training, str(path))  # adam's saved config must not set momentum
    plain = to_yaml(load_config(None, ["training.loss=huber"]))
    assert "loss: huber" in plain  # a plain name stays a plain name
    mapping = load_config(None, ["training.loss={name: binary_crossentropy, from_logits: true}"])
    (tmp_path / "m.yaml").write_text(to_yaml(mapping))
    assert load_config(tmp_path / "m.yaml").training.loss == mapping.training.loss


# --- evaluation of a logits model --------------------------------------------------------------------


def test_logits_are_evaluated_as_probabilities() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    logits = rng.normal(0, 1, (60, 3)).astype(np.float32)
    logits[np.arange(60), labels] += 2.0
    proba, note = as_class_probabilities(logits, logits=True)
    assert note is None
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    metrics = evaluate_predictions("classification", labels, proba, None)
    expected_log_loss = -np.mean(np.log(softmax(logits)[np.arange(60), labels]))
    assert metrics["log_loss"] == pytest.approx(expected_log_loss, rel=1e-4)
    assert metrics["roc_auc"] > 0.8
    assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))


def test_outputs_that_cannot_be_probabilities_are_read_as_logits_with_a_note() -> None:
    scores = np.array([[3.0, -1.0], [-2.0, 4.0]], np.float32)
    proba, note = as_class_probabilities(scores, logits=False)
    assert note is not None and "not probabilities" in note
    np.testing.assert_allclose(proba, softmax(scores))
    fine = np.array([[0.25, 0.75]], np.float32)
    assert as_class_probabilities(fine, logits=False) == (fine, None)


def test_predict_array_applies_softmax_for_a_run_that_recorded_logits(tmp_path: Path) -> None:
    model = linear_model()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    raw = predict_array(model, x)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = {"schema_version": 1, "training": {"outputs": "logits"}}
    (run_dir / "report.json").write_text(json.dumps(report))
    np.testing.assert_allclose(predict_array(model, x, run_dir=run_dir), softmax(raw), rtol=1e-5)
    report["training"]["outputs"] = "probabilities"
    (run_dir / "report.json").write_text(json.dumps(report))
    np.testing.assert_allclose(predict_array(model, x, run_dir=run_dir), raw)


# --- names, trained ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["training.loss=categorical_crossentropy"],
        ["training.optimizer.name=nadam"],
        ["training.optimizer.name=lion", "training.optimizer.learning_rate=0.0005"],
    ],
    ids=["categorical_crossentropy", "nadam", "lion"],
)
def test_keras_names_train_end_to_end(workdir: Path, capsys: pytest.CaptureFixture[str], overrides: list[str]) -> None:
    args = ["data.dataset=wine", "model.name=mlp", "training.epochs=4", "training.progress=lines", *overrides]
    assert cli.main(["train", *args]) == 0
    out = capsys.readouterr().out
    report = load_report(workdir / "runs" / "digits-cnn")
    assert report["test"]["accuracy"] > 0.6
    training = report["training"]
    assert f"loss: {training['loss']} from {training['loss_source']}" in out
    if "training.loss=categorical_crossentropy" in overrides:
        assert training["loss"] == "CategoricalCrossentropy()" and training["loss_source"] == "training.loss"
    else:
        assert training["optimizer"].lower().startswith(overrides[0].split("=")[1])


def test_a_single_logit_column_becomes_a_sigmoid_probability() -> None:
    """Binary logits (one column, as with BinaryCrossentropy(from_logits=True)): a softmax over one
    column would make every probability 1."""
    logits = np.array([[-2.0], [0.0], [3.0], [800.0], [-800.0]])
    expected = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
    np.testing.assert_allclose(softmax(logits), expected, rtol=1e-6, atol=1e-7)
    assert np.isfinite(softmax(logits)).all()
