"""The watchdog, heartbeat files and the failure summaries a stalled or failed rank prints."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from harness.distribute.watchdog import (
    EXIT_STALLED,
    Heartbeats,
    Watchdog,
    heartbeat_folder,
    last_error_line,
    remove_heartbeats,
    summarize_error,
)
from tests.conftest import wait_until


class FakeClock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_watchdog_exits_when_no_beat_arrives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exits: list[int] = []
    clock = FakeClock()
    beats = Heartbeats(tmp_path, rank=0, world_size=2, host="n1")
    dog = Watchdog(0.8, lambda: "ranks: 0 on n1, 1 on n2.", beats, exit_fn=exits.append, clock=clock).start()
    try:
        clock.advance(0.8)
        assert not dog.check() and exits == []  # the timeout itself is not yet a stall
        clock.advance(4.2)
        assert dog.check()
        assert dog.check()  # it fires once
    finally:
        dog.stop()
    assert exits == [EXIT_STALLED]
    err = capsys.readouterr().err
    assert "error: no progress for 5s (distribute.timeout_s=0.8) after starting." in err
    assert "Waiting for: rank 1 (never reported)." in err and "ranks: 0 on n1, 1 on n2." in err


def test_watchdog_stays_quiet_while_beating_and_while_paused() -> None:
    exits: list[int] = []
    clock = FakeClock()
    dog = Watchdog(0.8, lambda: "", None, exit_fn=exits.append, clock=clock).start()
    try:
        for step in range(12):  # 6 s in all, far past the timeout, but never 0.8 s without a beat
            clock.advance(0.5)
            assert not dog.check(), step
            dog.beat(f"step {step}")
        dog.pause()
        clock.advance(60.0)  # a paused watchdog does not fire (evaluation on the chief alone)
        assert not dog.check()
    finally:
        dog.stop()
    assert exits == []


def test_heartbeats_name_the_silent_rank(tmp_path: Path) -> None:
    me = Heartbeats(tmp_path, rank=0, world_size=3, host="n1")
    me.write(10, "epoch 2")
    Heartbeats(tmp_path, rank=1, world_size=3, host="n2").write(10, "epoch 2")
    old = {"rank": 2, "host": "n3", "time": time.time() - 60, "progress": 4, "what": "epoch 1"}
    (tmp_path / "rank-2").write_text(json.dumps(old))
    culprits = me.culprits(dead_after_s=5)
    assert len(culprits) == 1 and culprits[0].startswith("rank 2 on n3 (silent for 60s")


def test_heartbeats_name_a_rank_that_is_alive_but_behind(tmp_path: Path) -> None:
    me = Heartbeats(tmp_path, rank=0, world_size=2, host="n1")
    me.write(10, "epoch 2")
    Heartbeats(tmp_path, rank=1, world_size=2, host="n2").write(3, "epoch 1, loading data")
    assert me.culprits(dead_after_s=5) == ["rank 1 on n2 (alive but behind: epoch 1, loading data)"]
    assert me.culprits(dead_after_s=5, include_behind=False) == []
    assert Heartbeats(tmp_path / "none", 0, 2, "n1").culprits(5) == ["rank 1 (never reported)"]


def rank_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("rank-")) if folder.is_dir() else []


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_heartbeat_folder_goes_when_the_last_rank_retires(tmp_path: Path, order: tuple[int, int]) -> None:
    folder = tmp_path / ".run.heartbeats"
    before = set(threading.enumerate())
    dogs = {}
    for rank in (0, 1):
        beats = Heartbeats(folder, rank=rank, world_size=2, host="n1")
        dogs[rank] = Watchdog(0.8, lambda: "", beats, exit_fn=lambda code: None).start()
        dogs[rank].pause()  # keep beating files, never fire
    threads = set(threading.enumerate()) - before
    wait_until(lambda: rank_files(folder) == ["rank-0", "rank-1"], 10, what="both ranks' first heartbeat")
    first, last = order
    dogs[first].stop()
    assert dogs[first].heartbeats is not None
    dogs[first].heartbeats.retire()
    beat_before = (folder / f"rank-{last}").read_text()
    # the other rank keeps beating; its file, and the folder, stay
    wait_until(lambda: (folder / f"rank-{last}").read_text() != beat_before, 10, what=f"rank {last} to beat again")
    assert rank_files(folder) == [f"rank-{last}"]
    dogs[last].stop()
    assert dogs[last].heartbeats is not None
    dogs[last].heartbeats.retire()
    assert not folder.exists()
    assert len(threads) == 2 and not any(thread.is_alive() for thread in threads)  # nothing writes any more


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
    clock = FakeClock()
    watchdog = Watchdog(0.2, lambda: "", Heartbeats(folder, 1, 2, "n2"), exit_fn=codes.append, clock=clock).start()
    try:
        clock.advance(1.0)
        assert watchdog.check()
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
