"""What `distribute.strategy` means for a job: `auto` resolved, and a requested strategy checked.

One rule, in one place, used at every point that decides: `harness train --workers N` before
it starts the workers, the Slurm planner before it submits, and the strategy factory in every
rank. It imports neither TensorFlow nor Horovod, so the first two stay fast.

The rule for `auto` (README, "One GPU, all GPUs of a node, many processes"): several processes
run `multiworker`, except under horovodrun or mpirun, which give Horovod its ranks but tell
tf.distribute nothing about where the other ranks run, so `horovod` is the one that works
there; one process runs `mirrored` over several GPUs, else `single`. Which of multiworker and
horovod is faster depends on the machine, so the launcher and the Slurm planner pass the one
`harness validate` measured faster (`prefer`, from harness.distribute.measured) and hand the
job the concrete strategy; a rank left with a bare `auto` keeps the constant rule. Planning a
Slurm job, `auto` asks for one task per GPU, like both multi-process strategies.
"""

from __future__ import annotations

import difflib
import importlib.util

from harness.errors import ConfigError

STRATEGY_NAMES = ("auto", "single", "mirrored", "multiworker", "horovod")
"""Every value `distribute.strategy` takes."""

MULTI_PROCESS = ("multiworker", "horovod")
"""Strategies that run one process per GPU (or per node on CPU-only nodes)."""

LAUNCHERS = {
    "single": "no launcher",
    "slurm": "Slurm tasks",
    "tf_config": "TF_CONFIG",
    "horovod": "horovodrun or mpirun",
    "launcher": "harness train --workers",
}
"""Where a job's processes come from (`ClusterEnv.source`), as messages name it."""

HOROVOD_LAUNCHERS = ("horovod", "slurm", "launcher")
"""Launchers that give Horovod its ranks: horovodrun/mpirun, or the Gloo rendezvous that rank 0
starts itself for Slurm tasks and local workers (harness.distribute.gloo). TF_CONFIG does not."""


def resolve_strategy(
    requested: str,
    *,
    processes: int,
    gpus: int,
    launcher: str,
    horovod_installed: bool | None = None,
    prefer: str | None = None,
) -> str:
    """The strategy a job of `processes` processes, each seeing `gpus` GPUs, started by
    `launcher` (a `ClusterEnv.source`), runs for `distribute.strategy=requested`.

    A strategy that cannot run there is refused with a ConfigError naming the key, the value and
    what would run. `horovod_installed=None` skips the Horovod check (the Slurm planner: the job
    runs elsewhere). `prefer` (`horovod` or `multiworker`, what was measured faster) decides
    `auto` with several processes where Horovod can run; anywhere else it is ignored.
    """
    _check_name(requested)
    problem = strategy_problem(requested, processes, launcher, horovod_installed)
    if problem:
        allowed = [
            name for name in STRATEGY_NAMES if not strategy_problem(name, processes, launcher, horovod_installed)
        ]
        raise ConfigError(
            f"distribute.strategy={requested!r} cannot run in this job: {problem}. Allowed here: {', '.join(allowed)}"
        )
    if requested != "auto":
        return requested
    if processes > 1:
        if launcher == "horovod":
            return "horovod"
        horovod_runs = launcher in HOROVOD_LAUNCHERS and horovod_installed is not False
        return "horovod" if prefer == "horovod" and horovod_runs else "multiworker"
    return "mirrored" if gpus > 1 else "single"


UNMEASURED = (
    "its rule without a measurement; harness train --workers and harness submit pick multiworker or "
    "horovod from what harness validate measured"
)
"""Why a rank that resolves a bare `auto` itself (e.g. the user's own srun) runs multiworker."""


def auto_note(requested: str, processes: int, launcher: str) -> str:
    """What the run's first line adds when a rank resolved `auto` for several processes itself."""
    if requested == "auto" and processes > 1 and launcher != "horovod":
        return UNMEASURED
    return ""


def strategy_problem(
    requested: str, processes: int, launcher: str, horovod_installed: bool | None = None
) -> str | None:
    """Why `requested` cannot run `processes` processes started by `launcher`, or None."""
    if requested == "single" and processes > 1:
        return f"single runs one process, but {_processes(processes, launcher)}. Use multiworker or horovod"
    if requested == "mirrored" and processes > 1:
        return (
            f"mirrored runs one process per node, over its GPUs, on one node only, but "
            f"{_processes(processes, launcher)}. Use multiworker or horovod"
        )
    if requested == "horovod":
        if processes > 1 and launcher not in HOROVOD_LAUNCHERS:
            return (
                f"horovod needs ranks from horovodrun, mpirun, srun or harness train --workers, but "
                f"{_processes(processes, launcher)}. Use multiworker"
            )
        if horovod_installed is False:
            return (
                "horovod needs Horovod, which is not installed here. Install it with "
                "scripts/install_horovod.sh; `harness doctor` shows what is built"
            )
    return None


def fit_problem(
    strategy: str, nodes: int, tasks_per_node: int, gpus_per_node: int, launcher: str = "slurm"
) -> str | None:
    """Why `strategy` cannot use `nodes` x `tasks_per_node` tasks with `gpus_per_node` GPUs, or None.

    Besides what `strategy_problem` refuses, requested GPUs must all be used: one GPU per
    process for the multi-process strategies, and never more processes on a node than GPUs.
    """
    tasks = nodes * tasks_per_node
    if strategy == "mirrored" and nodes > 1:
        return (
            f"mirrored runs in one process on one node, but {nodes} nodes were asked for. "
            "Use multiworker or horovod across nodes"
        )
    problem = strategy_problem(strategy, tasks, launcher)
    if problem:
        return problem
    if strategy == "single" and gpus_per_node > 1:
        return f"single uses one GPU, but {gpus_per_node} GPUs per node were asked for. Use mirrored or multiworker"
    if strategy in (*MULTI_PROCESS, "auto") and gpus_per_node > 0:
        return _gpu_problem(strategy, tasks, tasks_per_node, gpus_per_node)
    return None


def _gpu_problem(strategy: str, tasks: int, tasks_per_node: int, gpus: int) -> str | None:
    if strategy in MULTI_PROCESS and tasks == 1 and gpus > 1:
        return (
            f"{strategy} uses one GPU per process, and 1 task on {gpus} GPUs would leave {gpus - 1} idle. "
            f"Leave slurm.tasks_per_node unset (one task per GPU) or use mirrored"
        )
    if tasks_per_node > gpus:
        return f"tasks_per_node={tasks_per_node} but gpus_per_node={gpus}: every task needs a GPU of its own"
    if strategy in MULTI_PROCESS and tasks_per_node < gpus:
        return (
            f"tasks_per_node={tasks_per_node} on {gpus} GPUs per node would leave "
            f"{gpus - tasks_per_node} GPUs per node idle: {strategy} uses one GPU per process"
        )
    return None


def tasks_per_node(strategy: str, gpus_per_node: int) -> int:
    """Processes to start per node: one per GPU for the multi-process strategies and for `auto`
    (which then resolves to multiworker), one per node otherwise and on CPU-only nodes."""
    if strategy in (*MULTI_PROCESS, "auto") and gpus_per_node > 0:
        return gpus_per_node
    return 1


def horovod_importable() -> bool:
    """Whether Horovod is installed, found without importing it (which would load TensorFlow)."""
    return importlib.util.find_spec("horovod") is not None


def _processes(processes: int, launcher: str) -> str:
    return f"this job has {processes} processes ({LAUNCHERS.get(launcher, launcher)})"


def _check_name(requested: str) -> None:
    if requested in STRATEGY_NAMES:
        return
    close = difflib.get_close_matches(requested, STRATEGY_NAMES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"distribute.strategy={requested[:200]!r} is not a strategy.{hint} Allowed: {', '.join(STRATEGY_NAMES)}"
    )
