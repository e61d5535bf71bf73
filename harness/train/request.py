"""What was asked for: a validated config, how it was invoked, and whether it may start.

Kept free of TensorFlow and Keras so the processes that only check a request and start others
(`--workers N`, `harness submit`) do not pay for importing them.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config import Config
from harness.errors import ConfigError
from harness.train import rundir

# Settings a resumed run may change: more epochs, display, and how the work is spread (the
# worker count and per-replica batch; the loop restarts a partial epoch if the global batch changed).
RESUMABLE_KEYS = {
    "training.epochs",
    "training.progress",
    "training.callbacks",
    "training.tensorboard",
    "training.batch_size",
    "distribute.strategy",
    "distribute.cpu_replicas",
    "distribute.horovod_controller",
    "distribute.timeout_s",
}


@dataclass(frozen=True)
class RunRequest:
    """A validated config plus how it was asked for."""

    config: Config
    config_path: Path | None = None
    resume: bool | Literal["auto"] = False  # "auto": continue from a checkpoint if there is one
    overwrite: bool = False
    command: str = ""

    @property
    def base_dir(self) -> Path:
        """Relative paths in a config file are relative to the file's folder."""
        return self.config_path.resolve().parent if self.config_path else Path.cwd()

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run.output_dir) / self.config.run.name


def wants_resume(request: RunRequest) -> bool:
    """`resume="auto"` continues when the run directory has a checkpoint (a requeued job)."""
    if request.resume == "auto":
        return rundir.checkpoint.resolve(request.run_dir / rundir.CHECKPOINTS) is not None
    return bool(request.resume)


def check_request(request: RunRequest, config: Config) -> None:
    """Refuse to clobber or wrongly resume a run directory, before anything is started."""
    rundir.check_target(request.run_dir, resume=request.resume, overwrite=request.overwrite)
    if wants_resume(request):
        check_resumable(request.run_dir, config)


def absolute_data_path(config: Config, base_dir: Path) -> Config:
    """Make `data.path` absolute so the saved config reproduces the run from anywhere."""
    if not config.data.path or Path(config.data.path).is_absolute():
        return config
    data = config.data.model_copy(update={"path": str((base_dir / config.data.path).resolve())})
    return config.model_copy(update={"data": data})


def check_resumable(run_dir: Path, config: Config) -> None:
    """A resumed run must use the config it started with (more epochs are allowed)."""
    from harness.config import load_config

    saved = load_config(run_dir / "config.yaml")
    changed = sorted(k for k in diff_keys(saved.model_dump(), config.model_dump()) if k not in RESUMABLE_KEYS)
    if changed:
        raise ConfigError(
            f"cannot resume {run_dir}: the config differs from the one the run started with in "
            f"{', '.join(changed)}. Resume with the saved config ({run_dir / 'config.yaml'}), "
            "or start a new run with --overwrite or another run.name"
        )


def diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys.extend(diff_keys(left, right, f"{prefix}{key}."))
        elif left != right:
            keys.append(f"{prefix}{key}")
    return keys


def invocation() -> str:
    """How this process was started, for env.json."""
    return " ".join(shlex.quote(arg) for arg in [os.path.basename(sys.argv[0]), *sys.argv[1:]])
