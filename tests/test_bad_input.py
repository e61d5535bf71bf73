"""Every kind of bad input: exit code 2, one clear message, and nothing written."""

from __future__ import annotations

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


# --- run directory ---


def run_refused(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `harness train ARGS`; check exit 2, one message, no traceback, and nothing changed anywhere."""
    from .test_rundir import snapshot

    before = snapshot(workdir)
    code = cli.main(["train", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert snapshot(workdir) == before, "a refused run must write and delete nothing"
    return err


@pytest.fixture
def around_runs(workdir: Path) -> Path:
    """Runs and other files around run.output_dir that --overwrite must never touch."""
    from .test_rundir import make_run

    runs = workdir / "runs"
    make_run(runs, "sibling")
    make_run(runs, "unmarked", marker=False)
    (workdir / "beside.txt").write_text("mine")
    make_run(workdir / "elsewhere", "marked")
    make_run(runs / "group", "nested")
    return runs


@pytest.mark.parametrize("name", [".", "..", "ABSOLUTE", "group/nested", "unmarked"])
def test_overwrite_never_deletes_what_is_not_a_run(
    workdir: Path, around_runs: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    from .test_rundir import IRIS

    name = str(workdir / "elsewhere" / "marked") if name == "ABSOLUTE" else name
    err = run_refused(workdir, capsys, *IRIS, f"run.name={name}", "--overwrite")
    assert "run.name" in err


def test_training_a_completed_run_again_writes_nothing(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.train import rundir

    from .test_rundir import IRIS, fake_run

    run_dir = fake_run(workdir, "done", 2, "training.epochs=2")
    err = run_refused(workdir, capsys, *IRIS, "run.name=done", "training.epochs=2")
    assert str(Path("runs") / "done") in err and "already exists" in err
    assert rundir.read_state(run_dir)["state"] == "completed"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("training.optimizer.learning_rate=0.5", ["training.optimizer.learning_rate", "0.002", "0.5"]),
        ("model.hidden_units=[4]", ["model.hidden_units", "[8]", "[4]"]),
        ("data.dataset=wine", ["data.dataset", "'iris'", "'wine'"]),
        ("training.epochs=2", ["training.epochs=2", "lower than the 3 epochs already done", "training.epochs=5"]),
    ],
)
def test_resume_with_a_setting_that_may_not_change(
    workdir: Path, capsys: pytest.CaptureFixture[str], override: str, words: list[str]
) -> None:
    from .test_rundir import IRIS, fake_run

    fake_run(workdir, "r", 3, "training.epochs=5")
    err = run_refused(workdir, capsys, *IRIS, "run.name=r", "training.epochs=5", override, "--resume")
    assert str(Path("runs") / "r") in err
    for word in words:
        assert word in err


def test_resume_of_a_run_directory_that_is_a_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "runs").mkdir()
    (workdir / "runs" / "r").write_text("not a run")
    err = run_refused(workdir, capsys, *FAST, "run.name=r", "--resume")
    assert str(Path("runs") / "r") in err and "is not a folder" in err


@pytest.mark.parametrize("output_dir", ["out", "out/runs"])
def test_output_dir_that_is_a_file_is_refused_before_loading_data(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, output_dir: str
) -> None:
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was loaded before run.output_dir was checked")

    monkeypatch.setattr("harness.train.run.prepare_data", no_data)
    (workdir / "out").write_text("a file")
    err = run_refused(workdir, capsys, *FAST, f"run.output_dir={output_dir}")
    assert "run.output_dir" in err and "is a file" in err and str(workdir / "out") in err
