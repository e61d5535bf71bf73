"""`harness doctor`: what this machine has for running experiments, and what is missing.

Run it first on a new laptop or cluster login node. Package versions come from installed
distribution metadata, which is fast and does not import heavy packages; only the GPU and CUDA
checks import TensorFlow, and only Horovod's check imports Horovod. A check never raises: an
unexpected error becomes a "warning" row carrying the error text, so one broken package cannot hide
the state of all the others.

Status "missing" means absent or unusable (too old, wrong major version). The command fails (exit
code 1) only when a required check is missing; optional pieces (Horovod, MPI, Slurm, GPUs) only
inform.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

Status = Literal["ok", "missing", "warning"]

MIN_PYTHON = (3, 11)
KERAS_MAJOR = 3
COMMAND_TIMEOUT_S = 10.0
SLURM_COMMANDS = ("sbatch", "srun", "squeue", "sinfo", "scontrol")
HOROVOD_HINT = "install with scripts/install_horovod.sh (needed only for the horovod strategy)"

_LABELS: dict[Status, str] = {"ok": "OK", "missing": "MISSING", "warning": "WARN"}


@dataclass(frozen=True)
class Check:
    """One row of the doctor table."""

    name: str
    status: Status
    detail: str
    required: bool


@dataclass(frozen=True)
class Package:
    """A Python distribution to look for; `dists` lists alternative names (tensorflow-cpu, ...)."""

    name: str
    dists: tuple[str, ...]
    required: bool
    hint: str


TENSORFLOW = Package(
    "TensorFlow",
    ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel", "tf-nightly"),
    True,
    "pip install tensorflow-cpu==2.21.* (or 'tensorflow[and-cuda]==2.21.*' on GPU nodes)",
)

PACKAGES: tuple[Package, ...] = (
    TENSORFLOW,
    Package("numpy", ("numpy",), True, "pip install numpy"),
    Package("scikit-learn", ("scikit-learn",), True, "pip install scikit-learn"),
    Package("PyYAML", ("PyYAML",), True, "pip install pyyaml"),
    Package("pydantic", ("pydantic",), True, "pip install 'pydantic>=2'"),
    Package("matplotlib", ("matplotlib",), True, "pip install matplotlib"),
    Package("seaborn", ("seaborn",), True, "pip install seaborn"),
    Package("submitit", ("submitit",), True, "pip install submitit (needed for Slurm submission)"),
    Package("rich", ("rich",), False, "pip install rich (nicer progress bars and tables)"),
    Package("tensorboard", ("tensorboard",), False, "pip install tensorboard (for training.tensorboard)"),
    Package("mpi4py", ("mpi4py",), False, "pip install mpi4py (needs libopenmpi-dev)"),
)


def distribution_version(dist: str) -> str | None:
    """Installed version of distribution `dist`, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def run_command(argv: Sequence[str]) -> str | None:
    """First non-empty output line of `argv`, or None when it is not on PATH.

    A timeout keeps a hung command (e.g. sinfo with an unreachable controller) from hanging doctor.
    """
    if shutil.which(argv[0]) is None:
        return None
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return lines[0] if lines else f"{argv[0]} (no version output)"


def sinfo_version() -> tuple[str, str | None]:
    """`sinfo --version`'s version line, and why it failed (None when it worked).

    sinfo needs a Slurm configuration (slurm.conf, SLURM_CONF or a DNS record) even for its
    version; without one its errors must not be shown as a version.
    """
    try:
        result = subprocess.run(
            ["sinfo", "--version"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return "version unknown", str(err)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0:
        return "version unknown", f"{lines[-1] if lines else 'no output'} (exit code {result.returncode})"
    return (lines[0] if lines else "sinfo (no version output)"), None


def _found(dists: tuple[str, ...]) -> tuple[str, str] | None:
    """The first installed distribution of `dists` and its version."""
    for dist in dists:
        version = distribution_version(dist)
        if version is not None:
            return dist, version
    return None


def _missing(name: str, required: bool, hint: str) -> Check:
    prefix = "not installed" if required else "not installed (optional)"
    return Check(name, "missing", f"{prefix}; {hint}", required)


def check_python() -> Check:
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        wanted = ".".join(map(str, MIN_PYTHON))
        return Check("Python", "missing", f"{version} found; Python >= {wanted} is required", True)
    return Check("Python", "ok", f"{version} ({sys.executable})", True)


def check_package(package: Package) -> Check:
    found = _found(package.dists)
    if found is None:
        return _missing(package.name, package.required, package.hint)
    dist, version = found
    detail = version if dist == package.dists[0] else f"{version} ({dist})"
    return Check(package.name, "ok", detail, package.required)


def check_keras() -> Check:
    found = _found(("keras", "keras-nightly"))
    if found is None:
        return _missing("Keras", True, "pip install 'keras>=3' (TensorFlow 2.16+ brings it)")
    version = found[1]
    major = version.split(".", 1)[0]
    if major != str(KERAS_MAJOR):
        detail = f"{version} found; Keras {KERAS_MAJOR} is required: pip install 'keras>=3'"
        return Check("Keras", "missing", detail, True)
    return Check("Keras", "ok", version, True)


def check_horovod() -> Check:
    version = distribution_version("horovod")
    if version is None:
        return _missing("Horovod", False, HOROVOD_HINT)
    try:
        import horovod.tensorflow as hvd
    except Exception as err:
        detail = f"{version} installed but horovod.tensorflow does not import: {type(err).__name__}: {err}"
        return Check("Horovod", "warning", detail, False)
    built = {
        "MPI": _built(hvd, "mpi_built"),
        "Gloo": _built(hvd, "gloo_built"),
        "NCCL": _built(hvd, "nccl_built"),
    }
    parts = ", ".join(f"{name} {state}" for name, state in built.items())
    status: Status = "ok" if "yes" in (built["MPI"], built["Gloo"]) else "warning"
    return Check("Horovod", status, f"{version}; TensorFlow ops built; {parts}", False)


def _built(module: object, function: str) -> str:
    """'yes', 'no' or 'unknown' for one of Horovod's `*_built()` queries."""
    try:
        return "yes" if getattr(module, function)() else "no"
    except Exception:
        return "unknown"


def check_mpi() -> Check:
    line = run_command(["mpirun", "--version"])
    if line is None:
        hint = "mpirun not on PATH (optional); apt install openmpi-bin libopenmpi-dev"
        return Check("MPI", "missing", hint, False)
    return Check("MPI", "ok", line, False)


def check_gpus() -> Check:
    if _found(TENSORFLOW.dists) is None:
        return Check("GPUs", "missing", "TensorFlow is not installed", False)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return Check("GPUs", "warning", "no GPU visible; training runs on CPU", False)
    names = [_gpu_name(tf, gpu) for gpu in gpus]
    return Check("GPUs", "ok", f"{len(gpus)}: {', '.join(names)}", False)


def _gpu_name(tf: object, gpu: object) -> str:
    try:
        details = tf.config.experimental.get_device_details(gpu)  # type: ignore[attr-defined]
        return str(details.get("device_name") or gpu.name)  # type: ignore[attr-defined]
    except Exception:
        return str(getattr(gpu, "name", gpu))


def check_cuda() -> Check:
    if _found(TENSORFLOW.dists) is None:
        return Check("CUDA build", "missing", "TensorFlow is not installed", False)
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    cuda = info.get("cuda_version")
    if not cuda:
        hint = (
            "TensorFlow built without CUDA (optional: CPU-only build); "
            "on GPU nodes install tensorflow[and-cuda]"
        )
        return Check("CUDA build", "missing", hint, False)
    cudnn = info.get("cudnn_version")
    detail = f"CUDA {cuda}" + (f", cuDNN {cudnn}" if cudnn else "")
    return Check("CUDA build", "ok", detail, False)


def check_slurm() -> Check:
    on_path = [command for command in SLURM_COMMANDS if shutil.which(command)]
    if not on_path:
        hint = f"none of {', '.join(SLURM_COMMANDS)} on PATH (optional: needed only to submit to a cluster)"
        return Check("Slurm", "missing", hint, False)
    absent = [command for command in SLURM_COMMANDS if command not in on_path]
    version, broken = sinfo_version() if "sinfo" in on_path else ("version unknown", None)
    if broken:
        return Check("Slurm", "warning", f"installed, but `sinfo --version` fails: {broken}", False)
    if absent:
        return Check("Slurm", "warning", f"{version}; not on PATH: {', '.join(absent)}", False)
    return Check("Slurm", "ok", f"{version}; {', '.join(SLURM_COMMANDS)} on PATH", False)


def check_auto_strategy(processes: int = 2) -> Check:
    """What `distribute.strategy=auto` runs here with several processes, and why (harness validate's
    measurement of this machine, or the default without one)."""
    from harness.distribute.choice import horovod_importable
    from harness.distribute.measured import stored_choice

    choice, warnings = stored_choice(processes, os.environ, horovod_installed=horovod_importable())
    detail = f"for {processes} processes, {choice.reason}" + "".join(f"; warning: {w}" for w in warnings)
    return Check("auto strategy", "warning" if warnings else "ok", detail, False)


CheckFn = Callable[[], Check]


def _package_row(name: str) -> tuple[str, bool, CheckFn]:
    package = next(package for package in PACKAGES if package.name == name)
    return package.name, package.required, lambda: check_package(package)


def _check_table() -> list[tuple[str, bool, CheckFn]]:
    """(name, required, function) in display order; name and flag survive a check that crashes."""
    return [
        ("Python", True, check_python),
        _package_row("TensorFlow"),
        ("Keras", True, check_keras),
        *map(_package_row, ("numpy", "scikit-learn", "PyYAML", "pydantic", "matplotlib", "seaborn")),
        *map(_package_row, ("submitit", "rich", "tensorboard")),
        ("Horovod", False, check_horovod),
        _package_row("mpi4py"),
        ("MPI", False, check_mpi),
        ("GPUs", False, check_gpus),
        ("CUDA build", False, check_cuda),
        ("Slurm", False, check_slurm),
        ("auto strategy", False, check_auto_strategy),
    ]


def guarded(name: str, required: bool, function: CheckFn) -> Check:
    """Run one check; any exception becomes a warning row instead of ending the command."""
    try:
        return function()
    except Exception as err:
        return Check(name, "warning", f"check failed: {type(err).__name__}: {err}", required)


def run_checks() -> list[Check]:
    """Every check, in display order."""
    return [guarded(name, required, function) for name, required, function in _check_table()]


def format_table(checks: list[Check]) -> str:
    """Aligned plain text: a header, then one line per check (name, OK/MISSING/WARN, detail)."""
    rows = [("CHECK", "STATUS", "DETAIL")]
    rows += [(check.name, _LABELS[check.status], check.detail) for check in checks]
    name_width = max(len(row[0]) for row in rows)
    status_width = max(len(row[1]) for row in rows)
    lines = [f"{name:<{name_width}}  {status:<{status_width}}  {detail}" for name, status, detail in rows]
    return "\n".join(line.rstrip() for line in lines)


def exit_code(checks: list[Check]) -> int:
    """1 when a required check is missing, else 0; warnings never fail the command."""
    return 1 if any(check.required and check.status == "missing" for check in checks) else 0
