"""The local launcher and the watchdog with real processes: exit codes, signals, failure lines, heartbeats.

The workers here are tiny Python scripts, so each case takes a second; the end-to-end run of
`harness train --workers 2` is in tests/test_bad_input.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.distribute import launcher
from harness.distribute.watchdog import (
    EXIT_STALLED,
    Heartbeats,
    Watchdog,
    heartbeat_folder,
    last_error_line,
    remove_heartbeats,
    summarize_error,
)

ROOT = Path(__file__).resolve().parents[2]

# A worker: waits until told (a file appears) or for a signal, then exits as its arguments say.
WORKER = r"""
import os, signal, sys, time
from pathlib import Path

folder, rank, behaviour = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def on_signal(signum, frame):
    (folder / f"got-{rank}").write_text(signal.Signals(signum).name)
    if behaviour != "ignore":
        sys.exit(75)

for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
    signal.signal(sig, on_signal if behaviour != "ignore" or sig != signal.SIGINT else signal.SIG_DFL)
(folder / f"pid-{rank}").write_text(str(os.getpid()))
if behaviour.startswith("exit"):
    sys.exit(int(behaviour[4:]))
if behaviour == "raise":
    def deep():
        raise ValueError("the real reason")
    deep()
if behaviour == "kill9":
    os.kill(os.getpid(), signal.SIGKILL)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def worker_script(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


def commands(script: Path, folder: Path, *behaviours: str) -> list[tuple[list[str], dict[str, str]]]:
    return [([sys.executable, str(script), str(folder), str(rank), b], {}) for rank, b in enumerate(behaviours)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    """Poll `predicate()` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("behaviours", "expected"),
    [
        (("exit0", "exit0"), 0),
        (("exit2", "exit2"), 2),  # a bad model name: every rank says so
        (("wait", "exit2"), 2),  # the waiting rank is stopped; its 75 does not hide the 2
        (("wait", "exit75"), 75),
        (("exit130", "wait"), 130),
        (("wait", "kill9"), 128 + signal.SIGKILL),
        (("wait", "raise"), 1),
    ],
)
def test_the_launcher_returns_the_first_failing_ranks_code(
    worker_script: Path, tmp_path: Path, behaviours: tuple[str, ...], expected: int
) -> None:
    assert launcher.run_workers(commands(worker_script, tmp_path, *behaviours), grace_s=30) == expected
    for rank in range(len(behaviours)):
        assert not pid_alive(int((tmp_path / f"pid-{rank}").read_text()))


def test_the_failure_message_names_the_error_line_not_a_frame(
    worker_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launcher.run_workers(commands(worker_script, tmp_path, "wait", "raise"), grace_s=30) == 1
    out, err = capsys.readouterr()
    assert "[rank 1] Traceback" in out  # the worker's own output is passed on
    assert "error: rank 1 exited with code 1 (ValueError: the real reason); stopping ranks 0" in err
    assert (tmp_path / "got-0").read_text() == "SIGTERM"


def test_a_worker_that_cannot_start_stops_the_ones_already_started(
    worker_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.errors import LaunchError

    made: list[launcher._Worker] = []

    class Recorded(launcher._Worker):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(launcher, "_Worker", Recorded)
    good = commands(worker_script, tmp_path, "wait")
    with pytest.raises(LaunchError, match="could not start worker 1"):
        launcher.run_workers([*good, ([str(tmp_path / "no-such-program")], {})], grace_s=30)
    assert len(made) == 1 and made[0].process.returncode is not None  # stopped and reaped


# --------------------------------------------------------------------------- signals to the launcher


def start_launcher(script: Path, folder: Path, behaviours: list[str], grace_s: float) -> subprocess.Popen[str]:
    """The launcher in its own process, as `harness train --workers N` runs it."""
    code = (
        "import json, sys\n"
        "from harness.distribute.launcher import run_workers\n"
        "sys.exit(run_workers([(c, {}) for c in json.loads(sys.argv[1])], grace_s=float(sys.argv[2])))\n"
    )
    cmds = [[sys.executable, str(script), str(folder), str(rank), b] for rank, b in enumerate(behaviours)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(cmds), str(grace_s)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: all((folder / f"pid-{rank}").exists() for rank in range(len(behaviours))))
    return proc


@pytest.fixture
def launched() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2])
def test_a_stop_signal_reaches_every_worker_and_the_exit_code_follows_theirs(
    worker_script: Path, tmp_path: Path, launched: list[subprocess.Popen[str]], sig: signal.Signals
) -> None:
    proc = start_launcher(worker_script, tmp_path, ["wait", "wait"], grace_s=60)
    launched.append(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err  # the workers checkpointed and stopped: resumable
    assert f"received {sig.name}: passing it to ranks 0, 1" in err
    for rank in range(2):
        assert (tmp_path / f"got-{rank}").read_text() == sig.name
        assert not pid_alive(int((tmp_path / f"pid-{rank}").read_text()))


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(
    worker_script: Path, tmp_path: Path, launched: list[subprocess.Popen[str]]
) -> None:
    proc = start_launcher(worker_script, tmp_path, ["wait", "ignore"], grace_s=1)
    launched.append(proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err  # rank 0 stopped cleanly first; rank 1 was killed after it
    assert (tmp_path / "got-1").read_text() == "SIGTERM"
    assert not pid_alive(int((tmp_path / "pid-1").read_text()))


def test_ctrl_c_interrupts_every_worker_and_exits_130(
    worker_script: Path, tmp_path: Path, launched: list[subprocess.Popen[str]]
) -> None:
    proc = start_launcher(worker_script, tmp_path, ["wait", "wait"], grace_s=60)
    launched.append(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    for rank in range(2):
        assert (tmp_path / f"got-{rank}").read_text() == "SIGINT"


def test_signal_handlers_are_restored_after_the_workers_end(worker_script: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    launcher.run_workers(commands(worker_script, tmp_path, "exit0"), grace_s=30)
    assert signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------- failure lines

TF_OP_ERROR = (
    "Graph execution error:\n\nDetected at node CheckNumerics defined at (most recent call last):\n"
    '  File "<frozen runpy>", line 198, in _run_module_as_main\n\n'
    '  File "<frozen runpy>", line 88, in _run_code\n\n'
    '  File "/tmp/train.py", line 5, in step\n\n'
    "found a NaN : Tensor had NaN values\n\t [[{{node CheckNumerics}}]] [Op:__inference_f_8]"
)
PYTHON_TRACEBACK = (
    "epoch 1/3\n"
    "Traceback (most recent call last):\n"
    '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    '  File "/x/harness/train/run.py", line 132, in fit_or_explain\n'
    "    raise LaunchError(watchdog.explain_failure(summarize_op_error(err))) from None\n"
    "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "ValueError: Attempt to convert a value\nwith more text\n"
    "I0000 00:00:1796083853.849926   15832 port.cc:153] shutting down\n"
)


def test_summaries_pick_the_error_not_a_traceback_frame() -> None:
    assert summarize_error(TF_OP_ERROR) == "found a NaN : Tensor had NaN values"
    assert last_error_line(PYTHON_TRACEBACK) == "ValueError: Attempt to convert a value"
    assert last_error_line("[x]\nerror: unknown model 'nope'\n") == "error: unknown model 'nope'"
    assert last_error_line('File "<frozen runpy>", line 198, in _run_module_as_main\n') is None
    died = last_error_line("[x]\nterminate called after throwing\n  what():  oops\n")
    assert died == "terminate called after throwing"
    assert len(summarize_error("x" * 5000) or "") == 300


def test_a_real_tensorflow_error_is_summarised_by_its_message() -> None:
    import tensorflow as tf

    from harness.train.run import summarize_op_error

    @tf.function(input_signature=[tf.TensorSpec([None])])
    def check(x: tf.Tensor) -> tf.Tensor:
        return tf.debugging.check_numerics(x * 2.0, "found a NaN")

    with pytest.raises(tf.errors.OpError) as caught:
        check(tf.constant([float("nan")]))
    assert "most recent call last" in caught.value.message  # the frames the summary must skip
    assert summarize_op_error(caught.value) == "found a NaN : Tensor had NaN values"


# --------------------------------------------------------------------------- heartbeats


def beat(folder: Path, rank: int, age_s: float, what: str = "epoch 3") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "host": "n1", "time": time.time() - age_s, "progress": 5, "what": what}
    (folder / f"rank-{rank}").write_text(json.dumps(record))


def test_a_stale_heartbeat_of_a_killed_rank_is_cleared_and_not_blamed(tmp_path: Path) -> None:
    folder = tmp_path / ".run.heartbeats"
    beat(folder, 0, age_s=3600)  # both ranks of an earlier run were killed with SIGKILL
    beat(folder, 1, age_s=3600)
    beat(folder, 5, age_s=3600)  # an earlier run had more ranks
    (folder / "notes.txt").write_text("not ours")
    (folder / ".rank-1.tmp").write_text("{")
    chief = Heartbeats(folder, 0, 2, "n1")
    assert chief.culprits(dead_after_s=5) == ["rank 1 (never reported)"]  # not "silent for 3600s"
    chief.clear_stale()
    assert sorted(p.name for p in folder.iterdir()) == [".rank-1.tmp", "notes.txt"]  # a peer's temp file may be in use
    beat(folder, 1, age_s=0)  # the new rank 1 reports
    chief.clear_stale()
    assert (folder / "rank-1").exists()
    assert chief.culprits(dead_after_s=5) == []


def test_each_rank_clears_its_own_stale_file_when_its_watchdog_starts(tmp_path: Path) -> None:
    folder = tmp_path / ".run.heartbeats"
    beat(folder, 0, age_s=3600)
    beat(folder, 1, age_s=3600)
    (folder / ".rank-1.tmp").write_text("{")
    watchdog = Watchdog(60, lambda: "", Heartbeats(folder, 1, 2, "n2")).start()
    try:
        left = {p.name: json.loads(p.read_text())["host"] for p in folder.iterdir()}
    finally:
        watchdog.stop()
    assert left.get("rank-1", "n2") == "n2" and ".rank-1.tmp" not in left  # gone, or already rewritten
    assert left["rank-0"] == "n1"  # a peer's file is the chief's to judge


def test_a_damaged_heartbeat_file_does_not_stop_the_watchdog_from_exiting(tmp_path: Path) -> None:
    folder = tmp_path / ".run.heartbeats"
    folder.mkdir()
    (folder / "rank-0").write_text(json.dumps({"time": "yesterday", "host": 3}))
    codes: list[int] = []
    watchdog = Watchdog(0.2, lambda: "", Heartbeats(folder, 1, 2, "n2"), exit_fn=codes.append).start()
    try:
        wait_for(lambda: codes)
    finally:
        watchdog.stop()
    assert codes == [EXIT_STALLED]


def test_heartbeats_leave_no_output_folder_behind_when_a_run_fails_early(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / ".r.heartbeats"
    ranks = [Heartbeats(folder, rank, 2, "n1") for rank in range(2)]
    for heartbeats in ranks:
        heartbeats.write(1, "connecting")
    for heartbeats in ranks:
        heartbeats.retire()
    assert list(tmp_path.iterdir()) == []


def test_heartbeats_keep_an_output_folder_that_was_there_or_holds_a_run(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    Heartbeats(tmp_path / "runs" / ".r.heartbeats", 0, 1, "n1").write(1, "x")
    Heartbeats(tmp_path / "runs" / ".r.heartbeats", 0, 1, "n1").retire()
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]
    made = Heartbeats(tmp_path / "new" / ".r.heartbeats", 0, 1, "n1")
    made.write(1, "x")
    (tmp_path / "new" / "r").mkdir()  # the chief created the run directory
    made.retire()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["r"]


def test_status_of_a_job_that_ended_before_training_names_the_exception(tmp_path: Path) -> None:
    from harness.slurm import follow

    run = follow.Run(tmp_path, {"job_id": "7", "executor": "slurm", "job_folder": str(tmp_path)})
    (tmp_path / "7_0_log.err").write_text("srun: starting\n" + PYTHON_TRACEBACK)
    found = follow.derive_status(run, {}, None, None, None, datetime.now(UTC))
    assert found.state == "failed" and found.error == "ValueError: Attempt to convert a value"


def test_remove_heartbeats_takes_only_heartbeat_files(tmp_path: Path) -> None:
    folder = heartbeat_folder(tmp_path, "r")
    beat(folder, 0, age_s=0)
    beat(folder, 1, age_s=0)
    (folder / ".rank-1.tmp").write_text("{")
    remove_heartbeats(folder)
    assert not folder.exists()
    beat(folder, 0, age_s=0)
    (folder / "notes.txt").write_text("not ours")
    remove_heartbeats(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_the_launcher_clears_the_heartbeats_of_a_killed_worker(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import cli

    def killed_rank(child_args: list[str], workers: int, cfg: object) -> int:
        beat(heartbeat_folder("runs", "k"), 1, age_s=0)  # rank 1 died with SIGKILL: it could not retire
        return 128 + signal.SIGKILL

    monkeypatch.setattr(cli, "launch_workers", killed_rank)
    assert cli.main(["train", "run.name=k", "distribute.strategy=multiworker", "--workers", "2"]) == 137
    assert list((workdir / "runs").iterdir()) == []


def test_cancel_still_cancels_a_run_whose_state_json_is_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.slurm import follow, scheduler

    cancelled: list[str] = []
    monkeypatch.setattr(scheduler, "cancel", cancelled.append)
    record = {"schema_version": 1, "job_id": "7", "executor": "slurm"}
    (tmp_path / "submission.json").write_text(json.dumps(record))
    (tmp_path / "state.json").write_text('{"state": "runn')
    _, message = follow.cancel(str(tmp_path))
    assert cancelled == ["7"] and message.startswith("cancelled job 7")
    assert follow.read_state(tmp_path)["state"] == "cancelled"
