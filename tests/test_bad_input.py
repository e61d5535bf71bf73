"""Every kind of bad input: exit code 2, one clear message, and nothing written."""

from __future__ import annotations

import json
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


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its content (None for folders): what a refusal must not change."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


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
# --- config ---



def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with the content of its files, to prove nothing was written or deleted."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def config_file(workdir: Path, data: bytes | str, name: str = "exp.yaml") -> Path:
    path = workdir / name
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "override",
    [
        "training.optimizer.learning_rate=.inf",
        "training.optimizer.learning_rate=inf",
        "data.validation_split=.nan",
        "distribute.timeout_s=-.inf",
    ],
)
def test_config_non_finite_number(workdir: Path, capsys: pytest.CaptureFixture[str], override: str) -> None:
    err = run_bad(workdir, capsys, override)
    assert override.split("=")[0] in err and "finite number" in err and "(command line)" in err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("training.epochs=true", "training.epochs"),
        ("training.batch_size=false", "training.batch_size"),
        ("model.filters=[32, true]", "model.filters[1]"),
        ("model.freeze=true", "model.freeze"),
    ],
)
def test_config_boolean_for_a_number(
    workdir: Path, capsys: pytest.CaptureFixture[str], override: str, key: str
) -> None:
    err = run_bad(workdir, capsys, override)
    assert key in err and "not a boolean" in err and ("True" in err or "False" in err)


def test_config_boolean_for_a_number_in_a_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(workdir, "training:\n  batch_size: true\n")
    err = run_bad(workdir, capsys, str(path))
    assert "exp.yaml" in err and "training.batch_size (line 2)" in err and "not a boolean" in err


@pytest.mark.parametrize("seed", ["4294967296", "-1"])
def test_config_seed_out_of_range(workdir: Path, capsys: pytest.CaptureFixture[str], seed: str) -> None:
    err = run_bad(workdir, capsys, f"run.seed={seed}")
    assert f"run.seed={seed}" in err and ("4294967295" in err or "greater than or equal to 0" in err)


def test_config_duplicate_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(workdir, "training:\n  epochs: 1\n  batch_size: 8\n  epochs: 50\n")
    err = run_bad(workdir, capsys, str(path))
    assert "exp.yaml" in err and "training.epochs twice" in err and "lines 2 and 4" in err


def test_config_not_utf8(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(workdir, b"run:\n  name: r\xe9sum\xe9\n", name="latin1.yaml")
    err = run_bad(workdir, capsys, str(path))
    assert "latin1.yaml" in err and "not UTF-8" in err and "byte offset 14 (line 2)" in err


def test_config_alias_bomb(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    levels = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = config_file(workdir, "model:\n  kwargs:\n" + "".join(f"    {line}\n" for line in levels))
    err = run_bad(workdir, capsys, str(path))
    assert "exp.yaml" in err and "aliases" in err and "more than 100000 values" in err
    assert len(err) < 500


def test_config_huge_value_is_echoed_briefly(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "run.name=" + "n" * 100_000)
    assert "run.name" in err and "(100000 characters)" in err and len(err) < 1000


def test_config_path_is_a_directory(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "confdir").mkdir()
    err = run_bad(workdir, capsys, str(workdir / "confdir"))
    assert "confdir" in err and "is a directory" in err and "does not exist" not in err


def test_config_xla_with_deterministic_ops(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "training.jit_compile=true")
    assert "training.jit_compile=true" in err and "run.deterministic=true" in err
    assert "run.deterministic=false" in err


def test_config_empty_output_dir(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_bad(workdir, capsys, "run.output_dir=")
    assert "run.output_dir" in err and "empty" in err


@pytest.mark.parametrize("name", [".", "..", "ABSOLUTE", "nested/run", "../outside", ""])
def test_config_run_name_not_one_component_deletes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """With --overwrite, such names once deleted sibling runs, files beside runs/ or an absolute folder."""
    (workdir / "runs" / "other-run").mkdir(parents=True)
    (workdir / "runs" / "other-run" / "keep.txt").write_text("a sibling run")
    (workdir / "beside-runs.txt").write_text("not a run")
    (workdir / "victim").mkdir()
    (workdir / "victim" / "data.csv").write_text("precious")
    name = str(workdir / "victim") if name == "ABSOLUTE" else name
    before = tree(workdir)
    code = cli.main(["train", *FAST, f"run.name={name}", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "run.name" in err and "one plain folder name" in err and repr(name) in err
    assert tree(workdir) == before



def test_config_duplicate_key_in_a_cluster_profile(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profiles = config_file(
        workdir, "profiles:\n  mine:\n    partition: gpu\n    nodes: 1\n    partition: cpu\n", "clusters.yaml"
    )
    before = tree(workdir)
    code = cli.main(["submit", "--dry-run", "--profile", "mine", "--profiles", str(profiles)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert "clusters.yaml" in err and "profiles.mine.partition twice" in err and "lines 3 and 5" in err
    assert tree(workdir) == before
# --- run directory ---


def run_refused(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `harness train ARGS`; check exit 2, one message, no traceback, and nothing changed anywhere."""
    from tests.rundir.test_lifecycle import snapshot

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
    from tests.rundir.test_lifecycle import make_run

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
    from tests.rundir.test_lifecycle import IRIS

    name = str(workdir / "elsewhere" / "marked") if name == "ABSOLUTE" else name
    err = run_refused(workdir, capsys, *IRIS, f"run.name={name}", "--overwrite")
    assert "run.name" in err


def test_training_a_completed_run_again_writes_nothing(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.train import rundir
    from tests.rundir.test_lifecycle import IRIS, fake_run

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
    from tests.rundir.test_lifecycle import IRIS, fake_run

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
# --- launcher, reports, status, logs and cancel ---


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `harness ARGS`; check exit code 2 and one error message without a traceback."""
    code = cli.main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_workers_with_a_bad_model_name_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every rank exits 2, and so does the launcher (it used to turn any failure into 1)."""
    err = run_bad(workdir, capsys, "data.dataset=wine", "model.name=nope", "--workers", "2")
    assert "rank" in err and "exited with code 2" in err and "unknown model 'nope'" in err
    assert sorted(p.name for p in workdir.iterdir()) == []  # not even an empty runs/ or heartbeat folder


def finished_run(workdir: Path, name: str) -> Path:
    run_dir = workdir / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(json.dumps({"schema_version": 1, "run": {"name": name}}))
    return run_dir


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("existing.txt", ["existing.txt", "existing file"]),
        (".", ["current folder"]),
        ("..", ["current folder or one of its parents"]),
        ("{cwd}", ["current folder"]),
        ("runs", ["holds it"]),
        ("runs/a", ["is run directory"]),
        ("notes", ["notes", "did not create", "not empty"]),
    ],
)
def test_report_out_is_refused_unless_harness_made_it(
    workdir: Path, capsys: pytest.CaptureFixture[str], out: str, words: list[str]
) -> None:
    runs = [finished_run(workdir, "a"), finished_run(workdir, "b")]
    (workdir / "existing.txt").write_text("precious")
    (workdir / "notes").mkdir()
    (workdir / "notes" / "todo.md").write_text("precious")
    before = snapshot(workdir)
    err = refused(capsys, "report", *map(str, runs), "--out", out.format(cwd=workdir))
    assert all(word in err for word in words), err
    assert snapshot(workdir) == before


def test_report_out_replaces_only_its_own_comparison(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [str(finished_run(workdir, "a")), str(finished_run(workdir, "b"))]
    (workdir / "empty").mkdir()
    for out in ("compare", "compare", "empty"):  # new, made by harness (marker), empty
        assert cli.main(["report", *runs, "--out", out]) == 0, capsys.readouterr().err
        assert (workdir / out / ".harness-comparison").is_file() and (workdir / out / "comparison.md").is_file()
    (workdir / "compare" / "mine.txt").write_text("kept")
    assert cli.main(["report", *runs, "--out", "compare"]) == 0
    assert (workdir / "compare" / "mine.txt").read_text() == "kept"  # nothing in it is deleted


def test_report_with_a_bad_setting_in_report_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = finished_run(workdir, "a")
    (run_dir / "report.json").write_text(json.dumps({"schema_version": 1, "config": {"report": {"html": "yes"}}}))
    before = snapshot(workdir)
    err = refused(capsys, "report", str(run_dir))
    assert "report.json" in err and "config.report.html" in err and "'yes'" in err
    assert snapshot(workdir) == before


def submitted_run(workdir: Path, state: object = None, **submission: object) -> Path:
    run_dir = workdir / "runs" / "s"
    run_dir.mkdir(parents=True)
    record = {"schema_version": 1, "job_id": "7", "executor": "slurm", "tasks": 2, "epochs": 3, **submission}
    (run_dir / "submission.json").write_text(json.dumps(record))
    if isinstance(state, bytes):
        (run_dir / "state.json").write_bytes(state)
    elif state is not None:
        (run_dir / "state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    return run_dir


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ({"state": "running", "epoch": "three"}, ["epoch", "'three'", "whole number"]),
        ({"state": "running", "epochs": [10]}, ["epochs", "[10]"]),
        ({"state": "failed", "requeues": -1}, ["requeues", "-1"]),
        ({"state": ["running"]}, ["state", "a string"]),
        ({"state": "running", "epoch": True}, ["epoch", "True"]),
        ({"state": "running", "updated": 5}, ["updated", "5"]),
        ('{"state": "runn', ["not valid JSON"]),
        ("[1, 2]", ["JSON object", "list"]),
        ("{}".encode("utf-16"), ["not UTF-8"]),
    ],
    ids=["epoch", "epochs", "requeues", "state", "bool", "updated", "cut", "list", "utf16"],
)
def test_status_of_a_damaged_state_json(
    workdir: Path, capsys: pytest.CaptureFixture[str], state: object, words: list[str]
) -> None:
    run_dir = submitted_run(workdir, state)
    before = snapshot(workdir)
    err = refused(capsys, "status", str(run_dir))
    assert str(run_dir / "state.json") in err and all(word in err for word in words), err
    assert snapshot(workdir) == before


def test_status_of_a_state_json_that_cannot_be_read(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = submitted_run(workdir)
    (run_dir / "state.json").mkdir()
    err = refused(capsys, "status", str(run_dir))
    assert "cannot read" in err and "state.json" in err


@pytest.mark.parametrize(
    ("submission", "words"),
    [
        ({"tasks": "two"}, ["tasks", "'two'"]),
        ({"resources": ["gpu"]}, ["resources", "an object"]),
        ({"resources": {"max_requeues": "many"}}, ["resources.max_requeues", "'many'"]),
        ({"job_folder": 3}, ["job_folder", "3"]),
        ({"job_id": "--all"}, ["job_id", "'--all'"]),
        ({"job_id": "0", "executor": "local"}, ["job_id", "process id"]),
    ],
    ids=["tasks", "resources", "max_requeues", "job_folder", "job_id-option", "job_id-0-local"],
)
@pytest.mark.parametrize("command", ["status", "logs", "cancel"])
def test_status_logs_and_cancel_of_a_damaged_submission_json(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    submission: dict[str, object],
    words: list[str],
) -> None:
    from harness.slurm import follow, scheduler

    signalled: list[object] = []
    monkeypatch.setattr(follow.os, "kill", lambda *args: signalled.append(args))
    monkeypatch.setattr(scheduler, "cancel", lambda *args: signalled.append(args))
    run_dir = submitted_run(workdir, {"state": "running"}, **submission)
    before = snapshot(workdir)
    err = refused(capsys, command, str(run_dir))
    assert str(run_dir / "submission.json") in err and all(word in err for word in words), err
    assert snapshot(workdir) == before
    assert signalled == []  # nothing was cancelled or killed (job id 0 would signal our own group)


def test_metrics_lines_that_are_not_epochs_are_skipped_by_status(workdir: Path) -> None:
    from harness.slurm import follow

    path = workdir / "metrics.jsonl"
    path.write_bytes(b'{"epoch": 1, "loss": 0.5}\n{"epoch": "x"}\n[3]\n\xff\xfe\n{"epoch": 2, "lo')
    assert follow.last_metrics(path) == {"epoch": 1, "loss": 0.5}


@pytest.mark.parametrize("command", ["status", "logs", "cancel"])
def test_follow_commands_on_targets_that_are_not_runs(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(workdir / "state"))
    monkeypatch.setenv("PATH", str(workdir / "no-slurm"))  # job ids are not asked from any scheduler
    (workdir / "plain").mkdir()
    (workdir / "plain" / "keep.txt").write_text("precious")
    (workdir / "a-file").write_text("precious")
    before = snapshot(workdir)
    assert "has no submission.json" in refused(capsys, command, str(workdir / "plain"))
    assert "neither a run directory nor a job id" in refused(capsys, command, str(workdir / "a-file"))
    assert "not a usable path" in refused(capsys, command, "x" * 5000)
    index = workdir / "state" / "harness" / "jobs.jsonl"
    index.parent.mkdir(parents=True)
    index.write_text('{"job_id": "5"}\n')  # a damaged line of the job index
    assert str(index) in refused(capsys, command, "5")
    index.unlink()
    assert "not in this user's submission index" in refused(capsys, command, "5")
    assert snapshot(workdir) == {**before, "state": None, "state/harness": None}
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


# --- data shapes ---

SHAPE_BUILDERS = """
import keras


def ten_by_ten(num_outputs):
    return keras.Sequential(
        [keras.Input((10, 10)), keras.layers.Flatten(), keras.layers.Dense(num_outputs, activation="softmax")]
    )


def rgb_from_input(input_shape, num_outputs):
    return keras.Sequential(
        [keras.Input((*input_shape[:2], 2)), keras.layers.Flatten(), keras.layers.Dense(num_outputs)]
    )
"""


@pytest.fixture
def shape_builders(workdir: Path) -> Iterator[str]:
    """Builders whose input no automatic adaptation can reach, and a 12x12 NPZ beside them."""
    import sys
    import uuid

    import numpy as np

    name = f"shape_builders_{uuid.uuid4().hex[:8]}"
    (workdir / f"{name}.py").write_text(SHAPE_BUILDERS)
    rng = np.random.default_rng(0)
    np.savez(workdir / "d.npz", x=(rng.random((80, 12, 12)) * 255).astype(np.uint8), y=np.arange(80) % 2)
    yield name
    sys.modules.pop(name, None)


def test_image_shape_no_adaptation_reaches(
    workdir: Path, capsys: pytest.CaptureFixture[str], shape_builders: str
) -> None:
    err = run_bad_unchanged(
        workdir, capsys, "data.dataset=npz", "data.path=d.npz", f"model.name={shape_builders}:ten_by_ten"
    )
    assert f"{shape_builders}:ten_by_ten" in err and "(10, 10)" in err and "(12, 12, 1)" in err
    assert "data.image_size=[10, 10]" in err and "no automatic adaptation applies" in err


def test_channel_count_no_adaptation_reaches(
    workdir: Path, capsys: pytest.CaptureFixture[str], shape_builders: str
) -> None:
    err = run_bad_unchanged(
        workdir, capsys, "data.dataset=npz", "data.path=d.npz", f"model.name={shape_builders}:rgb_from_input"
    )
    assert "(12, 12, 2)" in err and "(12, 12, 1)" in err and "keras.Input((12, 12, 1))" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["data.dataset=iris", "data.image_size=[32,32]"], ["data.image_size=[32, 32]", "iris", "shape (4,)"]),
        (["data.dataset=digits", "data.image_size=[0,32]"], ["data.image_size", "0"]),
        (["data.dataset=digits", "data.image_size=[32]"], ["data.image_size", "32"]),
    ],
    ids=["not-images", "zero", "one-number"],
)
def test_bad_image_size(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    err = run_bad_unchanged(workdir, capsys, *args)
    assert all(word in err for word in words), err


def test_image_size_on_a_csv(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "t.csv").write_text("a,label\n" + "".join(f"{i}.5,{i % 2}\n" for i in range(40)))
    err = run_bad_unchanged(
        workdir, capsys, "data.dataset=csv", "data.path=t.csv", "data.target=label", "data.image_size=[8,8]"
    )
    assert "data.image_size=[8, 8]" in err and "t.csv" in err and "rows of 2 columns" in err
# --- predict ---


@pytest.fixture
def penguin_run(workdir: Path) -> Path:
    """A run directory's preprocessing (penguins-like CSV, no model yet): predict input is checked first."""
    from harness.config.schema import DataConfig
    from harness.data import prepare_data
    from tests.commands.test_predict import penguins_csv

    source = penguins_csv(workdir / "penguins.csv")
    data = prepare_data(DataConfig(dataset="csv", path=str(source), target="species"), seed=0)
    run = workdir / "runs" / "penguins"
    run.mkdir(parents=True)
    data.preprocessor.save(run / "preprocessing.json")
    (run / "model.keras").write_bytes(b"not a zip archive")
    return run


def predict_bad(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `harness predict ARGS`; check exit code 2, one message without a traceback, nothing changed."""
    before = snapshot(workdir)
    code = cli.main(["predict", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert snapshot(workdir) == before, "a refused predict must not write or delete anything"
    return err


def penguin_input(workdir: Path, header: str, rows: int = 3, name: str = "new.csv") -> Path:
    from tests.commands.test_predict import penguin_rows

    path = workdir / name
    path.write_text("\n".join([header, *penguin_rows(rows)]) + "\n")
    return path


def test_predict_input_without_a_feature_column(
    workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path
) -> None:
    source = penguin_input(workdir, "island,bill_len,flipper_length_mm,gender,species")
    err = predict_bad(workdir, capsys, str(penguin_run), str(source))
    assert "new.csv" in err and "every feature column the model was trained on" in err
    assert "Missing 2: 'bill_length_mm' (did you mean 'bill_len'?), 'sex'" in err


def test_predict_unknown_id_column(workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path) -> None:
    source = penguin_input(workdir, "island,bill_length_mm,flipper_length_mm,sex,species")
    err = predict_bad(workdir, capsys, str(penguin_run), str(source), "--id-column", "specie")
    assert "--id-column" in err and "'specie' (did you mean 'species'?)" in err and "new.csv" in err


def test_predict_id_column_on_npz_input(workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path) -> None:
    import numpy as np

    np.savez(workdir / "new.npz", x=np.zeros((2, 8)))
    err = predict_bad(workdir, capsys, str(penguin_run), str(workdir / "new.npz"), "--id-column", "id")
    assert "--id-column applies to CSV input" in err and "new.npz" in err and "'index'" in err


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("new.xlsx", "PK\x03\x04", ["new.xlsx", "'.xlsx'", ".csv", ".npz"]),
        ("new.csv", "", ["new.csv", "is empty", "header row"]),
        ("new.csv", "island,bill_length_mm,flipper_length_mm,sex\n", ["new.csv", "no data rows"]),
        ("new.csv", "island,bill_length_mm,flipper_length_mm,sex\nDream,4O.1,190,male\n", ["'4O.1'", "line 2"]),
    ],
    ids=["wrong-type", "empty", "header-only", "text-in-numbers"],
)
def test_predict_unreadable_input(
    workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path, name: str, content: str, words: list[str]
) -> None:
    (workdir / name).write_text(content)
    err = predict_bad(workdir, capsys, str(penguin_run), str(workdir / name))
    assert all(word in err for word in words), err


def test_predict_missing_input(workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path) -> None:
    err = predict_bad(workdir, capsys, str(penguin_run), str(workdir / "nope.csv"))
    assert "nope.csv" in err and "does not exist" in err


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("outdir", ["outdir", "is a folder"]),
        ("new.csv", ["new.csv", "is the input file"]),
        ("runs/penguins/model.keras", ["model.keras", "file of the run directory"]),
        ("new.csv/p.csv", ["new.csv/p.csv", "is a file, not a folder"]),
    ],
    ids=["folder", "the-input", "run-file", "parent-is-a-file"],
)
def test_predict_bad_output(
    workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path, output: str, words: list[str]
) -> None:
    (workdir / "outdir").mkdir()
    source = penguin_input(workdir, "island,bill_length_mm,flipper_length_mm,sex,species")
    err = predict_bad(workdir, capsys, str(penguin_run), str(source), "-o", output)
    assert all(word in err for word in words), err


def test_predict_run_without_a_model(workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path) -> None:
    source = penguin_input(workdir, "island,bill_length_mm,flipper_length_mm,sex,species")
    (penguin_run / "model.keras").unlink()
    err = predict_bad(workdir, capsys, str(penguin_run), str(source))
    assert str(penguin_run) in err and "model.keras is missing" in err


def test_predict_run_with_a_damaged_model(workdir: Path, capsys: pytest.CaptureFixture[str], penguin_run: Path) -> None:
    source = penguin_input(workdir, "island,bill_length_mm,flipper_length_mm,sex,species")
    err = predict_bad(workdir, capsys, str(penguin_run), str(source))
    assert "model.keras" in err and "not a valid Keras model file" in err and "truncated" in err

# --- loss and optimizer ---

BAD_OBJECTIVES = [
    pytest.param(
        "training.loss=categorical_crosentropy",
        ["training.loss", "'categorical_crosentropy'", "did you mean 'categorical_crossentropy'"],
        id="loss-typo",
    ),
    pytest.param(
        "training.loss={name: sparse_categorical_crossentropy, from_logit: true}",
        ["training.loss.from_logit", "Did you mean training.loss.from_logits"],
        id="loss-key-typo",
    ),
    pytest.param(
        "training.loss={name: mse, from_logits: true}",
        ["training.loss", "from_logits applies to", "'mse'"],
        id="from-logits-on-mse",
    ),
    pytest.param("training.loss=ctc", ["training.loss", "'ctc'", "label sequences"], id="ctc"),
    pytest.param("training.loss=[mse]", ["training.loss", "Keras loss name"], id="loss-list"),
    pytest.param(
        "training.optimizer.name=nadm",
        ["training.optimizer.name", "'nadm'", "did you mean 'nadam'", "lion"],
        id="optimizer-typo",
    ),
    pytest.param(
        "training.optimizer.kwargs={beta1: 0.8}",
        ["training.optimizer.kwargs.beta1", "did you mean 'beta_1'", "Adam"],
        id="optimizer-kwarg-typo",
    ),
    pytest.param(
        "training.optimizer.kwargs={learning_rate: 0.1}",
        ["training.optimizer.kwargs.learning_rate", "set training.optimizer.learning_rate"],
        id="optimizer-kwarg-knob",
    ),
    pytest.param(
        "training.optimizer.momentum=0.5",
        ["training.optimizer.momentum", "'adam'", "sgd and rmsprop", "0.5"],
        id="momentum-for-adam",
    ),
    pytest.param(
        "training.loss={name: huber, kwargs: {delt: 2}}",
        ["training.loss.kwargs.delt", "did you mean 'delta'", "Huber"],
        id="loss-kwarg-typo",
    ),
    pytest.param(
        "training.loss={kwargs: {delta: 2}}", ["training.loss.kwargs", "needs a loss name"], id="kwargs-with-auto"
    ),
]


@pytest.mark.parametrize(("override", "words"), BAD_OBJECTIVES)
def test_bad_loss_or_optimizer_is_refused_before_training(
    workdir: Path, capsys: pytest.CaptureFixture[str], override: str, words: list[str]
) -> None:
    err = run_bad(workdir, capsys, override)
    assert all(word in err for word in words), err
    assert sorted(p.name for p in workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        pytest.param(
            ["training.loss=mse"],
            ["training.loss='mse'", "regression loss", "classification (10 classes)", "data.task=regression"],
            id="mse-for-classification",
        ),
        pytest.param(
            ["data.dataset=diabetes", "model.name=mlp", "training.loss=categorical_crossentropy"],
            ["training.loss='categorical_crossentropy'", "classification loss", "regression"],
            id="crossentropy-for-regression",
        ),
    ],
)
def test_a_loss_that_does_not_fit_the_task_is_refused_before_the_run_directory(
    workdir: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], words: list[str]
) -> None:
    err = run_bad(workdir, capsys, "data.max_samples=300", *overrides)
    assert all(word in err for word in words), err
    assert sorted(p.name for p in workdir.iterdir()) == []
# --- validate ---


def run_validate_bad(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`harness validate --local ARGS`: exit 2, one message, nothing written or deleted, no --out made."""
    before = snapshot(workdir)
    code = cli.main(["validate", "--local", "--gpus", "0", "--out", str(workdir / "validation"), *args])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert captured.out == "", "nothing may run before the input is checked"
    assert snapshot(workdir) == before
    return captured.err


def validate_file(workdir: Path, name: str, text: str) -> str:
    path = workdir / name
    path.write_text(text)
    return str(path)


def test_validate_unknown_check_name(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_validate_bad(workdir, capsys, "--checks", "node.disk,gpu.ecx")
    assert "unknown check 'gpu.ecx'" in err and "Did you mean 'gpu.ecc'" in err and "node.memory" in err


def test_validate_heavy_check_in_light_mode(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_validate_bad(workdir, capsys, "--light", "--checks", "e2e")
    assert "e2e.training" in err and "--light" in err


def test_validate_empty_check_list(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_validate_bad(workdir, capsys, "--checks", " , ")
    assert "--checks" in err and "' , '" in err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("gpus:\n  Tesla T4: {matmul_fp16: 65\n", ["line 3", "not valid YAML"]),
        ("gpus:\n  Tesla T4: {matmul_fp33: 9}\n", ["gpus.Tesla T4.matmul_fp33", "line 2", "mean 'matmul_fp32'"]),
        ("fleet: {warn: 1.5}\n", ["fleet.warn", "1.5", "fraction"]),
        ("cpus:\n  My CPU: {host_memory_bandwidth: -3}\n", ["cpus.My CPU.host_memory_bandwidth", "-3", "> 0"]),
        ("metrics:\n  matmul_fp32: {unit: TB/s}\n", ["metrics.matmul_fp32.unit", "'TB/s'", "GFLOP/s"]),
        ("limit: {disk_free_fail_gib: 2}\n", ["limit ", "Did you mean 'limits'"]),
        ("- a list\n", ["must be a mapping of sections", "['a list']"]),
    ],
)
def test_validate_malformed_reference_file(
    workdir: Path, capsys: pytest.CaptureFixture[str], text: str, words: list[str]
) -> None:
    path = validate_file(workdir, "site.yaml", text)
    err = run_validate_bad(workdir, capsys, "--reference", path)
    assert path in err and all(word in err for word in words), err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('tensorflo: "2.21.*"\n', ["tensorflo", "Did you mean 'tensorflow'", "line 1"]),
        ("python: 3.10\n", ["python", "3.1", "quotes"]),
        ("nodes:\n  n1: {kera: '3.*'}\n", ["nodes.n1.kera", "Did you mean 'keras'"]),
        ("nodes: [n1]\n", ["nodes", "['n1']"]),
        ("keras: [3]\n", ["keras", "[3]", "version string"]),
    ],
)
def test_validate_malformed_expected_versions_file(
    workdir: Path, capsys: pytest.CaptureFixture[str], text: str, words: list[str]
) -> None:
    path = validate_file(workdir, "expected.yaml", text)
    err = run_validate_bad(workdir, capsys, "--expected", path)
    assert path in err and all(word in err for word in words), err


def test_validate_missing_expected_versions_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_validate_bad(workdir, capsys, "--expected", str(workdir / "nope.yaml"))
    assert "nope.yaml" in err and "does not exist" in err


def test_validate_out_is_a_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = workdir / "taken"
    target.write_text("keep me\n")
    before = snapshot(workdir)
    code = cli.main(["validate", "--local", "--gpus", "0", "--out", str(target / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and str(target) in err and "not a folder" in err and "Traceback" not in err
    assert snapshot(workdir) == before


def test_validate_without_a_mode(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(workdir)
    assert cli.main(["validate", "--light"]) == 2
    err = capsys.readouterr().err
    assert "needs --local" in err and snapshot(workdir) == before
# --- distributed strategy choice ---


@pytest.mark.parametrize(
    ("strategy", "words"),
    [("single", "single runs one process"), ("mirrored", "mirrored runs one process per node")],
)
def test_workers_with_a_one_process_strategy(
    workdir: Path, capsys: pytest.CaptureFixture[str], strategy: str, words: str
) -> None:
    """Refused by the launcher before any worker starts: the key, the value, why, what would run."""
    err = run_bad(workdir, capsys, "data.dataset=wine", f"distribute.strategy={strategy}", "--workers", "2")
    assert f"distribute.strategy={strategy!r}" in err and words in err
    assert "this job has 2 processes (harness train --workers)" in err
    assert "Allowed here: auto, multiworker, horovod" in err and "rank" not in err
    assert sorted(p.name for p in workdir.iterdir()) == []
# --- run directory records ---


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"schema_version": 1, "run": ', ["is not valid JSON"]),
        ("{}".encode("utf-16"), ["not UTF-8"]),
        (b'"a report"', ["must hold a JSON object", "str"]),
    ],
    ids=["cut", "utf16", "string"],
)
def test_report_of_a_damaged_report_json(
    workdir: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: list[str]
) -> None:
    run_dir = finished_run(workdir, "a")
    (run_dir / "report.json").write_bytes(content)
    before = snapshot(workdir)
    err = refused(capsys, "report", str(run_dir))
    assert str(run_dir / "report.json") in err and all(word in err for word in words), err
    assert snapshot(workdir) == before


def test_status_of_a_metrics_log_that_cannot_be_read(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = submitted_run(workdir, {"state": "running"})
    (run_dir / "metrics.jsonl").mkdir()
    before = snapshot(workdir)
    err = refused(capsys, "status", str(run_dir))
    assert "cannot read" in err and str(run_dir / "metrics.jsonl") in err, err
    assert snapshot(workdir) == before


def test_status_of_a_state_json_from_another_harness_version(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = submitted_run(workdir, {"schema_version": 7, "state": "running"})
    before = snapshot(workdir)
    err = refused(capsys, "status", str(run_dir))
    assert str(run_dir / "state.json") in err and "schema_version 7" in err and "schema_version 1" in err, err
    assert snapshot(workdir) == before
# --- validate partition ---

SINFO_ANSWER = "n1|debug*|idle|none\nn2|debug*|idle|none\nn1|urgent|idle|none\nn2|urgent|idle|none\n"


@pytest.fixture
def fake_slurm(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sinfo answering with SINFO_ANSWER, and sbatch/scontrol that only record that they were called."""
    folder = tmp_path_factory.mktemp("fake-slurm")
    calls = folder / "calls"
    for name, body in {"sinfo": f"printf '{SINFO_ANSWER}'", "sbatch": f"echo sbatch >>{calls}; exit 1",
                       "scontrol": f"echo scontrol \"$@\" >>{calls}", "squeue": "true"}.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return calls


def run_partition_bad(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`harness validate ARGS`: exit 2, one message, nothing submitted, written or deleted."""
    before = snapshot(workdir)
    code = cli.main(["validate", *args])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert captured.out == ""
    assert snapshot(workdir) == before
    return captured.err


def test_validate_unknown_partition(workdir: Path, capsys: pytest.CaptureFixture[str], fake_slurm: Path) -> None:
    err = run_partition_bad(workdir, capsys, "--partition", "debgu", "--out", str(workdir / "v"))
    assert "unknown partition 'debgu'" in err and "Did you mean 'debug'" in err and "debug, urgent" in err
    assert not fake_slurm.exists(), "nothing may be submitted"


@pytest.mark.parametrize(
    ("nodes", "words"),
    [("n1,nn2", ["unknown node 'nn2'", "did you mean 'n2'", "Known: n1, n2"]),
     ("n[1-", ["--nodes", "malformed Slurm hostlist 'n[1-'", "never closed"]),
     (",", ["--nodes needs node names"])],
    ids=["unknown-node", "malformed-hostlist", "empty"],
)
def test_validate_bad_node_list(
    workdir: Path, capsys: pytest.CaptureFixture[str], fake_slurm: Path, nodes: str, words: list[str]
) -> None:
    err = run_partition_bad(workdir, capsys, "--nodes", nodes, "--out", str(workdir / "v"))
    assert all(word in err for word in words), err
    assert not fake_slurm.exists(), "nothing may be submitted"


def test_validate_partition_without_out(workdir: Path, capsys: pytest.CaptureFixture[str], fake_slurm: Path) -> None:
    err = run_partition_bad(workdir, capsys, "--partition", "debug")
    assert "need --out DIR" in err and not fake_slurm.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--local", "--drain"], ["--drain needs Slurm", "scontrol is not on PATH"]),
     (["--partition", "debug", "--out", "v"], ["--partition/--nodes needs Slurm"])],
    ids=["drain", "partition"],
)
def test_validate_slurm_modes_without_slurm(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str],
    words: list[str],
) -> None:
    monkeypatch.setenv("PATH", str(workdir / "no-slurm-here"))
    err = run_partition_bad(workdir, capsys, *args)
    assert all(word in err for word in words), err


def test_validate_local_drain_on_a_host_slurm_does_not_know(
    workdir: Path, capsys: pytest.CaptureFixture[str], fake_slurm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURMD_NODENAME", "nx2")
    err = run_partition_bad(workdir, capsys, "--local", "--gpus", "0", "--drain")
    assert "this node is 'nx2', which Slurm does not know" in err and "Did you mean 'n2'" in err
    assert not fake_slurm.exists(), "no node may be touched"


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--local", "--resume-drained"], ["--resume-drained works with --partition/--nodes"]),
     (["--partition", "debug", "--drain", "--resume-drained"], ["choose one: --drain", "--resume-drained"]),
     (["--local", "--partition", "debug"], ["choose one: --local"]),
     (["--local", "--yes"], ["--yes confirms --drain or --resume-drained"]),
     (["--nodes", "n1", "--time", "0"], ["--time must be at least 1 minute"])],
    ids=["resume-local", "drain-and-resume", "local-and-partition", "yes-alone", "zero-time"],
)
def test_validate_conflicting_modes(
    workdir: Path, capsys: pytest.CaptureFixture[str], fake_slurm: Path, args: list[str], words: list[str]
) -> None:
    err = run_partition_bad(workdir, capsys, *args)
    assert all(word in err for word in words), err
    assert not fake_slurm.exists()

# --- sweep ---

SWEEP_BASE = {"data": {"dataset": "iris"}, "model": {"name": "mlp"}, "training": {"epochs": 1}}


def sweep_spec(workdir: Path, **fields: object) -> Path:
    import yaml

    spec: dict[str, object] = {
        "name": "s",
        "base": SWEEP_BASE,
        "parameters": {"training.optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]}},
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "budget": {"trials": 4},
        "parallelism": 2,
    }
    spec.update(fields)
    path = workdir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_bad(workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`harness sweep ARGS`: exit 2, one message, and nothing in the folder created or changed."""
    before = snapshot(workdir)
    code = cli.main(["sweep", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert snapshot(workdir) == before, "a refused sweep must not write anything"
    return err


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {"parameters": {"training.optimizer.learnin_rate": {"uniform": [0.01, 0.1]}}},
            ["spec.yaml", "training.optimizer.learnin_rate", "Did you mean training.optimizer.learning_rate"],
        ),
        ({"parameters": {"model.dropout": {"uniform": [0.3, 0.3]}}}, ["model.dropout", "empty", "[0.3, 0.3]"]),
        ({"parameters": {"model.kernel_size": {"int": [5, 2]}}}, ["model.kernel_size", "inverted", "[5, 2]"]),
        (
            {"parameters": {"training.optimizer.learning_rate": {"loguniform": [0, 0.1]}}},
            ["training.optimizer.learning_rate", "loguniform bounds must be > 0", "[0, 0.1]"],
        ),
        (
            {"parameters": {"model.kernel_size": {"uniform": [1, 5]}}},
            ["model.kernel_size", "uniform value", "integer", "{int: [low, high]}"],
        ),
        (
            {"parameters": {"model.hidden_units": {"choice": [[16], [0]]}}},
            ["model.hidden_units", "[0]", "greater than 0"],
        ),
        (
            {"parameters": {"model.dropout": {"normal": [0.1, 0.2]}}},
            ["model.dropout", "unknown distribution 'normal'", "loguniform"],
        ),
        (
            {"parameters": {"training.batch_size": {"grid": [8, 16, 32]}, "model.dropout": {"grid": [0.1, 0.2]}}},
            ["grid has 6 combinations", "budget.trials=4"],
        ),
        (
            {"base": {**SWEEP_BASE, "data": {"dataset": "diabetes"}}},
            ["objective.metric", "val_accuracy", "regression", "val_mae"],
        ),
        ({"parallelism": 0}, ["parallelism", "greater than 0", "0"]),
        ({"budget": {"trials": 4, "gpu_hour": 2}}, ["budget.gpu_hour", "Did you mean gpu_hours"]),
        ({"parameters": {"run.name": {"choice": ["a", "b"]}}}, ["run.name", "set by the sweep"]),
        ({"sampler": {"name": "annealing"}}, ["sampler.name", "annealing", "tpe"]),
        (
            {"pruner": {"name": "median", "options": {"warmup": 2}}},
            ["pruner.options", "spec.yaml", "warmup", "n_warmup_steps"],
        ),
        ({"slurm": {"nodes": 2}}, ["--executor local runs each trial as one process", "slurm.nodes=2"]),
        ({"parameters": {"slurm.partition": {"choice": ["a", "b"]}}}, ["slurm.partition", "slurm.nodes"]),
        (
            {"parameters": {"model.dropout": {"uniform": [0.0, 0.3]}}, "sampler": {"name": "bruteforce"}},
            ["bruteforce", "model.dropout", "float range", "{choice: [...]}"],
        ),
        (
            {"base": {**SWEEP_BASE, "data": {"dataset": "csv", "path": "nope.csv", "target": "y"}}},
            ["spec.yaml", "base config", "data.path", "nope.csv", "does not exist"],
        ),
        ({"code_dir": "no_such_folder"}, ["spec.yaml", "code_dir", "no_such_folder", "no such folder"]),
    ],
    ids=[
        "unknown-key",
        "empty-range",
        "inverted-range",
        "loguniform-zero",
        "float-for-int-key",
        "choice-value-invalid",
        "unknown-distribution",
        "grid-over-budget",
        "objective-not-produced",
        "parallelism-0",
        "unknown-spec-key",
        "sweep-owned-key",
        "unknown-sampler",
        "unknown-pruner-option",
        "multi-node-trial-locally",
        "resource-key-that-cannot-vary",
        "bruteforce-over-a-float-range",
        "base-data-file-missing",
        "code-dir-missing",
    ],
)
def test_bad_sweep_spec(
    workdir: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, object], words: list[str]
) -> None:
    path = sweep_spec(workdir, **fields)
    err = sweep_bad(workdir, capsys, str(path), "--executor", "local")
    assert all(word in err for word in words), err


def test_existing_sweep_dir_needs_resume_or_overwrite(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_spec(workdir)
    (workdir / "sweeps" / "s").mkdir(parents=True)
    (workdir / "sweeps" / "s" / "notes.txt").write_text("mine")
    err = sweep_bad(workdir, capsys, str(path), "--executor", "local")
    assert "sweeps/s" in err and "already exists" in err and "--resume" in err and "--overwrite" in err
    err = sweep_bad(workdir, capsys, str(path), "--executor", "local", "--overwrite")
    assert "not a sweep directory" in err


def test_sweep_status_of_a_folder_that_is_not_a_sweep(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "runs").mkdir()
    err = sweep_bad(workdir, capsys, "status", str(workdir / "runs"))
    assert "runs" in err and "is not a sweep directory" in err


# --- strategy measurements ---


@pytest.fixture
def measurements_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HARNESS_MEASUREMENTS naming a file where a folder of measurements belongs."""
    path = workdir / "measurements.txt"
    path.write_text("not a folder")
    monkeypatch.setenv("HARNESS_MEASUREMENTS", str(path))
    return path


def test_workers_with_a_measurements_file_instead_of_a_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str], measurements_file: Path
) -> None:
    before = snapshot(workdir)
    err = run_bad(workdir, capsys, "data.dataset=iris", "model.name=mlp", "--workers", "2")
    assert "HARNESS_MEASUREMENTS=" in err and str(measurements_file) in err and "is not a folder" in err
    assert snapshot(workdir) == before


def test_an_explicit_strategy_never_reads_the_measurements(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, measurements_file: Path
) -> None:
    from harness.distribute import launcher

    monkeypatch.setattr(launcher, "launch", lambda *args: 0)
    assert cli.main(["train", *FAST, "data.dataset=iris", "distribute.strategy=multiworker", "--workers", "2"]) == 0


def test_submit_with_a_measurements_file_instead_of_a_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str], measurements_file: Path
) -> None:
    before = snapshot(workdir)
    code = cli.main(["submit", "data.dataset=iris", "--tasks-per-node", "2", "--executor", "local", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert str(measurements_file) in err and "is not a folder" in err
    assert snapshot(workdir) == before


def test_validate_with_a_measurements_file_instead_of_a_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str], measurements_file: Path
) -> None:
    before = snapshot(workdir)
    code = cli.main(["validate", "--local", "--checks", "e2e.training", "--out", str(workdir / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert str(measurements_file) in err and "is not a folder" in err
    assert snapshot(workdir) == before  # nothing ran: no output folder, no run


def test_partition_validation_with_a_measurements_file_refuses_before_any_job(
    workdir: Path, capsys: pytest.CaptureFixture[str], measurements_file: Path
) -> None:
    """Checked on the submitting side: each node job would otherwise fail the same way, one by one."""
    before = snapshot(workdir)
    code = cli.main(["validate", "--partition", "debug", "--checks", "e2e.training", "--out", str(workdir / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert str(measurements_file) in err and "is not a folder" in err
    assert snapshot(workdir) == before


def test_a_damaged_measurement_is_a_warning_and_the_run_goes_on(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.distribute import launcher

    store = workdir / "store"
    store.mkdir()
    (store / "n1.json").write_text('{"schema_version": 1, "node": "n1"')
    monkeypatch.setenv("HARNESS_MEASUREMENTS", str(store))
    seen: list[object] = []
    monkeypatch.setattr(launcher, "launch", lambda *args: seen.append(args) or 0)
    assert cli.main(["train", *FAST, "data.dataset=iris", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and str(store / "n1.json") in captured.err and "ignored" in captured.err
    assert "Traceback" not in captured.err and "auto: multiworker" in captured.out and seen
    assert (store / "n1.json").read_text() == '{"schema_version": 1, "node": "n1"'  # left as it was
# --- horovod over MPI on Slurm ---


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_horovod_over_mpi_with_the_local_executor(
    workdir: Path, capsys: pytest.CaptureFixture[str], dry_run: list[str]
) -> None:
    """The local executor starts plain processes that no MPI runtime joins: refused, not run over Gloo."""
    before = snapshot(workdir)
    args = ["distribute.strategy=horovod", "distribute.horovod_controller=mpi", "--executor", "local"]
    code = cli.main(["submit", *FAST, *args, "--tasks-per-node", "2", *dry_run])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "distribute.horovod_controller" in err and "'mpi'" in err and "slurm.executor=local" in err
    assert "distribute.horovod_controller=gloo" in err
    assert snapshot(workdir) == before


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"HARNESS_RANK": "abc", "HARNESS_WORLD_SIZE": "2"}, ["HARNESS_RANK", "integer", "'abc'"]),
        ({"HARNESS_RANK": "1"}, ["HARNESS_WORLD_SIZE is not set", "set it too"]),
        ({"TF_CONFIG": "{bad"}, ["TF_CONFIG is not valid JSON", "'{bad'"]),
    ],
    ids=["rank-not-a-number", "world-size-missing", "tf-config-not-json"],
)
def test_malformed_launcher_variables_are_bad_input(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    words: list[str],
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    err = run_bad(workdir, capsys, "data.dataset=iris", "model.name=mlp")
    assert all(word in err for word in words), err


def test_resume_of_a_sweep_whose_stored_spec_is_damaged(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_spec(workdir)
    (workdir / "sweeps" / "s").mkdir(parents=True)
    (workdir / "sweeps" / "s" / ".harness-sweep").write_text('{"schema_version": 1}')
    (workdir / "sweeps" / "s" / "sweep.yaml").write_text("name: [unclosed\n")
    err = sweep_bad(workdir, capsys, str(path), "--executor", "local", "--resume")
    assert "sweeps/s/sweep.yaml" in err and "not valid YAML" in err
