"""Load a YAML experiment file, apply `key=value` overrides, validate once, explain errors.

Errors name the file, the dotted key, the bad value, what is allowed, the line in the file where
the key stands, and the closest valid key when a name is misspelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.config.schema import Config
from harness.errors import ConfigError
from harness.registry import closest

DEFAULT_SOURCE = "<packaged default>"


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Return the validated config from `path` (or the packaged default) plus overrides."""
    source = str(path) if path is not None else DEFAULT_SOURCE
    raw, lines = ({}, {}) if path is None else _read_yaml(Path(path))
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, source)
        lines[key] = "command line"
    return validate_config(raw, source, lines)


def validate_config(
    raw: Mapping[str, Any], source: str, lines: Mapping[str, int | str] | None = None
) -> Config:
    """Validate a raw mapping; every problem is reported in one ConfigError."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e, lines or {}) for e in err.errors()]
        raise ConfigError(f"invalid config {source}:\n  - " + "\n  - ".join(problems)) from None


def parse_override(item: str) -> tuple[str, Any]:
    """Split `a.b=value`; the value is parsed as YAML so numbers, lists and null work."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. training.epochs=5")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, loadable again by `load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int | str]]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {err.problem}") from None
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (run, data, model, ...); "
            f"it holds a {type(raw).__name__}"
        )
    return raw, _key_lines(node)


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int | str]:
    """Map each dotted key of a composed YAML document to its 1-based line number."""
    lines: dict[str, int | str] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            lines[dotted] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, dotted + "."))
    return lines


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {key}=... in {source}: {where} is not a section")
        node = child
    node[parts[-1]] = value


def _describe(error: Any, lines: Mapping[str, int | str]) -> str:
    loc = [str(p) for p in error["loc"]]
    dotted = ".".join(loc)
    where = _where(dotted, lines)
    if error["type"] == "extra_forbidden":
        return _unknown_key(loc, where)
    if not loc:
        return error["msg"].removeprefix("Value error, ")
    message = error["msg"].removeprefix("Value error, ")
    return f"{dotted}{where}: {message}. Received: {dotted}={error['input']!r}"


def _where(dotted: str, lines: Mapping[str, int | str]) -> str:
    line = lines.get(dotted)
    if line is None:
        return ""
    return " (command line)" if isinstance(line, str) else f" (line {line})"


def _unknown_key(loc: list[str], where: str) -> str:
    dotted = ".".join(loc)
    valid = _fields_at(loc[:-1])
    hint = closest(loc[-1], valid)
    prefix = ".".join(loc[:-1])
    suggestion = f" Did you mean {prefix + '.' if prefix else ''}{hint}?" if hint else ""
    return f"unknown key {dotted}{where}.{suggestion} Valid keys here: {', '.join(valid)}"


def _fields_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
