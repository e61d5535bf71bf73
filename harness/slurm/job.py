"""What every task of a submitted job runs, and how it survives preemption and time limits.

submitit pickles a `TrainJob` into the job folder and calls it in every task. Slurm signals the
job (USR2) `slurm.signal_delay_s` before its time limit; submitit then calls `checkpoint()` in the
chief's main thread (preemption comes as SIGTERM instead: see `_on_terminate`). Training
therefore runs in a worker thread: `checkpoint` sets the stop flag, waits until every rank has
stopped at the same step and the chief has saved a checkpoint, and hands submitit a copy of the
job to requeue. The requeued job runs the same saved config and resumes from that checkpoint
(`resume="auto"`).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.helpers import DelayedSubmission

from harness.distribute.cluster import ClusterEnv, detect
from harness.errors import Preempted
from harness.rundir import RunDir

JOIN_POLL_S = 0.5
"""Join the training thread in slices so the main thread stays free to run signal handlers."""


@dataclass
class _Outcome:
    result: Path | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class TrainJob:
    """Train the run saved in `run_dir/slurm/config.yaml`; resume from its checkpoint if it has one."""

    def __init__(self, run_dir: str, config_path: str | None, command: str, max_requeues: int, grace_s: int) -> None:
        self.run_dir = run_dir
        self.config_path = config_path
        self.command = command
        self.max_requeues = max_requeues
        self.grace_s = grace_s
        self._stop = threading.Event()
        self._outcome = _Outcome()
        self._thread: threading.Thread | None = None
        self._context: ClusterEnv | None = None

    @property
    def context(self) -> ClusterEnv:
        """This task's job context, read from its environment once and handed to training."""
        if self._context is None:
            self._context = detect(os.environ)
        return self._context

    def __getstate__(self) -> dict[str, Any]:
        """Threads and events do not pickle; a requeued copy starts with fresh ones."""
        return {key: value for key, value in self.__dict__.items() if not key.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stop = threading.Event()
        self._outcome = _Outcome()
        self._thread = None
        self._context = None

    def __call__(self) -> str:
        print(task_banner(self.context), flush=True)
        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._on_terminate) if on_main else None
        try:
            self._thread = threading.Thread(target=self._train, name="harness-train", daemon=True)
            self._thread.start()
            self._wait_for_training()
        finally:
            if on_main:
                signal.signal(signal.SIGTERM, previous)
        error = self._outcome.error
        if isinstance(error, Preempted) and not is_chief(self.context) and self.context.under_slurm:
            self._wait_for_requeue()
        if error is not None:
            raise error
        return str(self._outcome.result)

    def _train(self) -> None:
        from harness.config import load_config
        from harness.train.run import RunRequest, train

        try:
            config = load_config(RunDir(Path(self.run_dir)).job_config)
            config_path = Path(self.config_path) if self.config_path else None
            request = RunRequest(config, config_path, resume="auto", command=self.command)
            self._outcome.result = train(request, stop_requested=self._stop.is_set, cluster=self.context)
        except BaseException as err:
            self._outcome.error = err
        finally:
            self._outcome.done.set()

    def _wait_for_training(self) -> None:
        """Wait, taking SIGTERM back every slice: TensorFlow's coordination service (multiworker)
        installs its own SIGTERM handler at the C level when the strategy starts, which would
        swallow a preemption and lose everything since the last checkpoint."""
        on_main = threading.current_thread() is threading.main_thread()
        while not self._outcome.done.wait(JOIN_POLL_S):
            if on_main:
                signal.signal(signal.SIGTERM, self._on_terminate)

    def _wait_for_requeue(self) -> None:
        """A non-chief rank that stopped waits for the chief to requeue the job, which ends every
        task; exiting first would make srun (--kill-on-bad-exit) kill the chief mid-checkpoint."""
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            time.sleep(1.0)

    def _on_terminate(self, signum: int, frame: Any) -> None:
        """SIGTERM: preemption (Slurm sends it when the job is chosen, then SIGKILL after the
        partition's GraceTime), `scancel`, or the time limit. Stop at the next step with a checkpoint.

        submitit ignores SIGTERM and only checkpoints on USR2, which Slurm sends before a time
        limit but not on preemption; without this a preempted job lost everything since its last
        periodic checkpoint. Slurm (PreemptMode=REQUEUE) requeues a preempted job only if it is
        still running when the grace time ends; one that stops earlier, as this one does, ends as
        FAILED unless it requeues itself. So when the controller confirms the preemption, the chief
        does what it does on USR2: checkpoint, then requeue.
        """
        if self._stop.is_set():
            return  # already stopping (a USR2 came first, or the second SIGTERM at the end of the grace time)
        self._stop.set()
        print(
            "harness: received SIGTERM (preemption, scancel or the time limit): checkpoint at the next step",
            flush=True,
        )
        if not (is_chief(self.context) and self.context.under_slurm) or self._outcome.done.is_set():
            return
        try:
            if preempted(self.context.job_id):
                requeue = signal.getsignal(signal.SIGUSR2)  # submitit's: calls `checkpoint`, then scontrol requeue
                if callable(requeue):
                    print("harness: the job was preempted: requeueing it after the checkpoint", flush=True)
                    requeue(signal.SIGUSR2, frame)
        except Exception as err:  # noqa: BLE001 - in a signal handler: say it, never lose the checkpoint
            print(
                f"harness: could not requeue the job ({type(err).__name__}: {err}); if it was preempted, Slurm "
                f"requeues it at the end of the grace time; otherwise continue with harness train "
                f"{RunDir(Path(self.run_dir)).config} --resume",
                flush=True,
            )

    def checkpoint(self) -> DelayedSubmission | None:
        """Called by submitit in the chief on USR2: stop, save, and requeue unless the limit is reached."""
        self._stop.set()
        if self._thread is not None:
            self._wait_for_training()
        error = self._outcome.error
        if self._thread is not None and not isinstance(error, Preempted):
            reason = "training had already finished" if error is None else f"training failed ({error})"
            print(f"harness: not requeueing: {reason}", flush=True)
            return None
        restarts = self.context.restart_count
        if restarts >= self.max_requeues:
            print(
                f"harness: not requeueing: the job was requeued {restarts} times already "
                f"(slurm.max_requeues={self.max_requeues}); it can continue from its checkpoint with "
                f"harness train {RunDir(Path(self.run_dir)).config} --resume",
                flush=True,
            )
            return None
        print(f"harness: requeueing (requeue {restarts + 1} of at most {self.max_requeues})", flush=True)
        return DelayedSubmission(
            TrainJob(self.run_dir, self.config_path, self.command, self.max_requeues, self.grace_s)
        )


def preempted(job_id: str | None) -> bool:
    """Whether the controller says this job was chosen for preemption (False if it cannot say)."""
    from harness.slurm.scheduler import SchedulerUnavailable, chosen_for_preemption

    try:
        return bool(job_id) and chosen_for_preemption(str(job_id))
    except SchedulerUnavailable as err:
        print(f"harness: cannot tell a preemption from a cancellation ({err}); not requeueing", flush=True)
        return False


def is_chief(context: ClusterEnv) -> bool:
    """Rank 0 of the job, as submitit numbers tasks (Slurm's or the local executor's)."""
    return context.task_rank == 0


def task_banner(context: ClusterEnv) -> str:
    """First line of every task's log: where this rank runs (node names tell apart nodes that
    share a host name, as in slurm/cluster.sh) and how often the job was requeued."""
    return (
        f"harness: task {context.task_rank} of {context.task_count} on node {context.slurm_node or 'local'} "
        f"(host {socket.gethostname()}), job {context.job_id or '?'}, requeue {context.restart_count}"
    )
