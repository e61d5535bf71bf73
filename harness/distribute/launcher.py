"""Start N worker processes on this machine, stream their output by rank, fail if one fails.

Workers get the launcher's environment (`HARNESS_RANK`, ...) and a free port range; over Gloo,
Horovod workers meet at a rendezvous served by rank 0 (as inside a Slurm step), over MPI they
are started through `horovodrun`. When one worker
fails, the others are stopped at once and the message names the rank that failed first.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

from harness.distribute.cluster import launcher_env
from harness.errors import LaunchError

GRACE_S = 10.0


def free_port_range(count: int, attempts: int = 50) -> int:
    """A base port such that base .. base+count-1 are all free on this machine right now."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count < 65535 and all(_port_free(base + i) for i in range(count)):
            return base
    raise LaunchError(f"could not find {count} consecutive free ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_commands(
    args: Sequence[str], workers: int, strategy: str, controller: str, python: str = sys.executable
) -> list[tuple[list[str], dict[str, str]]]:
    """The command and extra environment of each process to start (one entry for horovodrun)."""
    child = [python, "-m", "harness", *args]
    if strategy == "horovod" and controller == "mpi":
        return [(horovodrun_command(child, workers, controller), {})]
    # tf.distribute workers listen on port..port+N-1; Horovod's Gloo rendezvous uses port+N.
    port = free_port_range(workers + 1)
    return [(child, launcher_env(rank, workers, port)) for rank in range(workers)]


def horovodrun_command(child: list[str], workers: int, controller: str) -> list[str]:
    runner = shutil.which("horovodrun") or os.path.join(os.path.dirname(child[0]), "horovodrun")
    if not os.path.exists(runner):
        raise LaunchError("horovodrun not found: install Horovod with scripts/install_horovod.sh")
    command = [runner, "-np", str(workers), "-H", f"localhost:{workers}", f"--{controller}"]
    if controller == "mpi" and os.geteuid() == 0:
        command.append("--mpi-args=--allow-run-as-root")
    return [*command, *child]


class _Worker:
    """One child process whose output is copied to ours, line by line, with a rank prefix."""

    def __init__(self, rank: int, command: list[str], extra_env: Mapping[str, str], prefix: bool) -> None:
        self.rank = rank
        env = {**os.environ, **extra_env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        label = f"[rank {rank}] " if prefix else ""
        self.pump = threading.Thread(target=_copy_lines, args=(self.process.stdout, label), daemon=True)
        self.pump.start()

    def stop(self, sig: int) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass


def _copy_lines(stream: IO[str] | None, label: str) -> None:
    if stream is None:
        return
    for line in stream:
        sys.stdout.write(label + line)
        sys.stdout.flush()


def launch(args: Sequence[str], workers: int, strategy: str, controller: str = "gloo") -> int:
    """Run `harness ARGS` in `workers` processes; 0 only if every process exits 0."""
    commands = worker_commands(args, workers, strategy, controller)
    started = [_Worker(rank, cmd, env, prefix=len(commands) > 1) for rank, (cmd, env) in enumerate(commands)]
    try:
        return _wait(started)
    except KeyboardInterrupt:
        for worker in started:
            worker.stop(signal.SIGINT)
        _reap(started, GRACE_S)
        return 130


def _wait(workers: list[_Worker]) -> int:
    while True:
        codes = {w.rank: w.process.poll() for w in workers}
        failed = [rank for rank, code in codes.items() if code not in (None, 0)]
        if failed:
            rank = failed[0]
            others = [w for w in workers if w.process.poll() is None]
            if others:
                print(
                    f"error: rank {rank} exited with code {codes[rank]}; stopping ranks "
                    f"{', '.join(str(w.rank) for w in others)}",
                    file=sys.stderr,
                    flush=True,
                )
                for worker in others:
                    worker.stop(signal.SIGTERM)
                _reap(workers, GRACE_S)
            for worker in workers:
                worker.pump.join(timeout=5)
            return 1
        if all(code == 0 for code in codes.values()):
            for worker in workers:
                worker.pump.join(timeout=5)
            return 0
        time.sleep(0.2)


def _reap(workers: list[_Worker], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.stop(signal.SIGKILL)
            worker.process.wait()
