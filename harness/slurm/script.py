"""The text of a job: submitit's parameters, the batch script they give, and each rank's environment.

The batch script is submitit's own, rendered from the same parameters the real submission uses,
so `--dry-run` shows exactly what `sbatch` would receive. Values from the config reach the
script quoted (submitit quotes #SBATCH values and paths; `export` lines are quoted here); only
`slurm.setup` lines are raw shell, by design.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from harness.config import SlurmConfig
from harness.distribute.memory import huge_page_export
from harness.errors import ConfigError
from harness.slurm.resources import gpu_request

SRUN_ARGS = ("--kill-on-bad-exit=1",)
"""A task that dies stops its peers at once instead of leaving them to wait for it."""

MPI_SRUN_ARGS = ("--mpi=pmix",)
"""Horovod over MPI: srun serves PMIx to its tasks, so each task's MPI_Init joins one MPI job.

Open MPI 4 is built with PMIx (Debian's has no PMI-1/PMI-2 client: under `--mpi=pmi2` every
task aborts in MPI_Init), and srun's PMIx plugin keeps every rank a Slurm task: signals,
`--kill-on-bad-exit`, SLURM_PROCID and requeues work as for the other strategies. Starting the
ranks with mpirun from the batch step instead would put them behind mpirun, which ends them on
the SIGTERM of a preemption before they can save, and is not sent the time-limit warning
(slurm/README.md, "Known limits").
"""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SBATCH_OPTION = re.compile(r"[a-z][a-z0-9-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_script_values(slurm: SlurmConfig, job_name: str, run_dir: Path) -> None:
    """Values that would break the script even when quoted: #SBATCH lines end at a newline, and
    Slurm expands %j-style patterns in log paths."""
    fields = {
        "job name": job_name,
        "run directory": str(run_dir),
        **{f"slurm.{key}": getattr(slurm, key) for key in ("partition", "account", "qos", "constraint", "gpu_type")},
        **{f"slurm.additional.{key}": value for key, value in slurm.additional.items()},
    }
    for what, value in fields.items():
        if value is not None and _CONTROL.search(str(value)):
            raise ConfigError(f"{what} must not contain control characters such as newlines. Received: {value!r}")
    if "%" in str(run_dir):
        raise ConfigError(
            f"the run directory must not contain '%': Slurm reads %j, %t, ... in log paths as patterns. "
            f"Received: {str(run_dir)!r}"
        )
    for key in slurm.additional:
        if not _SBATCH_OPTION.fullmatch(key.replace("_", "-")):
            raise ConfigError(
                f"slurm.additional keys must be sbatch option names such as 'mail-type'. Received: {key!r}"
            )
    for name in slurm.env:
        if not _ENV_NAME.fullmatch(name):
            raise ConfigError(f"slurm.env names must be shell variable names (letters, digits, _). Received: {name!r}")


def export_lines(env: dict[str, str]) -> list[str]:
    """`export NAME='value'`: values are data, never shell code."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def setup_lines(slurm: SlurmConfig) -> list[str]:
    """Exports first so the raw setup lines can use them."""
    return [*export_lines(slurm.env), *slurm.setup]


def slurm_parameters(slurm: SlurmConfig, job_name: str) -> dict[str, Any]:
    """Keyword arguments for `SlurmExecutor.update_parameters` (submitit's own names)."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": slurm.time_minutes,
        "nodes": slurm.nodes,
        "ntasks_per_node": slurm.tasks_per_node or 1,
        "cpus_per_task": slurm.cpus_per_task,
        "signal_delay_s": slurm.signal_delay_s,
        "srun_args": list(SRUN_ARGS),
        "additional_parameters": {"requeue": True, **slurm.additional},
    }
    optional = {
        "partition": slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "constraint": slurm.constraint,
        "gpus_per_node": gpu_request(slurm),
        "mem": memory(slurm.mem_gb) if slurm.mem_gb else None,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    setup = setup_lines(slurm)
    if setup:
        params["setup"] = setup
    return params


def with_huge_pages(params: dict[str, Any], huge_pages: bool) -> dict[str, Any]:
    """`params` whose tasks start with large blocks on huge pages (`distribute.huge_pages`); the line
    comes first, so the user's own setup lines can still change it."""
    if not huge_pages:
        return params
    return {**params, "setup": [huge_page_export(), *params.get("setup", [])]}


def with_launch(params: dict[str, Any], strategy: str, controller: str) -> dict[str, Any]:
    """`slurm_parameters` plus what the job's transport needs from srun (Horovod over MPI: PMIx)."""
    if not uses_mpi(strategy, controller):
        return params
    return {**params, "srun_args": [*params.get("srun_args", []), *MPI_SRUN_ARGS]}


def uses_mpi(strategy: str, controller: str) -> bool:
    """Horovod over MPI: the one launch whose ranks need an MPI runtime from srun."""
    return strategy == "horovod" and controller == "mpi"


def check_launch(executor: str, strategy: str, controller: str) -> None:
    """submitit's local executor starts plain processes: no MPI runtime joins them into one job."""
    if executor == "local" and uses_mpi(strategy, controller):
        raise ConfigError(
            "distribute.horovod_controller must be 'gloo' with slurm.executor=local: the local executor "
            "starts plain processes that MPI cannot join into one job. Received: "
            "distribute.horovod_controller='mpi'. Use distribute.horovod_controller=gloo, submit to Slurm "
            "(slurm.executor=slurm: srun --mpi=pmix starts the ranks), or run here with "
            "harness train --workers N distribute.strategy=horovod distribute.horovod_controller=mpi"
        )


def local_parameters(slurm: SlurmConfig) -> dict[str, Any]:
    """Keyword arguments for `LocalExecutor.update_parameters`: the same job on this machine."""
    params: dict[str, Any] = {
        "timeout_min": slurm.time_minutes,
        "tasks_per_node": slurm.tasks_per_node or 1,
        "gpus_per_node": slurm.gpus_per_node,
        "signal_delay_s": slurm.signal_delay_s,
    }
    setup = setup_lines(slurm)
    if setup:
        params["setup"] = setup
    return params


def memory(gigabytes: float) -> str:
    """sbatch --mem: whole gigabytes as `64GB`, fractions in megabytes (`1536MB`)."""
    if gigabytes == int(gigabytes):
        return f"{int(gigabytes)}GB"
    return f"{int(gigabytes * 1024)}MB"
