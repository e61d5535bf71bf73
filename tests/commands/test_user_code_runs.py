"""`harness predict` and `harness evaluate` on runs whose model uses the user's own code.

Each run is trained once per module (iris, 1 epoch) from a folder holding the config and the
model module, with a relative output directory; the tests then predict from another folder in
a state like a new process: the module is forgotten and its custom layer unregistered.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from harness import cli
from harness.commands.share import code_folders
from harness.config import load_config

FAST = ["training.epochs=1", "training.progress=none", "training.batch_size=16"]
FEATURES = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)"
PACKAGE = f"usercode{uuid.uuid4().hex[:6]}"

MODELS = f'''
import keras


@keras.saving.register_keras_serializable(package="{PACKAGE}")
class Scale(keras.layers.Layer):
    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {{**super().get_config(), "factor": self.factor}}


def plain_loss(y_true, y_pred):
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)


def plain_metric(y_true, y_pred):
    return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)


def _head(inputs, x, num_outputs, activation="softmax"):
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation=activation)(x))


def custom_layer(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    return _head(inputs, Scale(0.5)(inputs), num_outputs)


def plain_functions(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    model = _head(inputs, keras.layers.Dense(8, activation="relu")(inputs), num_outputs)
    model.compile(optimizer="adam", loss=plain_loss, metrics=[plain_metric])
    return model


def python_lambda(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    return _head(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs), num_outputs)


def logits_for_a_probability_loss(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    model = _head(inputs, keras.layers.Dense(8, activation="relu")(inputs), num_outputs, activation=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model
'''

BUILDERS = ("custom_layer", "plain_functions", "python_lambda", "logits_for_a_probability_loss")


def forget(module: str) -> None:
    """What a new process knows of the user's code: nothing imported, nothing registered."""
    sys.modules.pop(module, None)
    registered = keras.saving.get_custom_objects()
    for name in [name for name in registered if name.startswith(f"{PACKAGE}>")]:
        del registered[name]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder with the config, the model module beside it and one run per builder in runs/."""
    folder = tmp_path_factory.mktemp("project")
    module = f"models_{uuid.uuid4().hex[:8]}"
    (folder / f"{module}.py").write_text(textwrap.dedent(MODELS), encoding="utf-8")
    config = folder / "iris.yaml"
    config.write_text("run:\n  output_dir: runs\ndata:\n  dataset: iris\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for builder in BUILDERS:
            code = cli.main(["train", str(config), *FAST, f"run.name={builder}", f"model.name={module}:{builder}"])
            assert code == 0, builder
    forget(module)
    yield folder, module
    forget(module)


@pytest.fixture
def elsewhere(project: tuple[Path, str], workdir: Path) -> Iterator[Path]:
    """New rows in an unrelated working folder; the user's code is forgotten again afterwards."""
    lines = [FEATURES, "5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "5.9,3.0,4.2,1.5"]
    (workdir / "new.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    yield workdir
    forget(project[1])


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def probabilities(path: Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([[float(value) for key, value in row.items() if key.startswith("prob_")] for row in rows])


def check_predicts_and_evaluates(run: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code, _, err = run_cli(capsys, "predict", str(run), str(folder / "new.csv"))
    assert code == 0, err
    probs = probabilities(folder / "new.predictions.csv")
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    code, _, evaluate_err = run_cli(capsys, "evaluate", str(run))
    assert code == 0, evaluate_err
    return err


def test_a_registered_custom_layer_is_imported_from_where_training_found_it(
    project: tuple[Path, str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_predicts_and_evaluates(project[0] / "runs" / "custom_layer", elsewhere, capsys)


def test_a_plain_loss_and_metric_function_do_not_stop_predict_or_evaluate(
    project: tuple[Path, str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = project[0] / "runs" / "plain_functions"
    check_predicts_and_evaluates(run, elsewhere, capsys)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["test"]["n"] > 0 and "accuracy" in json.dumps(report["test"])


def test_a_python_lambda_is_refused_with_the_real_reason(
    project: tuple[Path, str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = project[0] / "runs" / "python_lambda"
    for args in (["predict", str(run), str(elsewhere / "new.csv")], ["evaluate", str(run)]):
        code, _, err = run_cli(capsys, *args)
        assert code == 2
        assert "Lambda layer 'lambda' wraps a Python lambda, which cannot be loaded safely" in err
        assert "layer subclass" in err and "safe_mode=False" in err
        assert "Keras does not know" not in err


def test_custom_code_that_cannot_be_found_is_named_with_the_folders_searched(
    project: tuple[Path, str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = elsewhere / "moved" / "custom_layer"
    shutil.copytree(project[0] / "runs" / "custom_layer", moved)
    env = json.loads((moved / "env.json").read_text())
    assert str(project[0].resolve()) in env["code_folders"], "training records where it imported from"
    env["code_folders"] = [str(elsewhere / "code-that-was-deleted")]
    (moved / "env.json").write_text(json.dumps(env))
    code, _, err = run_cli(capsys, "predict", str(moved), str(elsewhere / "new.csv"))
    assert code == 2
    assert "custom objects Keras does not know: Scale" in err
    assert f"model.name '{project[1]}:custom_layer' does not import" in err and str(elsewhere) in err


def test_outputs_evaluated_as_logits_are_predicted_as_probabilities_with_a_note(
    project: tuple[Path, str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = project[0] / "runs" / "logits_for_a_probability_loss"
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert "read as logits" in report["test"]["outputs"]  # what training's evaluation did
    err = check_predicts_and_evaluates(run, elsewhere, capsys)
    assert "note: the model's outputs are not probabilities" in err and "softmax" in err
    assert probabilities(elsewhere / "new.predictions.csv").min() >= 0.0


def test_code_folders_of_a_run_that_did_not_record_them(tmp_path: Path, workdir: Path) -> None:
    """Runs from before env.json recorded `code_folders`: the config folder and the training
    working directory, as far as the run directory shows them."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "exp.yaml").write_text("run:\n  name: x\n", encoding="utf-8")
    run = project / "out" / "x"
    run.mkdir(parents=True)
    (run / "env.json").write_text(json.dumps({"command": "harness train --workers 2 configs/exp.yaml a=1"}))
    config = load_config(None, ["run.output_dir=out", "run.name=x"])
    assert code_folders(run, config) == (project / "configs", project, workdir.resolve())
    moved = tmp_path / "copy" / "out" / "x"
    shutil.copytree(run, moved)
    assert code_folders(moved, config) == (tmp_path / "copy", workdir.resolve())  # no configs/exp.yaml there
    assert code_folders(tmp_path / "x", config) == (workdir.resolve(),)  # not under out/: no training folder
    absolute = load_config(None, [f"run.output_dir={project / 'out'}", "run.name=x"])
    assert code_folders(run, absolute) == (workdir.resolve(),)
