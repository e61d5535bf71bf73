"""The software stack users run: reported on every node, compared with the expected versions.

Versions come from package metadata and small probes, importing as little as possible:
TensorFlow's CUDA and cuDNN versions are read from its `build_info` file without importing
TensorFlow, and the NVIDIA driver from NVML. Only Horovod's built controllers need
`horovod.tensorflow` (and so TensorFlow) imported, and only where Horovod is installed.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import harness
from harness.validate.context import NodeContext
from harness.validate.expected import COMPONENTS, NOT_INSTALLED, matches
from harness.validate.judge import result
from harness.validate.nvml import NvmlUnavailable
from harness.validate.results import CheckResult
from harness.validate.spec import check
from harness.validate.verdict import Verdict

COMMAND_TIMEOUT_S = 10.0
DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"),
    "keras": ("keras", "keras-nightly"),
    "numpy": ("numpy",),
    "horovod": ("horovod",),
    "mpi4py": ("mpi4py",),
}


def distribution_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def tensorflow_build_info() -> dict[str, Any]:
    """TensorFlow's build facts (cuda_version, cudnn_version) from its generated file, not an import."""
    spec = importlib.util.find_spec("tensorflow")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "python" / "platform" / "build_info.py"
        if path.is_file():
            loader = importlib.util.spec_from_file_location("_harness_tf_build_info", path)
            if loader is None or loader.loader is None:
                return {}
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
            return dict(getattr(module, "build_info", {}))
    return {}


def mpi_version() -> str | None:
    """`Open MPI 4.1.6` from `mpirun --version`'s first line."""
    if shutil.which("mpirun") is None:
        return None
    out = subprocess.run(["mpirun", "--version"], capture_output=True, text=True,
                         timeout=COMMAND_TIMEOUT_S, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    if not first:
        return "unknown"
    found = re.match(r"mpirun \((.+?)\) (\S+)", first[0])
    return f"{found.group(1)} {found.group(2)}" if found else first[0].strip()


def horovod_controllers() -> str | None:
    """Which of MPI, Gloo and NCCL Horovod was built with, e.g. `gloo,mpi`."""
    if distribution_version(DISTRIBUTIONS["horovod"]) is None:
        return None
    import horovod.tensorflow as hvd

    built = [name for name, query in (("gloo", "gloo_built"), ("mpi", "mpi_built"), ("nccl", "nccl_built"))
             if getattr(hvd, query)()]
    return ",".join(built) or "none"


def collect_versions(ctx: NodeContext) -> dict[str, str]:
    """Every component of COMPONENTS, `not installed` where absent."""
    build = tensorflow_build_info()
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "harness": harness.__version__,
        **{name: distribution_version(dists) for name, dists in DISTRIBUTIONS.items()},
        "horovod_controllers": horovod_controllers(),
        "mpi": mpi_version(),
        "cuda": _text(build.get("cuda_version")),
        "cudnn": _text(build.get("cudnn_version")),
    }
    try:
        snapshot = ctx.gpu_snapshot()
        found["nvidia_driver"], found["cuda_driver"] = snapshot.driver_version, snapshot.cuda_driver_version or None
    except NvmlUnavailable:
        found["nvidia_driver"] = found["cuda_driver"] = _driver_from_proc()
    return {name: found.get(name) or NOT_INSTALLED for name in COMPONENTS}


def _text(value: object) -> str | None:
    return str(value) if value else None


def _driver_from_proc() -> str | None:
    path = Path("/proc/driver/nvidia/version")
    if not path.is_file():
        return None
    found = re.search(r"Kernel Module\s+(\S+)", path.read_text())
    return found.group(1) if found else None


@check("stack.versions", "versions of Python, TensorFlow, Keras, Horovod (controllers), MPI, CUDA, cuDNN, driver",
       reference="--expected FILE (and, across nodes, the versions most nodes have)", timeout_s=120)
def stack_versions(ctx: NodeContext) -> CheckResult:
    versions = collect_versions(ctx)
    expected = ctx.expected_versions
    findings = [
        (Verdict.FAIL, f"{name}: expected {pattern}, found {versions[name]}")
        for name, pattern in expected.items()
        if not matches(versions[name] if versions[name] != NOT_INSTALLED else None, pattern)
    ]
    key = ("tensorflow", "keras", "horovod", "cuda", "nvidia_driver")
    summary = ", ".join(f"{name} {versions[name]}" for name in key)
    if expected:
        ok = f"all {len(expected)} expected versions match ({ctx.expected_source}); {summary}"
    else:
        ok = f"{summary} (no --expected file: reported only)"
    return result("stack.versions", findings, ok, facts=versions)
