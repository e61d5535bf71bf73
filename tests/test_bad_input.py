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


# --- data, training loop and saved models ---

IRIS_MLP = ["data.dataset=iris", "model.name=mlp"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time, to prove nothing changed."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run_bad_unchanged(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`run_bad`, and the working folder holds exactly the files it held before."""
    before = snapshot(workdir)
    err = run_bad(workdir, capsys, *args)
    assert snapshot(workdir) == before, "bad input must not write, change or delete files"
    return err


def garbage_rows(cells: dict[int, str]) -> str:
    """A header and 100 rows; 'age' is numeric but for `cells` (row index -> text)."""
    rows = [f"{cells.get(i, str(20 + i % 50))},{'rgb'[i % 3]},{i % 2}" for i in range(100)]
    return "age,color,label\n" + "\n".join(rows) + "\n"


def test_numeric_csv_column_with_garbage_cells(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = csv_file(workdir, garbage_rows({3: "abc", 50: "1.2.3", 60: "NA"}))
    err = run_bad_unchanged(
        workdir, capsys, "data.dataset=csv", f"data.path={path}", "data.target=label", "model.name=mlp"
    )
    assert "table.csv" in err and "'age'" in err
    assert "line 5: 'abc'" in err and "line 52: '1.2.3'" in err and "'NA'" not in err
    assert "header being line 1" in err and "data.coerce_numeric=true" in err


def test_csv_numbers_with_a_decimal_comma(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "\n".join(f"{i},25;{i % 2}" for i in range(40))
    path = csv_file(workdir, "price;label\n" + rows + "\n")
    err = run_bad_unchanged(
        workdir, capsys, "data.dataset=csv", f"data.path={path}", "data.target=label", "model.name=mlp"
    )
    assert "table.csv" in err and "'price'" in err and "decimal comma" in err and "line 2: '0,25'" in err


def test_batch_size_larger_than_the_training_split(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad_unchanged(workdir, capsys, *IRIS_MLP, "training.batch_size=1000000000")
    assert "training.batch_size=1000000000" in err and "106 training samples" in err
    assert "training.batch_size=106 or less" in err


def test_synthetic_images_beyond_memory(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad_unchanged(
        workdir, capsys, "data.dataset=synthetic_images", "data.synthetic.samples=100000000", "model.name=mlp"
    )
    assert "data.synthetic.samples=100000000" in err and "data.synthetic.image_shape=[32, 32, 3]" in err
    assert "needs about 6.1 TB" in err and "available" in err


def test_image_size_beyond_memory(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    for name in ("cats", "dogs"):
        (workdir / "pics" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(workdir / "pics" / name / f"{i}.png")
    err = run_bad_unchanged(
        workdir,
        capsys,
        "data.dataset=image_folder",
        f"data.path={workdir / 'pics'}",
        "data.image_size=[200000,200000]",
        "model.name=mlp",
    )
    assert "data.image_size=[200000, 200000]" in err and "6 rgb images" in err and "needs about" in err


def test_truncated_keras_file_is_not_called_missing(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.save(workdir / "whole.keras")
    data = (workdir / "whole.keras").read_bytes()
    (workdir / "cut.keras").write_bytes(data[: len(data) // 2])
    err = run_bad_unchanged(workdir, capsys, *IRIS_MLP, f"model.name={workdir / 'cut.keras'}")
    assert "cut.keras" in err and "not a valid Keras model file" in err and "truncated" in err
    assert "not found" not in err.lower() and "does not exist" not in err
