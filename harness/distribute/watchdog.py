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
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_STALLED = 3


class Heartbeats:
    """Per-rank heartbeat files beside the run directory (never inside it)."""

    def __init__(self, folder: Path, rank: int, world_size: int, host: str) -> None:
        self.folder = folder
        self.rank = rank
        self.world_size = world_size
        self.host = host

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
        found = {}
        for rank in range(self.world_size):
            try:
                found[rank] = json.loads((self.folder / f"rank-{rank}").read_text())
            except (OSError, ValueError):
                continue
        return found

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
        removes the empty folder.
        """
        for name in (f"rank-{self.rank}", f".rank-{self.rank}.tmp"):
            (self.folder / name).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass  # another rank is still running, or the folder never existed


class Watchdog:
    """Exit the process if `beat` is not called for `timeout_s` seconds while armed."""

    def __init__(
        self,
        timeout_s: float,
        describe: Callable[[], str],
        heartbeats: Heartbeats | None = None,
        exit_fn: Callable[[int], None] = os._exit,
    ) -> None:
        self.timeout_s = timeout_s
        self.heartbeats = heartbeats
        self._describe = describe
        self._exit = exit_fn
        self._last = time.monotonic()
        self._progress = 0
        self._what = "starting"
        self._armed = False
        self._stop = threading.Event()
        self._interval = min(1.0, timeout_s / 4)
        self._thread = threading.Thread(target=self._watch, name="harness-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._armed = True
        self._thread.start()
        return self

    def beat(self, what: str) -> None:
        """Record progress; `what` says where the rank is, for the message if it stalls."""
        self._last = time.monotonic()
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

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            if self.heartbeats is not None:
                self._safe_heartbeat()
            stalled = time.monotonic() - self._last
            if self._armed and stalled > self.timeout_s:
                self._fail(stalled)
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
            "The latest checkpoint is kept; continue with --resume."
        )

    def _fail(self, stalled: float) -> None:
        culprits = self.heartbeats.culprits(dead_after_s=max(5.0, 5 * self._interval)) if self.heartbeats else []
        named = f" Waiting for: {'; '.join(culprits)}." if culprits else ""
        print(
            f"error: no progress for {stalled:.0f}s (distribute.timeout_s={self.timeout_s:g}) after "
            f"{self._what}.{named} {self._describe()} A peer rank probably died or hangs; exiting so "
            "the job does not wait for ever. The latest checkpoint is kept; continue with --resume.",
            file=sys.stderr,
            flush=True,
        )
        self._exit(EXIT_STALLED)
