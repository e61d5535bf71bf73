"""The JSON Schema of validation output, and a small validator for the part of JSON Schema it uses.

Automation reads `validation.json` and the per-node files; the schema (data/validate.schema.json)
is their contract, versioned by `schema_version`. The `jsonschema` package is not a dependency,
so `problems` checks the keywords the schema uses (type, enum, const, required, properties,
additionalProperties, items, anyOf, minimum, $ref to #/$defs); any other keyword is refused,
so the schema cannot grow a rule that is silently not checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("data") / "validate.schema.json"
ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs"}
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


@cache
def load_schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def node_schema() -> dict[str, Any]:
    return {"$ref": "#/$defs/node", "$defs": load_schema()["$defs"]}


def problems(document: Any, schema: Mapping[str, Any] | None = None) -> list[str]:
    """Every place `document` breaks the schema (the whole report schema by default), as `path: problem`."""
    root = dict(schema if schema is not None else load_schema())
    found: list[str] = []
    _check(document, root, root, "$", found)
    return found


def _check(value: Any, rule: Mapping[str, Any], root: Mapping[str, Any], path: str, found: list[str]) -> None:
    for keyword, argument in rule.items():
        if keyword in ANNOTATIONS:
            continue
        if keyword == "additionalProperties":
            _additional(value, argument, rule.get("properties", {}), root, path, found)
            continue
        checker = _KEYWORDS.get(keyword)
        if checker is None:
            raise ValueError(f"schema keyword {keyword!r} at {path} is not supported by this validator")
        checker(value, argument, root, path, found)


def _type(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    names = [argument] if isinstance(argument, str) else list(argument)
    ok = any(isinstance(value, TYPES[name]) and not (isinstance(value, bool) and name in ("integer", "number"))
             for name in names)
    if not ok:
        found.append(f"{path}: {type(value).__name__} is not {' or '.join(names)}")


def _enum(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    if value not in argument or isinstance(value, bool) != any(isinstance(a, bool) for a in argument if a == value):
        found.append(f"{path}: {value!r:.80} is not one of {argument}")


def _const(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    if value != argument or type(value) is not type(argument):
        found.append(f"{path}: {value!r:.80} is not {argument!r}")


def _required(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    if isinstance(value, dict):
        found.extend(f"{path}: missing {key!r}" for key in argument if key not in value)


def _properties(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    if isinstance(value, dict):
        for key, rule in argument.items():
            if key in value:
                _check(value[key], rule, root, f"{path}.{key}", found)


def _additional(
    value: Any, argument: Any, known: Mapping[str, Any], root: Mapping[str, Any], path: str, found: list[str]
) -> None:
    """Keys not named in the sibling `properties`: refused (false) or checked against a rule."""
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key in known:
            continue
        if argument is False:
            found.append(f"{path}: unexpected key {key!r}")
        elif isinstance(argument, dict):
            _check(item, argument, root, f"{path}.{key}", found)


def _items(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, argument, root, f"{path}[{index}]", found)


def _any_of(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    attempts = []
    for rule in argument:
        local: list[str] = []
        _check(value, rule, root, path, local)
        if not local:
            return
        attempts.extend(local)
    found.append(f"{path}: matches none of the allowed forms ({'; '.join(attempts)[:300]})")


def _minimum(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value < argument:
        found.append(f"{path}: {value} is below the minimum {argument}")


def _ref(value: Any, argument: Any, root: Mapping[str, Any], path: str, found: list[str]) -> None:
    prefix = "#/$defs/"
    if not isinstance(argument, str) or not argument.startswith(prefix):
        raise ValueError(f"only local references ({prefix}...) are supported, found {argument!r}")
    _check(value, root["$defs"][argument[len(prefix):]], root, path, found)


_KEYWORDS = {
    "type": _type, "enum": _enum, "const": _const, "required": _required, "properties": _properties,
    "items": _items, "anyOf": _any_of, "minimum": _minimum, "$ref": _ref,
}
