"""Every kind of bad input: exit code 2, one clear message, and nothing written."""

from __future__ import annotations

import json
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


# --- launcher, reports, status, logs and cancel ---


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its content (None for folders): what a refusal must not change."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


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
