"""What was asked for: a validated config, how it was invoked, and whether it may start.

Kept free of TensorFlow and Keras so the processes that only check a request and start others
(`--workers N`, `harness submit`) do not pay for importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config import Config
from harness.errors import ConfigError, RunDirError
from harness.rundir import RunDir
from harness.train import checkpoint, rundir

# Settings a resumed run may change, because the training they describe stays the same: display
# and reports, how often to save, how the work is run and spread over processes (the worker count
# may change), and the resources of the next Slurm job. `training.epochs` may change but not below
# the epochs already done; `training.batch_size` only with the global batch kept (checked once the
# strategy knows the replicas: `check_global_batch`).
RESUMABLE_KEYS = {
    "training.epochs",
    "training.batch_size",
    "training.progress",
    "training.callbacks",
    "training.tensorboard",
    "training.steps_per_execution",
    "training.checkpoint.every_epochs",
    "training.checkpoint.every_steps",
    "distribute.strategy",
    "distribute.cpu_replicas",
    "distribute.horovod_controller",
    "distribute.pin_workers",
    "distribute.huge_pages",
    "distribute.timeout_s",
    "report.html",
    "report.plots",
    "run.output_dir",  # where the run is, not what it is: it was found there already
    "run.name",
}
RESUMABLE_SECTIONS = ("slurm.",)
SHOWN_VALUE = 120


@dataclass(frozen=True)
class RunRequest:
    """A validated config plus how it was asked for."""

    config: Config
    config_path: Path | None = None
    resume: bool | Literal["auto"] = False  # "auto": continue from a checkpoint if there is one
    overwrite: bool = False
    command: str = ""
    code_dir: Path | None = None  # a sweep trial: its base config's folder (the config itself is inline)

    @property
    def base_dir(self) -> Path:
        """Relative paths in a config file are relative to the file's folder."""
        if self.code_dir is not None:
            return self.code_dir
        return self.config_path.resolve().parent if self.config_path else Path.cwd()

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run.output_dir) / self.config.run.name


def wants_resume(request: RunRequest) -> bool:
    """`resume="auto"` continues when the run directory has a checkpoint (a requeued job)."""
    if request.resume == "auto":
        return bool(checkpoint.candidates(RunDir(request.run_dir).checkpoints))
    return bool(request.resume)


def check_request(request: RunRequest, config: Config) -> None:
    """Refuse to clobber or wrongly resume a run directory, before anything is started."""
    output_dir = Path(request.config.run.output_dir)
    rundir.check_target(request.run_dir, output_dir, resume=request.resume, overwrite=request.overwrite)
    if wants_resume(request):
        check_resumable(request.run_dir, config)


def absolute_data_path(config: Config, base_dir: Path) -> Config:
    """Make `data.path` absolute so the saved config reproduces the run from anywhere."""
    if not config.data.path or Path(config.data.path).is_absolute():
        return config
    data = config.data.model_copy(update={"path": str((base_dir / config.data.path).resolve())})
    return config.model_copy(update={"data": data})


def check_resumable(run_dir: Path, config: Config) -> None:
    """A resumed run must use the config it started with; see RESUMABLE_KEYS for what may change."""
    from harness.config import load_config

    saved_path = RunDir(run_dir).config
    saved = load_config(saved_path)
    before, now = _comparable(saved), _comparable(config)
    changed = [key for key in diff_keys(before, now) if not _may_change(key)]
    if changed:
        shown = "; ".join(
            f"{key} was {_show(_lookup(before, key))} and is {_show(_lookup(now, key))} now" for key in changed
        )
        raise ConfigError(
            f"cannot resume {run_dir}: the config differs from the one the run started with "
            f"({saved_path}): {shown}. On --resume only training.epochs, display, checkpoint-frequency "
            "and distribution settings may change. Resume with the saved config "
            f"(harness train {saved_path} --resume), or start a new run with another run.name"
        )
    done = epochs_done(run_dir)
    if done is not None and config.training.epochs < done:
        raise ConfigError(
            f"cannot resume {run_dir}: training.epochs={config.training.epochs} is lower than the {done} "
            f"epochs already done (its saved config says training.epochs={saved.training.epochs}). "
            f"Use training.epochs={done} or more"
        )


def epochs_done(run_dir: Path) -> int | None:
    """Complete epochs in the newest checkpoint whose loop state can be read."""
    for folder in checkpoint.candidates(RunDir(run_dir).checkpoints):
        try:
            return checkpoint.read_state(folder).epoch
        except RunDirError:
            continue
    return None


def check_global_batch(run_dir: Path, config: Config, global_batch: int, saved_global_batch: int) -> None:
    """`training.batch_size` may change on resume only to keep the global batch (another worker count).

    Called on every rank once the strategy knows the number of replicas, before anything is written.
    """
    from harness.config import load_config

    saved = load_config(RunDir(run_dir).config).training.batch_size
    now = config.training.batch_size
    if now == saved or global_batch == saved_global_batch:
        return
    known = f"global batch {saved_global_batch}" if saved_global_batch else "a global batch not recorded"
    raise ConfigError(
        f"cannot resume {run_dir}: training.batch_size was {saved} (per replica, {known}) and is {now} now "
        f"(global batch {global_batch}). On --resume the per-replica batch may change only to keep the "
        f"global batch with another number of workers; use training.batch_size={saved}, or start a new run"
    )


def _comparable(config: Config) -> dict[str, Any]:
    """The config as compared on resume: `data.path` as the file it names, however it is spelled."""
    dumped = config.model_dump(mode="json")
    path = dumped["data"].get("path")
    if path:
        dumped["data"]["path"] = str(Path(path).resolve())
    return dumped


def _may_change(key: str) -> bool:
    return key in RESUMABLE_KEYS or key.startswith(RESUMABLE_SECTIONS)


def _lookup(tree: dict[str, Any], key: str) -> Any:
    value: Any = tree
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE else text[:SHOWN_VALUE] + "..."


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
