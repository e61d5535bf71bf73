"""The local launcher with real processes: exit codes, signals, failure lines, a killed worker's heartbeat.

The workers here are tiny Python scripts, so each case takes a second; the end-to-end run of
`harness train --workers 2` is in tests/test_bad_input.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.distribute import launcher
from harness.distribute.watchdog import heartbeat_folder
from tests.conftest import wait_until
from tests.distribute.test_watchdog import beat

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
        pid = (tmp_path / f"pid-{rank}").read_text() if (tmp_path / f"pid-{rank}").exists() else ""
        # a waiting rank may be stopped (a peer failed at once) before it got as far as writing its pid
        assert not pid or not pid_alive(int(pid))


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
        "import json, signal, sys\n"
        # as in a terminal; under a shell without job control (`sh -c '... &'`) Ctrl-C is ignored
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
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
    wait_until(
        lambda: all((folder / f"pid-{rank}").exists() for rank in range(len(behaviours))),
        what="every worker to start and write its pid file",
    )
    return proc


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Launchers a test started; after it, none of them or their workers is left running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid_file in tmp_path.glob("pid-*"):  # workers run in their own sessions: kill them by pid
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


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


def test_a_ctrl_c_while_a_worker_starts_leaves_no_worker_running(
    worker_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after a child started but before the launcher took it in: that child is stopped too."""
    spawned: list[subprocess.Popen[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        spawned.append(real_popen(*args, **kwargs))  # type: ignore[call-overload]
        return spawned[-1]

    def interrupted_start(self: threading.Thread) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(launcher.threading.Thread, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        launcher.run_workers(commands(worker_script, tmp_path, "wait", "wait"), grace_s=5)
    assert len(spawned) == 1 and spawned[0].poll() is not None  # the first child, already reaped
