"""Huge pages for large tensors: what the workers' environment gets, and that glibc acts on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.distribute import launcher, memory
from harness.distribute.memory import glibc_reads_it, huge_page_env, huge_page_export, thp_mode

# A process that maps a fresh 64 MiB block through malloc, as TensorFlow does for a large op's
# output, writes every byte, and prints the minor page faults this cost.
TOUCH_64_MIB = r"""
import ctypes, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = 64 * 2**20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size)
ctypes.memset(block, 1, size)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}),
        (
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"},
        ),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, {}),  # the user's own choice stays
    ],
)
def test_the_tunable_is_added_to_the_users_own(environ: dict[str, str], expected: dict[str, str]) -> None:
    assert huge_page_env(environ) == expected


def test_the_job_script_line_keeps_the_jobs_own_tunables() -> None:
    line = huge_page_export()
    done = subprocess.run(
        ["sh", "-c", f"{line} && echo $GLIBC_TUNABLES"],
        env={"PATH": os.environ["PATH"], "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    done = subprocess.run(
        ["sh", "-c", f"{line} && echo $GLIBC_TUNABLES"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("huge_pages", [True, False])
def test_local_workers_start_with_the_setting_unless_turned_off(
    huge_pages: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, str]] = []
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(
        launcher, "run_workers", lambda commands, shares=None: started.extend(e for _, e in commands) or 0
    )
    assert launcher.launch(["train"], 2, "multiworker", pin=False, huge_pages=huge_pages) == 0
    assert len(started) == 2
    assert all(("GLIBC_TUNABLES" in env) == huge_pages for env in started)
    assert all(env.get("HARNESS_RANK") == str(rank) for rank, env in enumerate(started))


@pytest.mark.skipif(
    thp_mode() != "madvise" or not glibc_reads_it(),
    reason="needs glibc 2.35+ and transparent huge pages on request (madvise)",
)
def test_glibc_puts_a_large_block_on_huge_pages_with_the_setting() -> None:
    """The effect the setting is for, measured in a real process: far fewer page faults."""

    def faults(extra: dict[str, str]) -> int:
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        done = subprocess.run(
            [sys.executable, "-c", TOUCH_64_MIB], env={**env, **extra}, capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    plain = faults({})
    huge = faults(huge_page_env({}))
    assert plain >= 64 * 2**20 // 4096  # one fault per 4 KiB page
    assert huge * 8 < plain, (plain, huge)


@pytest.mark.skipif(not glibc_reads_it(), reason="glibc reads the setting from 2.35 on")
@pytest.mark.parametrize("huge_pages", [True, False])
def test_harness_train_in_one_process_starts_itself_with_the_setting(huge_pages: bool, tmp_path: Path) -> None:
    """Before anything is loaded: the run records the setting, and the command as it was typed."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    args = [
        "train",
        "data.dataset=iris",
        "model.name=mlp",
        "training.epochs=1",
        "training.progress=none",
        "report.html=false",
        "report.plots=false",
        "run.name=r",
        f"distribute.huge_pages={str(huge_pages).lower()}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads((tmp_path / "runs" / "r" / "env.json").read_text())
    assert ("GLIBC_TUNABLES" in recorded["variables"]) == huge_pages
    assert recorded["command"].split()[1:] == args  # the same arguments, after the restart


def test_a_restart_that_cannot_happen_goes_on_without_huge_pages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The interpreter's file gone (an environment upgraded under a running job): no traceback."""

    def gone(*_: object) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(memory, "glibc_reads_it", lambda: True)
    monkeypatch.setattr(memory.os, "execve", gone)
    memory.restart_with_huge_pages()  # returns: the command goes on in this process
    err = capsys.readouterr().err
    assert "could not start again with huge pages" in err
    assert "No such file or directory" in err
    assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in err
