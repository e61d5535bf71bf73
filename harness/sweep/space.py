"""The search space, samplers and pruners as Optuna objects, built from a checked spec.

Optuna categorical choices must be None, bools, numbers or strings: a choice among lists
(`model.hidden_units: {choice: [[64], [128, 64]]}`) is offered to Optuna as JSON text and
decoded again, so the dashboard still shows readable values.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from harness.errors import ConfigError
from harness.registry import Registry
from harness.sweep.spec import Parameter, Spec

SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("sampler")
PRUNERS: Registry[Callable[..., optuna.pruners.BasePruner]] = Registry("pruner")

SAMPLERS.add("tpe", optuna.samplers.TPESampler)
SAMPLERS.add("random", optuna.samplers.RandomSampler)
SAMPLERS.add("cmaes", optuna.samplers.CmaEsSampler)
SAMPLERS.add("qmc", optuna.samplers.QMCSampler)
SAMPLERS.add("gp", optuna.samplers.GPSampler)
SAMPLERS.add("bruteforce", optuna.samplers.BruteForceSampler)
SAMPLERS.add("grid", optuna.samplers.GridSampler)
PRUNERS.add("none", optuna.pruners.NopPruner)
PRUNERS.add("median", optuna.pruners.MedianPruner)
PRUNERS.add("percentile", optuna.pruners.PercentilePruner)
PRUNERS.add("successive_halving", optuna.pruners.SuccessiveHalvingPruner)
PRUNERS.add("hyperband", optuna.pruners.HyperbandPruner)
PRUNERS.add("threshold", optuna.pruners.ThresholdPruner)

SCALARS = (type(None), bool, int, float, str)


RESEEDED = frozenset({"tpe", "random", "cmaes", "gp"})
"""Samplers whose seed drives the draws themselves. Every worker loads the study with the spec's
seed, so two workers (or a worker after `sweep resume`) would draw the same values for their
next trial; seeded per trial number instead, trial N draws the same values whichever worker asks
for it. QMC keeps one seed (its sequence is scrambled by it and indexed from the journal); grid and
bruteforce take unvisited points from the journal."""


def make_sampler(spec: Spec, trial_number: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded for drawing trial `trial_number`; a bad `sampler.options` key is a
    ConfigError naming what is accepted."""
    cls = SAMPLERS.get(spec.sampler_name)
    options = dict(spec.model.sampler.options)
    if spec.model.sampler.seed is not None:
        offset = trial_number if spec.sampler_name in RESEEDED else 0
        options["seed"] = spec.model.sampler.seed + offset
    if spec.sampler_name == "grid":
        options["search_space"] = {p.key: [encode(p, v) for v in p.values] for p in spec.parameters}
    sampler: optuna.samplers.BaseSampler = _build(cls, options, f"sampler.options of {spec.path} ({spec.sampler_name})")
    return sampler


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    cls = PRUNERS.get(spec.model.pruner.name)
    where = f"pruner.options of {spec.path} (pruner {spec.model.pruner.name})"
    pruner: optuna.pruners.BasePruner = _build(cls, dict(spec.model.pruner.options), where)
    return pruner


def _build(cls: Callable[..., Any], options: Mapping[str, Any], where: str) -> Any:
    accepted = [name for name in inspect.signature(cls).parameters if name != "self"]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}. Accepted: {', '.join(accepted)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def needs_encoding(parameter: Parameter) -> bool:
    return not all(isinstance(value, SCALARS) for value in parameter.values)


def encode(parameter: Parameter, value: Any) -> Any:
    return json.dumps(value) if needs_encoding(parameter) else value


def decode(parameter: Parameter, value: Any) -> Any:
    return json.loads(value) if needs_encoding(parameter) and isinstance(value, str) else value


def suggest(trial: optuna.Trial, spec: Spec) -> dict[str, Any]:
    """Draw (or, for a trial already drawn, read back) every parameter's value."""
    params: dict[str, Any] = {}
    for parameter in spec.parameters:
        params[parameter.key] = decode(parameter, _suggest_one(trial, parameter))
    return params


def _suggest_one(trial: optuna.Trial, parameter: Parameter) -> Any:
    key = parameter.key
    if parameter.kind == "loguniform":
        return trial.suggest_float(key, parameter.values[0], parameter.values[1], log=True)
    if parameter.kind == "uniform":
        return trial.suggest_float(key, parameter.values[0], parameter.values[1])
    if parameter.kind == "int":
        return trial.suggest_int(key, parameter.values[0], parameter.values[1])
    return trial.suggest_categorical(key, [encode(parameter, v) for v in parameter.values])


def decode_params(spec: Spec, params: Mapping[str, Any]) -> dict[str, Any]:
    """A finished trial's stored parameters as run-config values."""
    by_key = {p.key: p for p in spec.parameters}
    return {key: decode(by_key[key], value) if key in by_key else value for key, value in params.items()}
