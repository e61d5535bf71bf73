"""The run directory's lifecycle: what --overwrite may delete, what a refused or failed run leaves,
resume rules, damaged metrics and checkpoints, full and read-only disks, file permissions."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from harness import atomic, cli
from harness.config import load_config, to_yaml
from harness.errors import ConfigError, RunDirError
from harness.train import checkpoint, rundir
from harness.train.checkpoint import CorruptCheckpoint, LoopState
from harness.train.request import check_global_batch, check_resumable

IRIS = [
    "data.dataset=iris",
    "model.name=mlp",
    "model.hidden_units=[8]",
    "model.batch_norm=false",
    "training.batch_size=16",
    "training.progress=none",
    "report.plots=false",
]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for folders): to prove nothing changed."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = None if path.is_dir() or path.is_symlink() else path.read_bytes()
    return found


def harness(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def make_run(root: Path, name: str, marker: bool = True) -> Path:
    """A folder that looks like a finished run (what --overwrite would replace)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    if marker:
        rundir.write_marker(run_dir, "test")
    (run_dir / "keep.txt").write_text("precious")
    return run_dir


def fake_run(workdir: Path, name: str, epochs_done: int, *overrides: str) -> Path:
    """A run directory as training leaves it, enough for the resume checks (no TensorFlow)."""
    config = load_config(None, [*IRIS, f"run.name={name}", *overrides])
    run_dir = make_run(workdir / "runs", name)
    atomic.write_text(run_dir / "config.yaml", to_yaml(config))
    rundir.write_state(run_dir, "completed", epochs=config.training.epochs)
    folder = run_dir / "checkpoints" / "step-00000010"
    folder.mkdir(parents=True)
    atomic.write_json(folder / "state.json", asdict(LoopState(epoch=epochs_done, global_step=10, global_batch=16)))
    atomic.write_text(run_dir / "checkpoints" / "latest", "step-00000010\n")
    return run_dir


# ---- #1 --overwrite deletes only a run directory the harness made -------------------------


@pytest.fixture
def surroundings(workdir: Path) -> Path:
    """Runs and other people's files around run.output_dir, each of which must survive."""
    runs = workdir / "runs"
    make_run(runs, "sibling-a")
    make_run(runs, "sibling-b")
    make_run(runs, "unmarked", marker=False)
    (runs / "notes.txt").write_text("mine")
    (workdir / "beside.txt").write_text("mine too")
    make_run(workdir / "elsewhere", "marked-outside")
    make_run(runs / "group", "nested")
    (runs / "link").symlink_to(workdir / "elsewhere" / "marked-outside")
    return runs


REFUSED = [
    (".", "run.output_dir itself"),
    ("..", "not a folder directly inside run.output_dir"),
    ("ABSOLUTE", "not a folder directly inside run.output_dir"),
    ("group/nested", "not a folder directly inside run.output_dir"),
    ("notes.txt", "is a file"),
    ("unmarked", "holds no .harness-run marker"),
    ("link", "symbolic link"),
]


@pytest.mark.parametrize(("name", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_overwrite_refuses_what_is_not_a_harness_run(
    workdir: Path, surroundings: Path, name: str, why: str
) -> None:
    name = str(workdir / "elsewhere" / "marked-outside") if name == "ABSOLUTE" else name
    target = surroundings / name
    before = snapshot(workdir)
    with pytest.raises(RunDirError, match=why) as err:
        rundir.check_target(target, surroundings, resume=False, overwrite=True)
    assert "--overwrite refused" in str(err.value) and str(target) in str(err.value)
    with pytest.raises(RunDirError, match=why):  # also at the moment of deletion, whatever checked before
        rundir.remove_run_dir(target, surroundings)
    assert snapshot(workdir) == before


def test_overwrite_removes_a_marked_run_and_an_older_unmarked_one(workdir: Path) -> None:
    runs = workdir / "runs"
    marked = make_run(runs, "marked")
    rundir.remove_run_dir(marked, runs)
    assert not marked.exists()
    legacy = make_run(runs, "legacy", marker=False)  # written before the marker existed
    (legacy / "config.yaml").write_text("run: {}\n")
    rundir.write_state(legacy, "completed")
    rundir.check_removable(legacy, runs)
    assert rundir.is_run_dir(legacy)


def test_submit_refuses_to_replace_what_is_not_a_run(workdir: Path) -> None:
    from harness.slurm.submit import check_run_dir

    runs = workdir / "runs"
    mine = make_run(runs, "mine", marker=False)
    with pytest.raises(RunDirError, match="holds no .harness-run marker"):
        check_run_dir(mine, True, runs)
    with pytest.raises(RunDirError, match="run.output_dir itself"):
        check_run_dir(runs / ".", True, runs)
    check_run_dir(make_run(runs, "made-by-harness"), True, runs)


def test_a_new_run_directory_appears_complete_with_its_marker(workdir: Path) -> None:
    runs = workdir / "runs"
    with rundir.new_run_dir(runs / "new", runs, overwrite=False) as staging:
        assert not (runs / "new").exists() and staging.parent == runs
        (staging / "config.yaml").write_text("x: 1\n")
    assert sorted(p.name for p in (runs / "new").iterdir()) == [".harness-run", "config.yaml"]
    assert sorted(p.name for p in runs.iterdir()) == ["new"]
    with pytest.raises(RuntimeError), rundir.new_run_dir(runs / "broken", runs, overwrite=False) as staging:
        raise RuntimeError("failed while assembling")
    assert sorted(p.name for p in runs.iterdir()) == ["new"], "a failed start leaves nothing"


# ---- #2 who records a failure ----------------------------------------------------------


@pytest.mark.parametrize(("resume", "recorded"), [(True, "completed"), ("auto", "failed")])
def test_a_failure_before_the_start_is_recorded_only_by_a_requeued_job(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, resume: bool | str, recorded: str
) -> None:
    """`harness train --resume` that fails before starting leaves the run's record alone; a requeued
    Slurm job continuing its own run reports its failure, for `harness status`."""
    from harness.errors import DataError
    from harness.train.run import RunRequest, train

    def missing(*args: object, **kwargs: object) -> None:
        raise DataError("data.path /gone.csv does not exist")

    monkeypatch.setattr("harness.train.run.prepare_data", missing)
    run_dir = fake_run(workdir, "r", 1)
    config = load_config(run_dir / "config.yaml")
    with pytest.raises(DataError):
        train(RunRequest(config, resume=resume))  # type: ignore[arg-type]
    assert rundir.read_state(run_dir)["state"] == recorded


# ---- #4 --resume with changed settings ---------------------------------------------------


def test_resume_accepts_display_distribution_and_location_changes(workdir: Path) -> None:
    run_dir = fake_run(workdir, "r", 3, "training.epochs=5")
    changed = [
        "training.epochs=9",
        "training.progress=lines",
        "training.tensorboard=true",
        "report.html=false",
        "distribute.strategy=single",
        "slurm.nodes=2",
        f"run.output_dir={workdir / 'runs'}",  # the same folder, spelled absolute
    ]
    check_resumable(run_dir, load_config(None, [*IRIS, "run.name=r", *changed]))
    check_resumable(run_dir, load_config(None, [*IRIS, "run.name=r", "training.epochs=3"]))  # done already


def test_batch_size_may_change_only_to_keep_the_global_batch(workdir: Path) -> None:
    run_dir = fake_run(workdir, "r", 1)
    two_workers = load_config(None, [*IRIS, "run.name=r", "training.batch_size=8"])
    check_global_batch(run_dir, two_workers, global_batch=16, saved_global_batch=16)
    with pytest.raises(ConfigError, match="training.batch_size was 16") as err:
        check_global_batch(run_dir, two_workers, global_batch=8, saved_global_batch=16)
    assert "is 8 now" in str(err.value) and "global batch 8" in str(err.value)


# ---- #3 metrics.jsonl after a crash ---------------------------------------------------------


def test_metrics_reader_skips_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 1.0}\ngarbage\n{"epoch": 2, "loss": 0.5}\n[1]\n{"epoch": 3, "lo')
    with pytest.warns(UserWarning) as caught:
        lines = rundir.read_metrics(path)
    assert [line["epoch"] for line in lines] == [1, 2]
    assert len(caught) == 1, "one warning for the whole file"
    text = str(caught[0].message)
    assert f"{path}:2:" in text and "2 (not JSON)" in text and "4 (not a JSON object)" in text
    assert "5 (" not in text, "a last line cut short by a crash is dropped without a warning"


def test_a_partial_last_line_is_cut_and_a_whole_one_completed(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    with pytest.warns(rundir.RunDirWarning, match="line 2 was cut short"):
        rundir.end_with_complete_line(path)
    assert path.read_text() == '{"epoch": 1}\n'
    path.write_text('{"epoch": 1}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rundir.end_with_complete_line(path)
    assert path.read_text() == '{"epoch": 1}\n'


def test_resume_after_a_partial_metrics_line_keeps_every_epoch(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.train import test_run as test_train

    common = [*IRIS, "training.epochs=3", "run.name=cut"]
    code, _ = harness(capsys, "train", *common, f"training.callbacks=['{test_train.__name__}:stop_after_epoch_two']")
    assert code == 130
    run_dir = workdir / "runs" / "cut"
    assert rundir.read_state(run_dir)["state"] == "interrupted"  # Ctrl-C, not "failed" or "running"
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "loss": 0.4, "accu')  # killed during a write
    code, err = harness(capsys, "train", *common, "--resume")  # the command prints warnings as lines
    assert code == 0, err
    assert "warning: RunDirWarning:" in err and "metrics.jsonl" in err
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert rundir.read_state(run_dir)["state"] == "completed"


# ---- #4 raising epochs, #5 damaged checkpoints (one trained run) ---------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished 2-epoch iris run, copied by each test that changes it."""
    root = tmp_path_factory.mktemp("trained")
    previous = Path.cwd()
    os.chdir(root)
    try:
        assert cli.main(["train", *IRIS, "training.epochs=2", "run.name=base"]) == 0
    finally:
        os.chdir(previous)
    yield root / "runs" / "base"


def copy_run(trained: Path, workdir: Path) -> Path:
    run_dir = workdir / "runs" / "r"
    shutil.copytree(trained, run_dir, symlinks=True)
    config = load_config(run_dir / "config.yaml", [f"run.output_dir={workdir / 'runs'}", "run.name=r"])
    atomic.write_text(run_dir / "config.yaml", to_yaml(config))
    return run_dir


def test_raising_epochs_on_resume_keeps_config_report_and_card_right(
    workdir: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(trained, workdir)
    code, err = harness(capsys, "train", str(run_dir / "config.yaml"), "training.epochs=3", "--resume")
    assert code == 0, err
    assert load_config(run_dir / "config.yaml").training.epochs == 3
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["epochs_run"] == 3 and report["config"]["training"]["epochs"] == 3
    assert f"harness train {run_dir / 'config.yaml'} run.name=r-repro" in (run_dir / "model_card.md").read_text()
    assert rundir.read_state(run_dir)["epochs"] == 3


def test_resume_with_another_batch_size_is_refused_after_the_strategy_is_known(
    workdir: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(trained, workdir)
    before = snapshot(workdir)
    code, err = harness(capsys, "train", str(run_dir / "config.yaml"), "training.batch_size=8", "--resume")
    assert code == 2, err
    assert "training.batch_size was 16" in err and "is 8 now" in err
    assert snapshot(workdir) == before


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(
    workdir: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(trained, workdir)
    folders = checkpoint.candidates(run_dir / "checkpoints")
    assert len(folders) >= 2, "more than one checkpoint is kept"
    latest = folders[0]
    truncate(latest / "model.npz")
    code, err = harness(capsys, "train", str(run_dir / "config.yaml"), "training.epochs=3", "--resume")
    assert code == 0, err
    assert "warning: RunDirWarning:" in err
    assert str(latest / "model.npz") in err and "older checkpoint" in err
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # epoch 2 was redone


def test_no_readable_checkpoint_is_bad_input_naming_the_files(
    workdir: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(trained, workdir)
    for folder in checkpoint.candidates(run_dir / "checkpoints"):
        truncate(folder / "optimizer.npz")
    before = snapshot(workdir)
    code, err = harness(capsys, "train", str(run_dir / "config.yaml"), "training.epochs=3", "--resume")
    assert code == 2, err
    for folder in checkpoint.candidates(run_dir / "checkpoints"):
        assert str(folder / "optimizer.npz") in err
    assert snapshot(workdir) == before


def test_loading_a_truncated_checkpoint_leaves_the_variables_alone(tmp_path: Path) -> None:
    variables = [tf.Variable(np.ones(3)), tf.Variable(np.ones(2))]
    folder = checkpoint.save(tmp_path, variables, [], LoopState(global_step=1), best=False)
    truncate(folder / "model.npz")
    variables[0].assign(np.zeros(3))
    with pytest.raises(CorruptCheckpoint, match="model.npz"):
        checkpoint.load(folder, variables, [])
    np.testing.assert_array_equal(variables[0].numpy(), np.zeros(3))


# ---- #6 a full disk -------------------------------------------------------------------------


def no_space(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_names_the_file_the_free_space_and_the_size(tmp_path: Path) -> None:
    def fill(handle: object) -> None:
        raise no_space(tmp_path / "x")

    with pytest.raises(atomic.WriteError) as err:
        atomic.atomic_write(tmp_path / "env.json", fill, needed=5000)
    text = str(err.value)
    assert str(tmp_path / "env.json") in text and "No space left" in text
    assert "free there" in text and "at least 4.9 KiB" in text
    assert isinstance(err.value, OSError) and err.value.exit_code == 2
    assert list(tmp_path.iterdir()) == [], "no temporary file is left"


def test_a_failed_append_is_cut_off_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n')
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:5]))
        raise no_space(path)

    with monkeypatch.context() as patched, pytest.raises(atomic.WriteError, match="metrics.jsonl"):
        patched.setattr(atomic.os, "write", half_then_full)
        atomic.append_text(path, '{"epoch": 2}\n')
    assert path.read_text() == '{"epoch": 1}\n'


def test_disk_full_while_starting_leaves_no_run_directory(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = atomic.write_json

    def full_for_env(target: Path, obj: object) -> None:
        if Path(target).name == "env.json":
            raise atomic.write_failure(Path(target), no_space(target), 4096)
        real(target, obj)

    with monkeypatch.context() as patched:
        patched.setattr(atomic, "write_json", full_for_env)
        code, err = harness(capsys, "train", *IRIS, "training.epochs=1", "run.name=full")
    assert code == 2
    assert str(Path("runs") / "full" / "env.json") in err and "No space left" in err
    assert list((workdir / "runs").iterdir()) == [], "no half-made run directory, no staging folder"
    code, err = harness(capsys, "train", *IRIS, "training.epochs=1", "run.name=full")
    assert code == 0, err


def test_disk_full_during_the_first_epoch_removes_the_new_run_directory(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(target: Path, text: str) -> None:
        raise atomic.write_failure(Path(target), no_space(target), len(text))

    monkeypatch.setattr(atomic, "append_text", full)
    code, err = harness(capsys, "train", *IRIS, "training.epochs=2", "run.name=full")
    assert code == 2
    assert "metrics.jsonl" in err and "No space left" in err
    assert not (workdir / "runs" / "full").exists()


def test_disk_full_at_the_end_keeps_a_run_that_trained_without_checkpoints(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With epoch checkpoints off, the finished epochs' metrics are the work a full disk must not cost."""
    real = atomic.write_json

    def full_for_report(target: Path, obj: object) -> None:
        if Path(target).name == "report.json":
            raise atomic.write_failure(Path(target), no_space(target), 4096)
        real(target, obj)

    monkeypatch.setattr(atomic, "write_json", full_for_report)
    args = [*IRIS, "training.epochs=2", "training.checkpoint.every_epochs=0", "run.name=kept"]
    code, err = harness(capsys, "train", *args)
    assert code == 2 and "report.json" in err and "No space left" in err
    metrics = workdir / "runs" / "kept" / "metrics.jsonl"
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2]


def test_disk_full_while_overwriting_keeps_the_old_run(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_run(workdir / "runs", "r")
    real = atomic.write_text

    def full_for_config(target: Path, text: str) -> None:
        if Path(target).name == "config.yaml":
            raise atomic.write_failure(Path(target), no_space(target), len(text))
        real(target, text)

    monkeypatch.setattr(atomic, "write_text", full_for_config)
    code, err = harness(capsys, "train", *IRIS, "training.epochs=1", "run.name=r", "--overwrite")
    assert code == 2 and "config.yaml" in err
    assert (old / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == ["r"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB tmpfs (needs root to mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_really_full_disk_says_so_and_leaves_nothing(
    workdir: Path, tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = harness(capsys, "train", *IRIS, "training.epochs=1", f"run.output_dir={tiny_disk}", "run.name=t")
    assert code == 2, err
    assert str(tiny_disk / "t") in err and "No space left" in err and "free there" in err
    assert "The whole run directory needs about" in err
    assert list(tiny_disk.iterdir()) == []


# ---- #7 run.output_dir checked first --------------------------------------------------------


@pytest.fixture
def no_data_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was loaded before run.output_dir was checked")

    monkeypatch.setattr("harness.train.run.prepare_data", fail)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only folder: a read-only tmpfs as root (root ignores permission bits), else chmod."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_dir(
    workdir: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str], no_data_loading: None
) -> None:
    for output_dir in (read_only_dir, read_only_dir / "runs"):
        code, err = harness(capsys, "train", *IRIS, f"run.output_dir={output_dir}")
        assert code == 2, err
        assert "run.output_dir" in err and "not writable" in err and str(read_only_dir) in err


# ---- #16 permissions follow the umask ------------------------------------------------------


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_atomic_writes_and_temporary_folders_follow_the_umask(tmp_path: Path, umask: int) -> None:
    atomic.write_text(tmp_path / "a" / "x.txt", "x")
    folder = atomic.temp_dir(tmp_path, ".t.")
    assert (tmp_path / "a" / "x.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o777 & ~umask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_every_file_of_a_run_follows_the_umask(
    workdir: Path, umask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = harness(capsys, "train", *IRIS, "training.epochs=1", "run.name=perm")
    assert code == 0, err
    run_dir = workdir / "runs" / "perm"
    wrong = {
        str(p.relative_to(run_dir)): oct(p.stat().st_mode & 0o777)
        for p in [run_dir, *run_dir.rglob("*")]
        if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~umask
    }
    assert not wrong


def test_an_overwrite_whose_final_rename_fails_keeps_the_old_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old run is set aside, not deleted, until the new one is in place."""
    output = tmp_path / "runs"
    old = make_run(output, "r")
    real_rename = os.rename

    def refuse_staging(src: object, dst: object) -> None:
        if ".r.new-" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(rundir.os, "rename", refuse_staging)
    with pytest.raises(OSError), rundir.new_run_dir(old, output, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert (old / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in output.iterdir()) == ["r"], "no staging or set-aside folder is left"
