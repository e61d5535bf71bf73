"""Every kind of bad input: exit code 2, one clear message, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli

FAST = ["training.epochs=1", "training.progress=none"]


def run_bad(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `harness train ARGS`, check exit code 2 and that no run directory appeared."""
    code = cli.main(["train", *FAST, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not (workdir / "runs").exists(), "bad input must not create a run directory"
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def csv_file(workdir: Path, text: str) -> Path:
    path = workdir / "table.csv"
    path.write_text(text)
    return path


def test_unknown_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "training.epochz=3")
    assert "training.epochz" in err and "Did you mean training.epochs" in err


def test_wrong_type(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "training.batch_size=big")
    assert "training.batch_size" in err and "'big'" in err


@pytest.mark.parametrize("override", ["training.epochs=0", "training.batch_size=0", "training.epochs=-2"])
def test_non_positive_epochs_or_batch(
    workdir: Path, capsys: pytest.CaptureFixture[str], override: str
) -> None:
    err = run_bad(workdir, capsys, override)
    assert override.split("=")[0] in err and "greater than 0" in err


def test_malformed_yaml(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = workdir / "bad.yaml"
    path.write_text("training:\n  epochs: 3\n   batch_size: 2\n")
    err = run_bad(workdir, capsys, str(path))
    assert "bad.yaml" in err and "line 3" in err and "column" in err


def test_missing_data_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(
        workdir,
        capsys,
        "data.dataset=csv",
        f"data.path={workdir / 'nope.csv'}",
        "data.target=y",
        "model.name=mlp",
    )
    assert "nope.csv" in err


def test_csv_without_target_column(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "\n".join(f"{i},{i * 2},{'ab'[i % 2]}" for i in range(40))
    path = csv_file(workdir, "a,b,label\n" + rows + "\n")
    err = run_bad(
        workdir, capsys, "data.dataset=csv", f"data.path={path}", "data.target=lable", "model.name=mlp"
    )
    assert "lable" in err and "table.csv" in err and "label" in err


def test_label_column_with_one_class(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "\n".join(f"{i},{i * 2},same" for i in range(40))
    path = csv_file(workdir, "a,b,label\n" + rows + "\n")
    err = run_bad(
        workdir, capsys, "data.dataset=csv", f"data.path={path}", "data.target=label", "model.name=mlp"
    )
    assert "label" in err and "class" in err


def test_unknown_dataset_lists_known(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "data.dataset=digitz")
    assert "digitz" in err and "digits" in err and "iris" in err


def test_unknown_model_lists_known(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "model.name=resnett")
    assert "resnett" in err and "mlp" in err and "cnn" in err


def test_import_path_that_does_not_import(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "model.name=no_such_pkg.models:build")
    assert "no_such_pkg.models:build" in err


def test_keras_file_that_is_not_a_model(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = workdir / "fake.keras"
    fake.write_text("not a model")
    err = run_bad(workdir, capsys, f"model.name={fake}")
    assert "fake.keras" in err


def test_callback_import_path_that_does_not_import(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "training.callbacks=['no_such_mod:make']")
    assert "training.callbacks[0]" in err and "no_such_mod" in err


def test_unknown_loss(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "training.loss=hinge_of_doom")
    assert "training.loss" in err and "hinge_of_doom" in err


def test_existing_run_directory_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = workdir / "runs" / "digits-cnn"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("precious")
    code = cli.main(["train", *FAST])
    err = capsys.readouterr().err
    assert code == 2
    assert "already exists" in err and "--resume" in err and "--overwrite" in err
    assert (existing / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]


def test_resume_without_checkpoint(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--resume", *FAST])
    assert code == 2
    assert "cannot resume" in capsys.readouterr().err


def test_two_config_files(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "a.yaml", "b.yaml"]) == 2
    assert "only one config file" in capsys.readouterr().err


def test_predict_on_missing_run_dir(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", str(workdir / "nope"), str(workdir / "x.csv")]) == 2
    assert "nope" in capsys.readouterr().err


def test_report_on_non_run_dir(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(workdir)]) == 2
    assert str(workdir) in capsys.readouterr().err


# --- models and imports ---

BAD_BUILDERS = """
import keras

def takes_units(input_shape, num_outputs, units):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(inputs))

def fixed_image_model():
    inputs = keras.Input((28, 28))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(x))
"""


@pytest.fixture
def builders(workdir: Path) -> Iterator[str]:
    """A module of builders in the working directory, forgotten after the test."""
    import sys
    import uuid

    name = f"bad_builders_{uuid.uuid4().hex[:8]}"
    (workdir / f"{name}.py").write_text(BAD_BUILDERS)
    yield name
    sys.modules.pop(name, None)


def test_builder_kwarg_it_does_not_take(
    workdir: Path, capsys: pytest.CaptureFixture[str], builders: str
) -> None:
    err = run_bad(workdir, capsys, "data.dataset=wine", f"model.name={builders}:takes_units", "model.kwargs={unit: 3}")
    assert f"{builders}:takes_units" in err and "model.kwargs unit (did you mean units?)" in err
    assert "takes_units(input_shape, num_outputs, units)" in err and "input_shape=(13,)" in err


def test_builder_parameter_the_harness_cannot_supply(
    workdir: Path, capsys: pytest.CaptureFixture[str], builders: str
) -> None:
    err = run_bad(workdir, capsys, "data.dataset=wine", f"model.name={builders}:takes_units")
    assert "requires units" in err and "model.kwargs.units" in err and "num_outputs=3" in err


def test_zero_argument_model_of_another_shape(
    workdir: Path, capsys: pytest.CaptureFixture[str], builders: str
) -> None:
    err = run_bad(workdir, capsys, "data.dataset=wine", f"model.name={builders}:fixed_image_model")
    assert "(28, 28)" in err and "(13,)" in err and "take `input_shape`" in err


def test_missing_model_module_lists_config_folder_and_cwd(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = workdir / "project"
    folder.mkdir()
    config = folder / "exp.yaml"
    config.write_text("model:\n  name: not_beside_the_config:build\n")
    err = run_bad(workdir, capsys, str(config))
    assert "not_beside_the_config:build" in err and "not found" in err
    assert str(folder.resolve()) in err and str(workdir.resolve()) in err
    assert sorted(p.name for p in folder.iterdir()) == ["exp.yaml"]
