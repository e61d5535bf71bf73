"""A watchdog that ends a stalled distributed process instead of letting it hang forever.

Collectives block until every rank arrives; if a peer died, the others would wait for ever and
burn an allocation. Each rank beats the watchdog after every compiled chunk; if no beat arrives
within the timeout, the process prints which ranks went quiet and exits non-zero, so Slurm or
the launcher ends the job.

To name the lost ranks, every rank's watchdog thread also writes a small heartbeat file (alive,
and the last progress it made) on the output filesystem, which on a cluster is shared by all
nodes: a rank whose file stopped changing died; a rank alive but behind the others is the one
everybody waits for.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_STALLED = 3
CLOCK_SKEW_S = 60.0
"""Heartbeats dated this much before our own start come from an earlier run, not from a peer."""
_RANK_FILE = re.compile(r"\.?rank-(\d+)(\.tmp)?")
_FRAME = re.compile(r'File "[^"]*", line \d+')
_NOISE = (
    "Graph execution error",
    "Detected at node",
    "Node: ",
    "<stack traces unavailable>",
    "During handling of the above exception",
    "The above exception was the direct cause",
)
_ERROR_LINE = re.compile(
    r"error: |Fatal Python error|terminate called"  # ours, the interpreter's, C++'s std::terminate
    r"|(?:[A-Za-z_][\w.]*)?(Error|Exception|Exit|Interrupt)\b(:|$)"  # a traceback's last line
)
SUMMARY_CHARS = 300


def message_lines(text: str) -> list[str]:
    """The lines of an error text that say something, without traceback frames and TF's node noise.

    A traceback's frames (`File "<frozen runpy>", line 198, ...` and the source lines under them)
    are indented below a `... (most recent call last):` header; TensorFlow puts the same kind
    of block in front of the real message of every graph error.
    """
    kept: list[str] = []
    in_frames = False
    for raw in re.sub(r"\{\{[^}]*\}\}\s*", "", text).splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.endswith("(most recent call last):"):
            in_frames = True
            continue
        if in_frames and raw[:1].isspace():
            continue
        in_frames = False
        if not _FRAME.match(line) and not line.startswith(_NOISE):
            kept.append(line)
    return kept


def summarize_error(text: str) -> str | None:
    """The line of one error message that says what happened (for an OpError: not its frames)."""
    lines = message_lines(text)
    return lines[0][:SUMMARY_CHARS] if lines else None


def last_error_line(text: str) -> str | None:
    """Why a process failed, from its output: the last exception line (`ValueError: ...`) or `error:` line."""
    found = [line for line in message_lines(text) if _ERROR_LINE.match(line)]
    return found[-1][:SUMMARY_CHARS] if found else None


RESUME_HINT = (
    "A checkpoint saved before this is kept: continue with --resume (with none yet, start again with --overwrite)."
)


def heartbeat_folder(output_dir: Path | str, run_name: str) -> Path:
    """Where a run's ranks keep their heartbeat files: beside the run directory, never inside it."""
    return Path(output_dir) / f".{run_name}.heartbeats"


def remove_heartbeats(folder: Path) -> None:
    """Remove every rank's file and the folder, once all ranks have ended (one killed cannot retire)."""
    if folder.is_symlink() or not folder.is_dir():
        return
    for path in folder.iterdir():
        if _RANK_FILE.fullmatch(path.name) and not path.is_symlink() and path.is_file():
            path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something that is not a heartbeat file is in it: not ours to delete


class Heartbeats:
    """Per-rank heartbeat files beside the run directory (never inside it)."""

    def __init__(self, folder: Path, rank: int, world_size: int, host: str) -> None:
        self.folder = folder
        self.rank = rank
        self.world_size = world_size
        self.host = host
        self.started = time.time()
        # Folders the heartbeat may create (runs/ on a first run): removed again when left empty,
        # so a run that fails before its run directory exists leaves nothing behind.
        self._missing_parents = [path for path in folder.parents if not path.exists()]

    def clear_stale(self) -> None:
        """Remove heartbeat files an earlier run left behind (a rank killed with SIGKILL cannot retire).

        Every rank removes its own old file before it writes a new one. The chief also removes the
        files of ranks this run does not have and peers' files dated before it started (a peer's
        fresh file removed by a clock skew is rewritten within a second). Nothing but `rank-N`
        heartbeat files is touched, and a folder that is not a plain directory is left alone.
        """
        if self.folder.is_symlink() or not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            match = _RANK_FILE.fullmatch(path.name)
            if match is None or path.is_symlink() or not path.is_file():
                continue
            rank, temporary = int(match.group(1)), match.group(2) is not None
            if rank == self.rank or rank >= self.world_size or (
                self.rank == 0 and not temporary and self._record(path, since=self.started) is None
            ):
                path.unlink(missing_ok=True)

    def write(self, progress: int, what: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".rank-{self.rank}.tmp"
        record = {
            "rank": self.rank,
            "host": self.host,
            "time": time.time(),
            "progress": progress,
            "what": what,
        }
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.folder / f"rank-{self.rank}")

    def read(self) -> dict[int, dict[str, Any]]:
        """This run's heartbeat of every rank that wrote one; unreadable or older files count as none."""
        found = {}
        for rank in range(self.world_size):
            record = self._record(self.folder / f"rank-{rank}", since=self.started - CLOCK_SKEW_S)
            if record is not None:
                found[rank] = record
        return found

    def _record(self, path: Path, since: float) -> dict[str, Any] | None:
        """A well-formed record written at `since` or later, else None."""
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not _well_formed(record):
            return None
        return record if record["time"] >= since else None

    def culprits(self, dead_after_s: float, include_behind: bool = True) -> list[str]:
        """Other ranks that stopped beating (dead); else, optionally, those alive but behind."""
        now = time.time()
        records = {r: rec for r, rec in self.read().items() if r != self.rank}
        others = [r for r in range(self.world_size) if r != self.rank]
        dead = [f"rank {r} (never reported)" for r in others if r not in records]
        dead += [
            f"rank {r} on {rec['host']} (silent for {now - rec['time']:.0f}s; last {rec['what']})"
            for r, rec in sorted(records.items())
            if now - rec["time"] > dead_after_s
        ]
        if dead or not include_behind or not records:
            return dead
        mine = self.read().get(self.rank, {}).get("progress", 0)
        return [
            f"rank {r} on {rec['host']} (alive but behind: {rec['what']})"
            for r, rec in sorted(records.items())
            if rec["progress"] < mine
        ]

    def retire(self) -> None:
        """Remove this rank's file, and the folder once every rank has retired.

        Each rank removes only its own file (after its writer thread has stopped), so a rank that
        finishes early cannot have its folder re-created by a slower peer; the last one out
        removes the empty folder, and the output folder if the heartbeats created it.
        """
        for name in (f"rank-{self.rank}", f".rank-{self.rank}.tmp"):
            (self.folder / name).unlink(missing_ok=True)
        for folder in (self.folder, *self._missing_parents):
            try:
                folder.rmdir()
            except OSError:
                return  # another rank is still running, the run directory is there, or nothing was made


def _well_formed(record: Any) -> bool:
    """The fields `culprits` uses, with their types: a damaged file must not stop the watchdog."""
    return (
        isinstance(record, dict)
        and _number(record.get("time"))
        and _number(record.get("progress"))
        and isinstance(record.get("host"), str)
        and isinstance(record.get("what"), str)
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Watchdog:
    """Exit the process if `beat` is not called for `timeout_s` seconds while armed.

    `clock` (monotonic seconds) measures the time between beats; tests pass a fake one and call
    `check` themselves, so a timeout is tested without waiting for it.
    """

    def __init__(
        self,
        timeout_s: float,
        describe: Callable[[], str],
        heartbeats: Heartbeats | None = None,
        exit_fn: Callable[[int], None] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.heartbeats = heartbeats
        self._describe = describe
        self._exit = exit_fn
        self._clock = clock
        self._last = clock()
        self._progress = 0
        self._what = "starting"
        self._armed = False
        self._fired = False
        self._checking = threading.Lock()
        self._stop = threading.Event()
        self._interval = min(1.0, timeout_s / 4)
        self._thread = threading.Thread(target=self._watch, name="harness-watchdog", daemon=True)

    def start(self) -> Watchdog:
        if self.heartbeats is not None:
            try:
                self.heartbeats.clear_stale()
            except OSError:
                pass  # an unreachable folder only costs the naming of lost ranks
        self._armed = True
        self._thread.start()
        return self

    def beat(self, what: str) -> None:
        """Record progress; `what` says where the rank is, for the message if it stalls."""
        self._last = self._clock()
        self._progress += 1
        self._what = what

    def pause(self) -> None:
        """Disarm for work that is not collective (evaluation and saving on the chief)."""
        self._armed = False

    def stop(self) -> None:
        """Stop the thread and wait for it, so no heartbeat is written after this returns."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def check(self) -> bool:
        """What the thread does every interval: write this rank's heartbeat, and exit if armed and
        no beat came within the timeout. True once the watchdog has fired (it fires only once)."""
        with self._checking:
            if self._fired:
                return True
            if self.heartbeats is not None:
                self._safe_heartbeat()
            stalled = self._clock() - self._last
            if self._armed and stalled > self.timeout_s:
                self._fired = True
                self._fail(stalled)
            return self._fired

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            if self.check():
                return

    def _safe_heartbeat(self) -> None:
        try:
            assert self.heartbeats is not None
            self.heartbeats.write(self._progress, self._what)
        except OSError:
            pass  # a full or unreachable filesystem must not kill training; only naming suffers

    def explain_failure(self, error: str, settle_s: float = 6.0) -> str:
        """Message for a collective that failed outright: wait for heartbeats to show who died."""
        culprits: list[str] = []
        if self.heartbeats is not None:
            dead_after = max(3.0, 3 * self._interval)
            deadline = time.monotonic() + dead_after + settle_s
            time.sleep(dead_after)  # a rank that just died still has a fresh heartbeat file
            while not culprits and time.monotonic() < deadline:
                culprits = self.heartbeats.culprits(dead_after, include_behind=False)
                time.sleep(0.5)
        named = f" Lost: {'; '.join(culprits)}." if culprits else ""
        return (
            f"a collective operation failed after {self._what}: {error}.{named} {self._describe()} "
            f"{RESUME_HINT}"
        )

    def _fail(self, stalled: float) -> None:
        try:
            culprits = self.heartbeats.culprits(dead_after_s=max(5.0, 5 * self._interval)) if self.heartbeats else []
        except OSError:
            culprits = []  # the exit below matters more than naming the culprits
        named = f" Waiting for: {'; '.join(culprits)}." if culprits else ""
        print(
            f"error: no progress for {stalled:.0f}s (distribute.timeout_s={self.timeout_s:g}) after "
            f"{self._what}.{named} {self._describe()} A peer rank probably died or hangs; exiting so "
            f"the job does not wait for ever. {RESUME_HINT}",
            file=sys.stderr,
            flush=True,
        )
        self._exit(EXIT_STALLED)
