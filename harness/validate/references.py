"""The reference table: shipped datasheet peaks per GPU model, merged with a site's own file.

Loaded and checked once, before any check runs, so a malformed site file is a usage error
(exit 2) that names the file, the key, its line and the bad value, and nothing is run or written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config.messages import echo
from harness.config.yamlfile import YamlDoc, parse_yaml, read_yaml_file
from harness.errors import ConfigError
from harness.registry import closest
from harness.validate.results import Reference

SHIPPED = Path(__file__).with_name("data") / "references.yaml"
TABLE_VERSION = 1
SECTIONS = ("schema_version", "metrics", "fleet", "limits", "gpus", "cpus")
METRIC_KEYS = ("unit", "expected_fraction", "warn", "fail")
FLEET_KEYS = ("warn", "fail")
EXTRA_MODEL_KEYS = ("memory_gib", "basis")
BASES = ("peak", "measured")
UNITS = {
    "GFLOP/s": 1e9, "TFLOP/s": 1e12, "MB/s": 1e6, "GB/s": 1e9, "samples/s": 1.0, "GiB": 2.0**30, "MiB": 2.0**20,
}

Kind = Literal["gpus", "cpus"]


@dataclass(frozen=True)
class Figure:
    """One number of a model's row, and whether it is a datasheet peak or a healthy node's measurement.

    The basis is kept per number, so a site row merged over a shipped one changes only its own figures.
    """

    value: float
    basis: str


@dataclass(frozen=True)
class MetricRule:
    unit: str
    expected_fraction: float
    warn: float
    fail: float


@dataclass(frozen=True)
class ReferenceTable:
    """Everything the checks judge against; `sources` says which files it came from."""

    metrics: Mapping[str, MetricRule]
    fleet_warn: float
    fleet_fail: float
    limits: Mapping[str, float]
    gpus: Mapping[str, Mapping[str, Figure]]
    cpus: Mapping[str, Mapping[str, Figure]]
    sources: tuple[str, ...]

    def model_entry(self, kind: Kind, model: str) -> tuple[str, Mapping[str, Figure]] | None:
        """The table row for `model`: its exact name, else the longest row name contained in it."""
        rows = self.gpus if kind == "gpus" else self.cpus
        if model in rows:
            return model, rows[model]
        lowered = model.lower()
        found = [name for name in rows if name.lower() in lowered]
        if not found:
            return None
        best = max(found, key=len)
        return best, rows[best]

    def reference(self, kind: Kind, model: str, metric: str) -> Reference | None:
        """The value a `metric` measured on a `model` device is judged against, or None."""
        entry = self.model_entry(kind, model)
        rule = self.metrics.get(metric)
        if entry is None or rule is None or metric not in entry[1]:
            return None
        name, row = entry
        figure = row[metric]
        fraction = rule.expected_fraction if figure.basis == "peak" else 1.0
        value = figure.value * fraction
        how = f"{fraction:.0%} of the {name} peak" if figure.basis == "peak" else f"{name} reference"
        return Reference(value, rule.unit, rule.warn, rule.fail, how)

    def limit(self, name: str) -> float:
        return float(self.limits[name])


def load_references(site_file: Path | None = None) -> ReferenceTable:
    """The shipped table, with `site_file`'s entries merged over it."""
    shipped = read_yaml_file(SHIPPED, "reference file")
    raw = _checked(shipped, SHIPPED)
    sources = [str(SHIPPED)]
    if site_file is not None:
        site = _checked(read_yaml_file(site_file, "reference file"), site_file, partial=True)
        raw = _merge(raw, site)
        sources.append(str(site_file))
    return _table(raw, tuple(sources))


def parse_references(text: str, source: str) -> ReferenceTable:
    """A site table from text merged over the shipped one (tests, and references held in memory)."""
    shipped = _checked(read_yaml_file(SHIPPED, "reference file"), SHIPPED)
    site = _checked(parse_yaml(text), Path(source), partial=True)
    return _table(_merge(shipped, site), (str(SHIPPED), source))


def _merge(base: dict[str, Any], site: dict[str, Any]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section in ("metrics", "gpus", "cpus"):
        for name, entry in site.get(section, {}).items():
            merged[section][name] = {**merged[section].get(name, {}), **entry}
    for section in ("fleet", "limits"):
        merged[section].update(site.get(section, {}))
    return merged


def _table(raw: Mapping[str, Any], sources: tuple[str, ...]) -> ReferenceTable:
    metrics = {name: MetricRule(**rule) for name, rule in raw["metrics"].items()}
    return ReferenceTable(
        metrics=metrics,
        fleet_warn=float(raw["fleet"]["warn"]),
        fleet_fail=float(raw["fleet"]["fail"]),
        limits=dict(raw["limits"]),
        gpus=raw["gpus"],
        cpus=raw["cpus"],
        sources=sources,
    )


# --- checking a file -------------------------------------------------------------------------


class _File:
    """Where errors point: the file, and the line of each dotted key."""

    def __init__(self, doc: YamlDoc, path: Path) -> None:
        self.doc = doc
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        line = self.doc.lines.get(key)
        where = f" (line {line})" if line else ""
        return ConfigError(f"reference file {self.path}: {key}{where} {problem}")


def _checked(doc: YamlDoc, path: Path, partial: bool = False) -> dict[str, Any]:
    """The file's content after checking every key and value; `partial`: sections may be left out."""
    file = _File(doc, path)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"reference file {path} must be a mapping of sections ({', '.join(SECTIONS)}). "
                          f"Received: {echo(data)}")
    _known_keys(file, data, SECTIONS, "")
    version = data.get("schema_version", TABLE_VERSION)
    if version != TABLE_VERSION:
        raise file.error("schema_version", f"is {echo(version)}; this harness reads version {TABLE_VERSION}")
    metrics = _section(file, data, "metrics", partial)
    for name, rule in metrics.items():
        _metric_rule(file, f"metrics.{name}", rule, partial=partial and name in _shipped_metric_names())
    known_metrics = sorted({*metrics, *_shipped_metric_names()})
    fleet = _section(file, data, "fleet", partial)
    _known_keys(file, fleet, FLEET_KEYS, "fleet")
    for key, value in fleet.items():
        _fraction(file, f"fleet.{key}", value)
    limits = _section(file, data, "limits", partial)
    _known_keys(file, limits, _shipped_limit_names() or tuple(limits), "limits")
    for key, value in limits.items():
        _positive(file, f"limits.{key}", value, allow_zero=True)
    result: dict[str, Any] = {"metrics": metrics, "fleet": fleet, "limits": limits}
    for kind in ("gpus", "cpus"):
        models = _section(file, data, kind, partial)
        for model, row in models.items():
            _model_row(file, f"{kind}.{model}", row, known_metrics)
        default = "peak" if kind == "gpus" else "measured"
        result[kind] = {model: _figures(row, row.get("basis", default)) for model, row in models.items()}
    return result


_SHIPPED_CACHE: dict[str, Any] = {}


def _shipped_raw() -> dict[str, Any]:
    if not _SHIPPED_CACHE:
        data = read_yaml_file(SHIPPED, "reference file").data
        _SHIPPED_CACHE.update(data)
    return _SHIPPED_CACHE


def _shipped_metric_names() -> tuple[str, ...]:
    return tuple(_shipped_raw().get("metrics", {}))


def _shipped_limit_names() -> tuple[str, ...]:
    return tuple(_shipped_raw().get("limits", {}))


def _figures(row: Mapping[str, Any], basis: str) -> dict[str, Figure]:
    return {key: Figure(float(value), basis) for key, value in row.items() if key != "basis"}


def _section(file: _File, data: Mapping[str, Any], name: str, partial: bool) -> dict[str, Any]:
    if name not in data:
        if partial:
            return {}
        raise file.error(name, "is missing")
    value = data[name]
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise file.error(name, f"must be a mapping. Received: {echo(value)}")
    return {str(key): item for key, item in value.items()}


def _known_keys(file: _File, data: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in data:
        if key not in allowed:
            hint = closest(str(key), list(allowed))
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise file.error(dotted, f"is not a known key.{did_you_mean} Allowed: {', '.join(allowed)}")


def _metric_rule(file: _File, key: str, rule: Any, partial: bool) -> None:
    if not isinstance(rule, dict):
        raise file.error(key, f"must be a mapping with {', '.join(METRIC_KEYS)}. Received: {echo(rule)}")
    _known_keys(file, rule, METRIC_KEYS, key)
    missing = [name for name in METRIC_KEYS if name not in rule]
    if missing and not partial:
        raise file.error(key, f"lacks {', '.join(missing)}")
    if "unit" in rule and rule["unit"] not in UNITS:
        raise file.error(f"{key}.unit", f"is {echo(rule['unit'])}; known units: {', '.join(UNITS)}")
    for name in ("expected_fraction", "warn", "fail"):
        if name in rule:
            _fraction(file, f"{key}.{name}", rule[name], upper=name != "expected_fraction")
    if isinstance(rule.get("warn"), float | int) and isinstance(rule.get("fail"), float | int):
        if rule["warn"] > rule["fail"]:
            raise file.error(key, f"warn ({rule['warn']}) must not be larger than fail ({rule['fail']})")


def _model_row(file: _File, key: str, row: Any, metrics: list[str]) -> None:
    allowed = (*metrics, *EXTRA_MODEL_KEYS)
    if not isinstance(row, dict):
        raise file.error(key, f"must be a mapping of metric: value. Received: {echo(row)}")
    _known_keys(file, row, tuple(allowed), key)
    for name, value in row.items():
        if name == "basis":
            if value not in BASES:
                raise file.error(f"{key}.basis", f"is {echo(value)}; allowed: {', '.join(BASES)}")
        else:
            _positive(file, f"{key}.{name}", value)


def _number(file: _File, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise file.error(key, f"must be a number. Received: {echo(value)}")
    return float(value)


def _positive(file: _File, key: str, value: Any, allow_zero: bool = False) -> None:
    number = _number(file, key, value)
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise file.error(key, f"must be {bound}. Received: {echo(value)}")


def _fraction(file: _File, key: str, value: Any, upper: bool = True) -> None:
    number = _number(file, key, value)
    if number <= 0 or (upper and number >= 1) or number > 1:
        allowed = "between 0 and 1" if upper else "above 0 and at most 1"
        raise file.error(key, f"must be a fraction {allowed}. Received: {echo(value)}")


# --- judging -----------------------------------------------------------------------------------


def convert(value: float, unit: str, to_unit: str) -> float:
    """`value` in `unit` expressed in `to_unit` (both from UNITS, and of the same kind)."""
    return value * UNITS[unit] / UNITS[to_unit]


def shortfall(measured: float, unit: str, reference: Reference) -> float:
    """How far below the reference the measurement is, as a fraction (negative: above it)."""
    expected = convert(reference.value, reference.unit, unit)
    return 1.0 - measured / expected


def format_value(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    digits = 3 if abs(value) < 10 else (1 if abs(value) < 1000 else 0)
    return f"{value:,.{digits}f} {unit}"
