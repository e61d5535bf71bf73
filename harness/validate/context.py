"""What a check may know about the node it runs on, decided once before any check runs.

Checks receive a `NodeContext` and nothing else: no `os.environ`, no command-line arguments.
The same context is built on a login node for `--local` and inside a Slurm job for one node of a
partition run, so a check cannot tell the two apart.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from harness.validate.nvml import NvmlReader, NvmlSnapshot, NvmlUnavailable, PynvmlReader
from harness.validate.references import ReferenceTable

SCONTROL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ExpectedGpus:
    """How many GPUs (and of which model) the node should have, and who says so."""

    count: int | None = None
    model: str | None = None
    source: str = "nothing (give --gpus N)"


@dataclass(frozen=True)
class Settings:
    """The knobs of one validation; every path is where that check writes or measures."""

    light: bool = False
    run_dir: Path = field(default_factory=Path.cwd)
    scratch_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    shared_dir: Path | None = None
    expected_gpus: ExpectedGpus = ExpectedGpus()
    measurements_dir: Path | None = None
    """Where e2e.training saves the strategy rates `auto` reads (harness.distribute.measured); None: not saved."""


@dataclass(frozen=True)
class NodeContext:
    node: str
    settings: Settings
    references: ReferenceTable
    expected_versions: Mapping[str, str] = field(default_factory=dict)
    expected_source: str | None = None
    partition: str | None = None
    """The Slurm partition of the job this validation runs in (SLURM_JOB_PARTITION), else None."""
    nvml: NvmlReader = field(default_factory=PynvmlReader)

    @cached_property
    def _nvml_outcome(self) -> NvmlSnapshot | NvmlUnavailable:
        try:
            return self.nvml.snapshot()
        except NvmlUnavailable as err:
            return err

    def gpu_snapshot(self) -> NvmlSnapshot:
        """NVML's view of the GPUs, read once; raises NvmlUnavailable (with the reason) without any."""
        outcome = self._nvml_outcome
        if isinstance(outcome, NvmlUnavailable):
            raise outcome
        return outcome

    def missing(self, need: str) -> str | None:
        """Why `need` is not met on this node, or None when it is."""
        if need == "gpu":
            try:
                self.gpu_snapshot()
            except NvmlUnavailable as err:
                return str(err)
            return None
        return MISSING.get(need, _unknown_need)(self)


def _module_missing(module: str, hint: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else f"{module} is not installed ({hint})"


def _tensorflow(_: NodeContext) -> str | None:
    return _module_missing("tensorflow", "pip install tensorflow")


def _horovod(_: NodeContext) -> str | None:
    return _module_missing("horovod", "scripts/install_horovod.sh")


def _mpi(_: NodeContext) -> str | None:
    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH (apt install openmpi-bin)"
    return _module_missing("mpi4py", "pip install mpi4py")


def _slurm(_: NodeContext) -> str | None:
    return None if shutil.which("scontrol") else "Slurm's scontrol is not on PATH"


def _unknown_need(_: NodeContext) -> str | None:
    return "unknown requirement"


MISSING = {"tensorflow": _tensorflow, "horovod": _horovod, "mpi": _mpi, "slurm": _slurm}
NEEDS = ("gpu", *MISSING)


# --- what Slurm says the node has ----------------------------------------------------------

_GRES_GPU = re.compile(r"(?:^|,)gpu(?::([A-Za-z0-9_.\-]+))?(?::(\d+))(?:\([^)]*\))?")


def parse_gres(gres: str) -> ExpectedGpus | None:
    """GPUs in a Slurm Gres string: `gpu:a100:4(S:0-1)`, `gpu:2`, `gpu:a100:2,gpu:t4:1` (summed).

    None when the string names no GPU (`(null)`, `craynetwork:4`).
    """
    count = 0
    models: list[str] = []
    for match in _GRES_GPU.finditer(gres):
        if match.group(1):
            models.append(match.group(1))
        count += int(match.group(2))
    if not count:
        return None
    model = models[0] if len(set(models)) == 1 else None
    return ExpectedGpus(count, model, f"Slurm Gres={gres}")


def expected_gpus(
    given: int | None, model: str | None, environ: Mapping[str, str], node: str, ask_slurm: bool = True
) -> ExpectedGpus:
    """The expected GPUs: --gpus, else the job's SLURM_GPUS_ON_NODE, else the node's Gres in Slurm."""
    if given is not None:
        return ExpectedGpus(given, model, f"--gpus {given}")
    on_node = environ.get("SLURM_GPUS_ON_NODE", "").strip()
    if on_node.isdigit():
        return ExpectedGpus(int(on_node), model, f"SLURM_GPUS_ON_NODE={on_node}")
    if ask_slurm:
        found = slurm_node_gres(node)
        if found is not None:
            return ExpectedGpus(found.count, model or found.model, found.source)
    return ExpectedGpus(None, model)


def slurm_node_gres(node: str) -> ExpectedGpus | None:
    """The node's Gres as `scontrol show node` gives it; None without Slurm or for an unknown node."""
    if shutil.which("scontrol") is None:
        return None
    try:
        result = subprocess.run(
            ["scontrol", "--oneliner", "show", "node", node],
            capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\bGres=(\S+)", result.stdout) if result.returncode == 0 else None
    return parse_gres(match.group(1)) if match else None


def node_name(environ: Mapping[str, str]) -> str:
    """The Slurm node name inside a job, else the host name (what sysadmins call the node)."""
    import socket

    return environ.get("SLURMD_NODENAME") or socket.gethostname()


def environment() -> Mapping[str, str]:
    """The process environment, read at the edge only (the CLI), then passed on as a mapping."""
    return dict(os.environ)
