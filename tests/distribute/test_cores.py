"""Each local worker on its own share of the cores (harness.distribute.cores and the launcher)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.distribute import cores, launcher

needs_two_cores = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores"
)

AFFINITY_SCRIPT = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(sorted(os.sched_getaffinity(0))))"


@pytest.mark.parametrize(
    ("workers", "available", "expected"),
    [
        (2, [0, 1], [[0], [1]]),
        (2, list(range(8)), [[0, 1, 2, 3], [4, 5, 6, 7]]),
        (3, list(range(8)), [[0, 1, 2], [3, 4, 5], [6, 7]]),  # sizes differ by one at most
        (2, [9, 2, 7, 5], [[2, 5], [7, 9]]),  # a taskset or cgroup set: its own cores, in order
        (4, [0, 1], None),  # fewer cores than workers: nothing to split
        (1, [0, 1, 2], None),  # one worker keeps every core
    ],
)
def test_the_cores_are_split_into_disjoint_contiguous_shares(
    workers: int, available: list[int], expected: list[list[int]] | None
) -> None:
    shares = cores.core_shares(workers, available)
    assert shares == expected
    if shares:
        assert sorted(c for share in shares for c in share) == sorted(available)


def test_the_shares_are_described_per_rank() -> None:
    assert cores.describe([[0, 1, 2, 3], [4, 5, 6, 7]]) == "rank 0: cores 0-3, rank 1: cores 4-7"
    assert cores.describe([[0], [2, 5]]) == "rank 0: core 0, rank 1: cores 2,5"


def read_affinities(folder: Path, workers: int) -> list[list[int]]:
    return [json.loads((folder / f"cpus-{rank}").read_text()) for rank in range(workers)]


def affinity_commands(folder: Path, workers: int) -> list[tuple[list[str], dict[str, str]]]:
    return [([sys.executable, "-c", AFFINITY_SCRIPT, str(folder / f"cpus-{rank}")], {}) for rank in range(workers)]


@needs_two_cores
def test_each_started_worker_runs_on_its_own_share_and_the_launcher_keeps_its_cores(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    shares = cores.worker_shares(2)
    assert shares is not None
    assert launcher.run_workers(affinity_commands(tmp_path, 2), grace_s=30, shares=shares) == 0
    seen = read_affinities(tmp_path, 2)
    assert seen == shares and not set(seen[0]) & set(seen[1])
    assert os.sched_getaffinity(0) == before  # restored after each start


@needs_two_cores
@pytest.mark.parametrize("pin", [True, False])
def test_launch_pins_unless_told_not_to(
    pin: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launcher, "worker_commands", lambda *args: affinity_commands(tmp_path, 2))
    assert launcher.launch(["train"], 2, "multiworker", "gloo", pin) == 0
    seen = read_affinities(tmp_path, 2)
    everything = sorted(os.sched_getaffinity(0))
    out = capsys.readouterr().out
    if pin:
        assert seen == cores.worker_shares(2)
        assert "each worker on its own cores (rank 0: core" in out and "distribute.pin_workers" in out
    else:
        assert seen == [everything, everything]
        assert "own cores" not in out


def test_horovodrun_ranks_get_their_shares_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """horovodrun's mpirun starts every rank unbound (`-bind-to none`): the shares go down as a variable."""
    seen: list[tuple[object, object]] = []
    monkeypatch.setattr(launcher, "horovodrun_command", lambda child, n, c: ["horovodrun", *child])
    monkeypatch.setattr(launcher, "worker_shares", lambda n: [[0], [1]] if n == 2 else None)
    monkeypatch.setattr(launcher, "run_workers", lambda commands, **kw: seen.append((commands, kw)) or 0)
    assert launcher.launch(["train"], 2, "horovod", "mpi", True, False) == 0
    [(commands, kwargs)] = seen
    assert kwargs == {} and commands[0][1][cores.SHARES_VARIABLE] == "0;1"
    seen.clear()
    assert launcher.launch(["train"], 2, "horovod", "mpi", False, False) == 0
    assert cores.SHARES_VARIABLE not in seen[0][0][0][1]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({cores.SHARES_VARIABLE: "0;1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, [1]),
        ({cores.SHARES_VARIABLE: "1;0", "HOROVOD_LOCAL_RANK": "0"}, [1]),
        ({cores.SHARES_VARIABLE: "0,1", "PMI_LOCAL_RANK": "0"}, [0, 1]),
        ({cores.SHARES_VARIABLE: "0;1"}, None),  # no local rank: nothing says which share
        ({cores.SHARES_VARIABLE: "0;1", "MPI_LOCALRANKID": "2"}, None),  # more ranks than shares
        ({"OMPI_COMM_WORLD_LOCAL_RANK": "0"}, None),
        ({cores.SHARES_VARIABLE: "0;x", "PMI_LOCAL_RANK": "0"}, None),  # malformed: unpinned, not a crash
        ({cores.SHARES_VARIABLE: "0;99999", "PMI_LOCAL_RANK": "1"}, None),  # a core this process may not use
    ],
)
@needs_two_cores
def test_a_rank_pins_itself_to_its_share(env: dict[str, str], expected: list[int] | None) -> None:
    before = os.sched_getaffinity(0)
    try:
        assert cores.pin_from_environment(env) == expected
        assert os.sched_getaffinity(0) == (set(expected) if expected else before)
    finally:
        os.sched_setaffinity(0, before)
