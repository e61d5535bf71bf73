"""Start N worker processes on this machine, stream their output by rank, fail if one fails.

Workers get the launcher's environment (`HARNESS_RANK`, ...) and a free port range; over Gloo,
Horovod workers meet at a rendezvous served by rank 0 (as inside a Slurm step), over MPI they
are started through `horovodrun`. When one worker fails, the others are stopped at once, the
message names the rank that failed first and its error line, and the launcher exits with that
rank's code (2 for bad input, 75 when stopped with a checkpoint, 128+N when killed by signal N).

SIGTERM and SIGUSR2 (a scheduler's stop or time-limit warning) are passed on to every worker,
which checkpoints and stops; like after Ctrl-C, a worker still running after a grace period is
killed, so no worker outlives the launcher.
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
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO

from harness.distribute.cluster import launcher_env, port_free
from harness.distribute.cores import SHARES_VARIABLE, describe, inherited_affinity, shares_value, worker_shares
from harness.distribute.memory import huge_page_env
from harness.distribute.watchdog import last_error_line
from harness.errors import LaunchError

GRACE_S = 10.0
POLL_S = 0.2
FORWARDED = (signal.SIGTERM, signal.SIGUSR2)
EXIT_INTERRUPTED = 130
TAIL_LINES = 200


def free_port_range(count: int, attempts: int = 50) -> int:
    """A base port such that base .. base+count-1 are all free on this machine right now."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count < 65535 and all(port_free(base + i, "127.0.0.1") for i in range(count)):
            return base
    raise LaunchError(f"could not find {count} consecutive free ports on 127.0.0.1")


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
    """One child process whose output is copied to ours, line by line, with a rank prefix.

    The last lines are kept so a failure can be explained by the worker's own error line.
    """

    def __init__(
        self,
        rank: int,
        command: list[str],
        extra_env: Mapping[str, str],
        prefix: bool,
        cores: Sequence[int] | None = None,
    ) -> None:
        self.rank = rank
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        # The worker's own environment: the launcher's variables tell the child where it sits.
        env = {**os.environ, **extra_env, "PYTHONUNBUFFERED": "1"}
        process: subprocess.Popen[str] | None = None
        try:
            with inherited_affinity(cores):  # the child starts on its own cores (harness.distribute.cores)
                process = subprocess.Popen(
                    command,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    start_new_session=True,
                )
            label = f"[rank {rank}] " if prefix else ""
            self.pump = threading.Thread(target=_copy_lines, args=(process.stdout, label, self.tail), daemon=True)
            self.pump.start()
        except BaseException:
            # Ctrl-C between the child's start and here: nobody else knows this child, stop it now.
            if process is not None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise
        self.process = process

    def send(self, sig: int) -> None:
        """Send `sig` to the worker and everything it started (its own session)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def error_line(self) -> str | None:
        self.pump.join(timeout=5)  # the last lines arrive after the exit status
        return last_error_line("\n".join(self.tail))


def _copy_lines(stream: IO[str] | None, label: str, tail: deque[str]) -> None:
    if stream is None:
        return
    for line in stream:
        tail.append(line.rstrip("\n"))
        try:
            sys.stdout.write(label + line)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass  # our output is gone (a closed pipe): keep draining so the worker never blocks


def exit_code_of(returncode: int) -> int:
    """A worker killed by signal N reads 128+N, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def launch(
    args: Sequence[str],
    workers: int,
    strategy: str,
    controller: str = "gloo",
    pin: bool = True,
    huge_pages: bool = True,
) -> int:
    """Run `harness ARGS` in `workers` processes; 0 only if every process exits 0.

    With `pin`, each worker runs on its own share of the cores: pinned as we start it, or, for
    the ranks horovodrun's mpirun starts unbound, pinned by itself (`cores.SHARES_VARIABLE`).
    With `huge_pages`, large tensors use transparent huge pages (harness.distribute.memory).
    """
    commands = worker_commands(args, workers, strategy, controller)
    if huge_pages:
        extra = huge_page_env(os.environ)
        commands = [(command, {**env, **extra}) for command, env in commands]
    shares = worker_shares(workers) if pin else None
    if shares:
        print(f"harness: each worker on its own cores ({describe(shares)}; distribute.pin_workers)", flush=True)
    if len(commands) == 1 and workers > 1:
        # horovodrun starts the ranks unbound: each pins itself to its share as it starts
        if shares:
            commands = [(command, {**env, SHARES_VARIABLE: shares_value(shares)}) for command, env in commands]
        return run_workers(commands)
    return run_workers(commands, shares=shares)


def run_workers(
    commands: Sequence[tuple[list[str], Mapping[str, str]]],
    grace_s: float = GRACE_S,
    shares: Sequence[Sequence[int]] | None = None,
) -> int:
    """Start one process per command (the i-th on `shares[i]`'s cores when given) and supervise
    them; the exit code of the first to fail, else 0."""
    received: list[int] = []
    with _forwarding(received):
        started = _start(commands, shares)
        try:
            return _supervise(started, received, grace_s)
        except KeyboardInterrupt:
            for worker in started:
                worker.send(signal.SIGINT)
            _reap(started, {}, grace_s)
            return EXIT_INTERRUPTED


def _start(
    commands: Sequence[tuple[list[str], Mapping[str, str]]], shares: Sequence[Sequence[int]] | None = None
) -> list[_Worker]:
    """Start every worker, or none: a worker that cannot start stops those already running."""
    started: list[_Worker] = []
    try:
        for rank, (command, env) in enumerate(commands):
            cores = shares[rank] if shares else None
            started.append(_Worker(rank, command, env, prefix=len(commands) > 1, cores=cores))
    except BaseException as err:
        for worker in started:
            worker.send(signal.SIGKILL)
        _reap(started, {}, 0.0)
        if isinstance(err, OSError):
            program = commands[len(started)][0][0]
            raise LaunchError(f"could not start worker {len(started)} ({program}): {err}") from None
        raise
    return started


@contextmanager
def _forwarding(received: list[int]) -> Iterator[None]:
    """Note SIGTERM and SIGUSR2 while the workers run (only the main thread can handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(workers: list[_Worker], received: list[int], grace_s: float) -> int:
    ended: dict[int, int] = {}  # rank -> exit code, in the order the exits were seen
    while True:
        _poll(workers, ended)
        if received:
            return _stop_on_request(workers, received, ended, grace_s)
        failed = [rank for rank, code in ended.items() if code != 0]
        if failed:
            return _stop_after_failure(workers, failed[0], ended, grace_s)
        if len(ended) == len(workers):
            _join(workers)
            return 0
        time.sleep(POLL_S)


def _stop_after_failure(workers: list[_Worker], rank: int, ended: dict[int, int], grace_s: float) -> int:
    """Stop the other ranks (they would wait for the failed one for ever) and return its code."""
    code = ended[rank]
    others = [w for w in workers if w.rank not in ended]
    if len(workers) > 1:
        reason = workers[rank].error_line()
        stopping = f"; stopping ranks {', '.join(str(w.rank) for w in others)}" if others else ""
        print(
            f"error: rank {rank} exited with code {code}{f' ({reason})' if reason else ''}{stopping}",
            file=sys.stderr,
            flush=True,
        )
    for worker in others:
        worker.send(signal.SIGTERM)
    _reap(workers, ended, grace_s)
    _join(workers)
    return code


def _stop_on_request(workers: list[_Worker], received: list[int], ended: dict[int, int], grace_s: float) -> int:
    """Pass the stop signal(s) on, give the workers `grace_s` to checkpoint, then follow their codes."""
    names = ", ".join(signal.Signals(sig).name for sig in received)
    running = [w for w in workers if w.rank not in ended]
    if running:
        print(
            f"received {names}: passing it to ranks {', '.join(str(w.rank) for w in running)}; "
            f"waiting up to {grace_s:g}s for them to save a checkpoint and stop",
            file=sys.stderr,
            flush=True,
        )
    forwarded = 0
    deadline = time.monotonic() + grace_s
    while True:
        for sig in received[forwarded:]:
            for worker in workers:
                worker.send(sig)
        forwarded = len(received)
        _poll(workers, ended)
        if len(ended) == len(workers) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    _reap(workers, ended, 0.0)
    _join(workers)
    return next((code for code in ended.values() if code != 0), 0)


def _poll(workers: list[_Worker], ended: dict[int, int]) -> None:
    for worker in workers:
        if worker.rank not in ended and (code := worker.process.poll()) is not None:
            ended[worker.rank] = exit_code_of(code)


def _reap(workers: list[_Worker], ended: dict[int, int], grace_s: float) -> None:
    """Wait up to `grace_s` for every worker to exit, then kill the rest; a second Ctrl-C kills at once."""
    deadline = time.monotonic() + grace_s
    try:
        while True:
            _poll(workers, ended)
            if len(ended) == len(workers) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        pass
    for worker in workers:
        if worker.rank not in ended:
            worker.send(signal.SIGKILL)
            ended[worker.rank] = exit_code_of(worker.process.wait())


def _join(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.pump.join(timeout=5)
