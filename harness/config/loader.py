"""Load a YAML experiment file, apply `key=value` overrides, validate once, explain errors.

Errors name the file, the dotted key, the bad value, what is allowed, the line in the file where
the key stands, and the closest valid key when a name is misspelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.config.messages import bullet_list, clip, echo
from harness.config.schema import Config
from harness.config.yamlfile import Loc, YamlProblem, dotted, line_key, parse_yaml, read_yaml_file
from harness.errors import ConfigError
from harness.registry import closest

DEFAULT_SOURCE = "<packaged default>"


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Return the validated config from `path` (or the packaged default) plus overrides."""
    source = str(path) if path is not None else DEFAULT_SOURCE
    raw, lines = ({}, {}) if path is None else _read_config(Path(path))
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, source)
        for known in [k for k in lines if k == key or k.startswith(key + ".")]:
            del lines[known]
        lines[key] = "command line"
    return validate_config(raw, source, lines)


def validate_config(
    raw: Mapping[str, Any], source: str, lines: Mapping[str, int | str] | None = None
) -> Config:
    """Validate a raw mapping; every problem is reported in one ConfigError."""
    lines = lines or {}
    nul = [_nul_problem(loc, text, lines) for loc, text in _nul_strings(raw, ())]
    if nul:
        raise ConfigError(f"invalid config {source}:{bullet_list(nul)}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e, lines) for e in err.errors()]
        raise ConfigError(f"invalid config {source}:{bullet_list(problems)}") from None


def _nul_problem(loc: Loc, text: str, lines: Mapping[str, int | str]) -> str:
    name = clip(dotted(loc))
    return (
        f"{name}{_where(loc, lines)}: contains a NUL character (\\0), which no name, path or command "
        f"line can hold. Received: {name}={echo(text)}"
    )


def _nul_strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Strings holding NUL (YAML's "\\0"): the operating system refuses them as paths or arguments."""
    if isinstance(value, str) and "\x00" in value:
        yield loc, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _nul_strings(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _nul_strings(item, (*loc, index))


def parse_override(item: str) -> tuple[str, Any]:
    """Split `a.b=value`; the value is parsed as YAML (same rules as a file) so numbers, lists and null work.

    A value that is not valid YAML at all (`x: y: z`) is taken as the plain string.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {echo(item)} must look like section.key=value, e.g. training.epochs=5")
    if not text.strip():
        return key, ""
    try:
        value = parse_yaml(text, prefix=tuple(key.split("."))).data
    except YamlProblem as err:
        raise ConfigError(f"override {clip(key)}={clip(text)}: the value {err}") from None
    except yaml.YAMLError:
        value = text
    return key, value


UNSET_NOTE = (
    "# training.{keys} left out: not set, so a compiled model's own optimizer is used, else the defaults\n"
)


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, loadable again by `load_config` to the same meaning.

    `training.optimizer` and `training.schedule` are written only when the config set one of
    their keys: whether they were set decides if a compiled model keeps its own optimizer, and
    writing the defaults would make a resumed, requeued or reproduced run replace it. Of
    `training.optimizer`, only the keys that were set are written: a default that applies to
    some optimizers only (momentum) would otherwise be read back as set for one without it.
    """
    dumped = config.model_dump(mode="json")
    training = config.training
    is_set = {"optimizer": training.optimizer_is_set, "schedule": training.schedule_is_set}
    unset = [key for key, was_set in is_set.items() if not was_set]
    for key in unset:
        del dumped["training"][key]
    if training.optimizer_is_set:
        dumped["training"]["optimizer"] = training.optimizer.model_dump(mode="json", exclude_unset=True)
    note = UNSET_NOTE.format(keys=" and training.".join(unset)) if unset else ""
    return note + yaml.safe_dump(dumped, sort_keys=False)


def _read_config(path: Path) -> tuple[dict[str, Any], dict[str, int | str]]:
    doc = read_yaml_file(path, "config file")
    if doc.data is None:
        return {}, {}
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (run, data, model, ...); "
            f"it holds a {type(doc.data).__name__}"
        )
    return doc.data, dict(doc.lines)


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {clip(key)}=... in {source}: {clip(where)} is not a section")
        node = child
    node[parts[-1]] = value


def _describe(error: Any, lines: Mapping[str, int | str]) -> str:
    loc: Loc = tuple(error["loc"])
    name = clip(dotted(loc))
    where = _where(loc, lines)
    if error["type"] == "extra_forbidden":
        return _unknown_key([str(part) for part in loc], where)
    message = str(error["msg"]).removeprefix("Value error, ").rstrip(".")
    if not loc:
        return message
    if isinstance(error["input"], Mapping):  # a section-wide rule: its message names the values
        return f"{name}{where}: {message}"
    return f"{name}{where}: {message}. Received: {name}={echo(error['input'])}"


def _where(loc: Loc, lines: Mapping[str, int | str]) -> str:
    """Where the value was set: its own line, else the line of the closest enclosing key."""
    for end in range(len(loc), 0, -1):
        line = lines.get(line_key(loc[:end]))
        if line is not None:
            return " (command line)" if isinstance(line, str) else f" (line {line})"
    return ""


def _unknown_key(loc: list[str], where: str) -> str:
    name = clip(".".join(loc))
    valid = _fields_at(loc[:-1])
    hint = closest(loc[-1], valid)
    prefix = ".".join(loc[:-1])
    suggestion = f" Did you mean {prefix + '.' if prefix else ''}{hint}?" if hint else ""
    return f"unknown key {name}{where}.{suggestion} Valid keys here: {', '.join(valid)}"


def _fields_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
