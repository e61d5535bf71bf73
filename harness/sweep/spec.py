"""The sweep spec: a search space over run-config keys, an objective, a budget and how to run it.

Everything is checked here, before a sweep directory is created or a job submitted: the spec's
own keys, every parameter key against the run config schema (as `key=value` overrides are), and
every value a sampler can draw (bounds, a fractional interior value of a float range, each choice)
against that key's type. Nothing here imports Optuna or TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.config import Config, clip, echo, read_yaml_file, to_yaml, validate_config
from harness.config.loader import load_config
from harness.config.schema import Float, Int, PosInt, run_name_problem
from harness.errors import ConfigError
from harness.registry import closest

KINDS = ("loguniform", "uniform", "int", "choice", "grid")
RANGES = ("loguniform", "uniform", "int")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp", "bruteforce")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "threshold")
RESOURCE_PARAMETERS = ("slurm.nodes", "slurm.tasks_per_node", "slurm.gpus_per_node")
"""Resource keys a scaling study may sweep: each trial runs as an srun step of its own size."""
SWEEP_OWNED_KEYS = ("run.name", "run.output_dir")
"""Set by the sweep for every trial (SWEEP_DIR/trials/NNNN): a parameter may not move them."""

# Per-epoch metrics (metrics.jsonl) and test metrics (report.json, `test_` + its key) by task.
EPOCH_METRICS = {
    "classification": ("loss", "val_loss", "accuracy", "val_accuracy"),
    "regression": ("loss", "val_loss", "mae", "val_mae"),
}
TEST_METRICS = {
    "classification": ("test_accuracy", "test_roc_auc", "test_log_loss"),
    "regression": ("test_mae", "test_rmse", "test_r2"),
}
KNOWN_TASKS = {
    "digits": "classification",
    "iris": "classification",
    "wine": "classification",
    "breast_cancer": "classification",
    "synthetic_images": "classification",
    "synthetic_tabular": "classification",
    "diabetes": "regression",
}
"""Built-in datasets whose task is known without loading them (others: from data.task, or any)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Objective(_Section):
    metric: str = Field(description="a metrics.jsonl key (val_loss...) or test_<key> of report.json")
    direction: Literal["min", "max"]


class Budget(_Section):
    trials: PosInt
    gpu_hours: Float | None = Field(None, gt=0.0, description="stop asking for trials once spent")


class SamplerSpec(_Section):
    name: Literal["tpe", "random", "grid", "cmaes", "qmc", "gp", "bruteforce"] = "tpe"
    seed: Int | None = Field(None, ge=0)
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of Optuna's sampler")


class PrunerSpec(_Section):
    name: Literal["none", "median", "percentile", "successive_halving", "hyperband", "threshold"] = "none"
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of Optuna's pruner")


class SpecModel(_Section):
    name: str | None = Field(None, description="sweep directory name (default: the spec file's stem)")
    output_dir: str = "sweeps"
    base: str | dict[str, Any] | None = Field(None, description="run config file (relative to the spec) or inline")
    parameters: dict[str, Any] = Field(min_length=1)
    objective: Objective
    budget: Budget
    parallelism: PosInt = 1
    retries: Int = Field(1, ge=0, description="extra attempts of a failed trial")
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    slurm: dict[str, Any] = Field(default_factory=dict, description="per-trial resources (run config slurm:)")
    code_dir: str | None = Field(
        None,
        description="folder user code (model.name `module:function`, callbacks) is imported from, relative to "
        "the spec; default: the base config file's folder (the spec's own for an inline base)",
    )


@dataclass(frozen=True)
class Parameter:
    """One searched key: `kind` in KINDS; `values` are the bounds of a range or the options."""

    key: str
    kind: str
    values: tuple[Any, ...]

    @property
    def is_range(self) -> bool:
        return self.kind in RANGES


@dataclass(frozen=True)
class Spec:
    """A checked spec: its model, parameters, the base run config (resolved) and where it came from."""

    path: Path
    model: SpecModel
    parameters: tuple[Parameter, ...]
    base_raw: dict[str, Any]
    base: Config
    task: str | None
    sampler_name: str
    code_dir: Path
    """Where trials import user code from, as `harness train BASE` would: the base config's folder."""

    @property
    def sweep_dir(self) -> Path:
        return Path(self.model.output_dir) / (self.model.name or self.path.stem)

    def grid_size(self) -> int:
        return math.prod(len(p.values) for p in self.parameters)

    def trial_config(self, params: Mapping[str, Any], output_dir: Path, name: str) -> Config:
        """The run config of one trial: the base, the sampled values, and its place in the sweep."""
        raw = _with(self.base_raw, "run.output_dir", str(output_dir))
        raw = _with(raw, "run.name", name)
        for key, value in params.items():
            raw = _with(raw, key, value)
        return validate_config(raw, f"trial {name} of {self.path}")


def load_spec(path: Path) -> Spec:
    """Read and check a sweep spec; every problem is a ConfigError (exit 2) naming file and key."""
    doc = read_yaml_file(path, "sweep spec")
    if not isinstance(doc.data, dict):
        raise ConfigError(f"sweep spec {path} must hold a mapping (parameters, objective, budget, ...)")
    model = _validate_model(doc.data, path, doc.lines)
    _check_name(model, path)
    base_raw, base = _base_config(model, path)
    code_dir = _code_dir(model, path)
    task = _task(base)
    _check_objective(model.objective, task, path, doc.lines)
    parameters = tuple(_parameter(key, value, path, doc.lines) for key, value in model.parameters.items())
    for parameter in parameters:
        check_against_schema(parameter, base_raw, path, doc.lines)
    sampler = effective_sampler(model, parameters)
    _check_sampler(model, parameters, sampler, path)
    return Spec(path, model, parameters, base_raw, base, task, sampler, code_dir)


def _code_dir(model: SpecModel, path: Path) -> Path:
    """The folder `harness train` of the base config would import user code from (its own folder).

    The sweep directory keeps the base inline, so without this a trial would look beside the copy
    in SWEEP_DIR and in the working directory, and `model.name: models:build` next to the base
    config would not be found."""
    if model.code_dir is not None:
        folder = (path.parent / model.code_dir).resolve()
        if not folder.is_dir():
            raise ConfigError(f"sweep spec {path}: code_dir={echo(model.code_dir)}: no such folder ({folder})")
        return folder
    if isinstance(model.base, str):
        return (path.parent / model.base).resolve().parent
    return path.resolve().parent


def _validate_model(raw: dict[str, Any], path: Path, lines: Mapping[str, int]) -> SpecModel:
    try:
        return SpecModel.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(error, lines) for error in err.errors()]
        raise ConfigError(f"invalid sweep spec {path}:" + "".join(f"\n  - {p}" for p in problems)) from None


def _describe(error: Any, lines: Mapping[str, int]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    name = ".".join(loc)
    where = _line(loc, lines)
    if error["type"] == "extra_forbidden":
        valid = _fields(loc[:-1])
        hint = closest(loc[-1], valid)
        suggestion = f" Did you mean {hint}?" if hint else ""
        return f"unknown key {clip(name)}{where}.{suggestion} Valid keys here: {', '.join(valid)}"
    message = error["msg"].removeprefix("Value error, ").rstrip(".")
    return f"{clip(name)}{where}: {message}. Received: {echo(error['input'])}"


def _fields(loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = SpecModel
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _line(loc: tuple[str, ...], lines: Mapping[str, int]) -> str:
    for end in range(len(loc), 0, -1):
        line = lines.get(".".join(loc[:end]))
        if line is not None:
            return f" (line {line})"
    return ""


def _check_name(model: SpecModel, path: Path) -> None:
    name = model.name or path.stem
    problem = run_name_problem(name)
    if problem:
        raise ConfigError(f"sweep spec {path}: name={echo(name)} must be one plain folder name, but {problem}")


def _base_config(model: SpecModel, path: Path) -> tuple[dict[str, Any], Config]:
    """The base run config as a raw mapping with absolute paths, plus the spec's `slurm:` keys."""
    if isinstance(model.base, str):
        base_path = (path.parent / model.base).resolve()
        if not base_path.is_file():
            raise ConfigError(f"sweep spec {path}: base={echo(model.base)}: no such run config file ({base_path})")
        config = load_config(base_path)
        base_dir = base_path.parent
    else:
        config = validate_config(model.base or {}, f"{path} (base:)")
        base_dir = path.resolve().parent
    if config.data.path and not Path(config.data.path).is_absolute():
        config = config.model_copy(
            update={"data": config.data.model_copy(update={"path": str((base_dir / config.data.path).resolve())})}
        )
    import yaml

    raw: dict[str, Any] = yaml.safe_load(to_yaml(config))
    if model.slurm:
        raw["slurm"] = {**raw.get("slurm", {}), **model.slurm}
        config = validate_config(raw, f"{path} (slurm:)")
    return raw, config


def _task(config: Config) -> str | None:
    if config.data.task != "auto":
        return config.data.task
    return KNOWN_TASKS.get(config.data.dataset)


def objective_metrics(task: str | None) -> tuple[str, ...]:
    tasks = [task] if task else list(EPOCH_METRICS)
    found: list[str] = []
    for name in tasks:
        found.extend(m for m in (*EPOCH_METRICS[name], *TEST_METRICS[name]) if m not in found)
    return tuple(found)


def _check_objective(objective: Objective, task: str | None, path: Path, lines: Mapping[str, int]) -> None:
    allowed = objective_metrics(task)
    if objective.metric in allowed:
        return
    hint = closest(objective.metric, list(allowed))
    what = f"a {task} task" if task else "any task"
    raise ConfigError(
        f"sweep spec {path}: objective.metric={echo(objective.metric)}{_line(('objective', 'metric'), lines)} "
        f"is not a metric {what} produces.{f' Did you mean {hint}?' if hint else ''} "
        f"Allowed: {', '.join(allowed)}"
    )


def _parameter(key: str, value: Any, path: Path, lines: Mapping[str, int]) -> Parameter:
    where = f"sweep spec {path}: parameters.{clip(key)}{_line(('parameters', key), lines)}"
    allowed = (
        "one of {loguniform: [low, high]}, {uniform: [low, high]}, {int: [low, high]}, {choice: [...]}, {grid: [...]}"
    )
    if key in SWEEP_OWNED_KEYS:
        raise ConfigError(
            f"{where}: {key} is set by the sweep for each trial (SWEEP_DIR/trials/NNNN); it cannot be searched"
        )
    if key.startswith("slurm.") and key not in RESOURCE_PARAMETERS:
        raise ConfigError(
            f"{where}: of the slurm: keys only {', '.join(RESOURCE_PARAMETERS)} can vary between trials (each "
            "array task's allocation fits the largest trial); set the others in the spec's slurm: section"
        )
    if not (isinstance(value, dict) and len(value) == 1):
        raise ConfigError(f"{where} must be {allowed}. Received: {echo(value)}")
    kind, values = next(iter(value.items()))
    if kind not in KINDS:
        hint = closest(str(kind), list(KINDS))
        raise ConfigError(
            f"{where}: unknown distribution {echo(kind)}.{f' Did you mean {hint}?' if hint else ''} Allowed: {allowed}"
        )
    if kind in RANGES:
        return Parameter(key, kind, _range(kind, values, where))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} needs a non-empty list of values. Received: {kind}={echo(values)}")
    return Parameter(key, kind, tuple(values))


def _range(kind: str, values: Any, where: str) -> tuple[float, float] | tuple[int, int]:
    if kind != "int" and isinstance(values, list):
        values = [_yaml11_number(v) for v in values]
    number = int if kind == "int" else (int, float)
    shape = f"{kind}: [low, high] with two {'whole numbers' if kind == 'int' else 'numbers'}"
    if not (
        isinstance(values, list)
        and len(values) == 2
        and all(isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise ConfigError(f"{where} must be {shape}. Received: {kind}={echo(values)}")
    low, high = values
    if not low < high:
        what = "empty" if low == high else "inverted"
        raise ConfigError(f"{where}: the range is {what} (low must be below high). Received: {kind}={echo(values)}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(
            f"{where}: loguniform bounds must be > 0 (it samples log(value)). Received: {kind}={echo(values)}"
        )
    return (int(low), int(high)) if kind == "int" else (float(low), float(high))


def _yaml11_number(value: Any) -> Any:
    """`1e-4` as YAML reads it, a string (YAML 1.1 wants `1.0e-4`), taken as the number it means,
    as run config values are."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def sample_points(parameter: Parameter) -> list[Any]:
    """Values a sampler may draw that together cover what the key's type must accept."""
    if not parameter.is_range:
        return list(parameter.values)
    low, high = parameter.values
    if parameter.kind == "int":
        return [low, high]
    inside = low * (high / low) ** 0.37 if parameter.kind == "loguniform" else low + (high - low) * 0.37
    return [low, high, inside]


def check_against_schema(parameter: Parameter, base_raw: dict[str, Any], path: Path, lines: Mapping[str, int]) -> None:
    """Each drawable value, set on the base config like a `key=value` override, must validate."""
    where = f"sweep spec {path}: parameters.{clip(parameter.key)}{_line(('parameters', parameter.key), lines)}"
    for value in sample_points(parameter):
        try:
            validate_config(_with(base_raw, parameter.key, value), where)
        except ConfigError as err:
            detail = str(err).removeprefix(f"invalid config {where}:")
            if "unknown key" in detail:
                raise ConfigError(f"{where}: {detail.strip().removeprefix('- ')}") from None
            hint = ""
            if parameter.kind in ("uniform", "loguniform") and "integer" in detail:
                hint = f"\n  {parameter.kind} draws fractional numbers; for a whole-number key use {{int: [low, high]}}"
            raise ConfigError(
                f"{where}: {parameter.kind} value {echo(value)} is not accepted by the run config:{detail}{hint}"
            ) from None


def _with(raw: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `raw` with the dotted `key` set; sections on the way are copied, not shared."""
    parts = key.split(".")
    top: dict[str, Any] = dict(raw)
    node = top
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else ({} if child is None else child)
        if not isinstance(node[part], dict):
            raise ConfigError(f"{clip(key)}: {part} is not a section")
        node = node[part]
    node[parts[-1]] = value
    return top


def effective_sampler(model: SpecModel, parameters: tuple[Parameter, ...]) -> str:
    """The sampler asked for; without one, grid when every parameter is a grid, else TPE."""
    if "sampler" in model.model_fields_set:
        return model.sampler.name
    return "grid" if all(p.kind == "grid" for p in parameters) else "tpe"


def _check_sampler(model: SpecModel, parameters: tuple[Parameter, ...], sampler: str, path: Path) -> None:
    grid = [p.key for p in parameters if p.kind == "grid"]
    if grid and sampler != "grid":
        raise ConfigError(
            f"sweep spec {path}: parameters {', '.join(grid)} use grid, which needs sampler.name: grid "
            f"(the sampler is {sampler!r}); use choice to let {sampler} pick among the values"
        )
    if sampler == "bruteforce":
        continuous = [p.key for p in parameters if p.kind in ("uniform", "loguniform")]
        if continuous:
            raise ConfigError(
                f"sweep spec {path}: the bruteforce sampler tries every value, so it needs countable parameters, "
                f"but {', '.join(continuous)} {'is a float range' if len(continuous) == 1 else 'are float ranges'}; "
                "give the values as {choice: [...]} (or an {int: [low, high]} range), or use another sampler"
            )
    if sampler != "grid":
        return
    ranges = [p.key for p in parameters if p.is_range]
    if ranges:
        raise ConfigError(
            f"sweep spec {path}: a grid search covers listed values only, but {', '.join(ranges)} "
            "are ranges; give them as {grid: [...]} or {choice: [...]}"
        )
    size = math.prod(len(p.values) for p in parameters)
    if size > model.budget.trials:
        raise ConfigError(
            f"sweep spec {path}: the grid has {size} combinations, more than budget.trials="
            f"{model.budget.trials}; raise budget.trials to {size} or shorten the grid"
        )


__all__ = ["Parameter", "Spec", "SpecModel", "check_against_schema", "load_spec", "objective_metrics"]
