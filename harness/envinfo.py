"""Facts about the software and machine a run used, for env.json and the report."""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import harness

PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "submitit", "horovod")


def utc_now() -> str:
    """ISO 8601 in UTC, so runs from clusters in different time zones sort correctly."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def invocation(argv: list[str] | None = None) -> str:
    """How this process was started, quoted so it can be pasted into a shell (env.json, submission.json)."""
    args = sys.argv if argv is None else argv
    return " ".join(shlex.quote(arg) for arg in [os.path.basename(args[0]), *args[1:]])


def node_name() -> str:
    """The Slurm node name inside a job (what sinfo, scontrol and sysadmins call it), else the host name.

    They usually agree; where they do not (containers, several slurmd on one machine) the node
    name is the one a message about a lost rank must give.
    """
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "harness": harness.__version__}
    for name in PACKAGES:
        version = package_version(name)
        if version:
            found[name] = version
    return found


def git_commit(where: Path) -> str | None:
    """The commit of the git checkout holding `where`, marked `-dirty` if it has changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = "-dirty" if status.stdout.strip() else ""
    return commit.stdout.strip() + dirty


def devices() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices()]


RECORDED_VARIABLES = (
    "GLIBC_TUNABLES",  # distribute.huge_pages
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OMP_NUM_THREADS",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_XLA_FLAGS",
    "HOROVOD_CONTROLLER",
    "HOROVOD_CPU_OPERATIONS",
    "HOROVOD_FUSION_THRESHOLD",
    "HOROVOD_CYCLE_TIME",
)
"""Environment variables that change a run's speed or numerics: recorded when set, to reproduce it."""


def environment(where: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "versions": versions(),
        "host": node_name(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "git_commit": git_commit(where),
        "devices": devices(),
        "variables": {name: os.environ[name] for name in RECORDED_VARIABLES if name in os.environ},
        **(extra or {}),
    }
