"""The expected-versions file: what software stack every node (or one named node) must have.

    python: "3.11.*"          # a glob: * and ? as in shell patterns
    tensorflow: "2.21.0"
    nvidia_driver: "550.*"
    nodes:                    # optional: entries for single nodes, over the ones above
      gpu-a07: {nvidia_driver: "535.*"}

Versions are strings: YAML reads 3.10 as the number 3.1, so a bare number with a decimal point is
refused with a hint to quote it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.messages import echo
from harness.config.yamlfile import YamlDoc, read_yaml_file
from harness.errors import ConfigError
from harness.registry import closest

COMPONENTS = (
    "python", "harness", "tensorflow", "keras", "numpy", "horovod", "horovod_controllers",
    "mpi", "mpi4py", "cuda", "cudnn", "nvidia_driver", "cuda_driver",
)
NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class ExpectedVersions:
    common: Mapping[str, str]
    nodes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    source: str = ""

    def for_node(self, node: str) -> dict[str, str]:
        return {**self.common, **self.nodes.get(node, {})}


def matches(found: str | None, pattern: str) -> bool:
    """Whether a found version fits the expected pattern (exact, or a glob)."""
    return fnmatch.fnmatchcase(found if found is not None else NOT_INSTALLED, pattern)


def load_expected(path: Path) -> ExpectedVersions:
    doc = read_yaml_file(path, "expected-versions file")
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected-versions file {path} must be a mapping of component: version. Received: {echo(data)}"
        )
    nodes_raw = data.pop("nodes", None) or {}
    common = _versions(doc, path, data, "")
    if not isinstance(nodes_raw, dict):
        raise _error(doc, path, "nodes", f"must map node names to component: version. Received: {echo(nodes_raw)}")
    nodes = {}
    for node, entry in nodes_raw.items():
        if not isinstance(entry, dict):
            problem = f"must be a mapping of component: version. Received: {echo(entry)}"
            raise _error(doc, path, f"nodes.{node}", problem)
        nodes[str(node)] = _versions(doc, path, entry, f"nodes.{node}")
    return ExpectedVersions(common, nodes, str(path))


def _versions(doc: YamlDoc, path: Path, data: Mapping[Any, Any], prefix: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in COMPONENTS:
            hint = closest(str(key), list(COMPONENTS))
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            allowed = ", ".join((*COMPONENTS, "nodes") if not prefix else COMPONENTS)
            raise _error(doc, path, dotted, f"is not a known component.{did_you_mean} Allowed: {allowed}")
        found[str(key)] = _version(doc, path, dotted, value)
    return found


def _version(doc: YamlDoc, path: Path, dotted: str, value: Any) -> str:
    if isinstance(value, float):
        raise _error(doc, path, dotted, f"is the number {value!r}, not a version string: write versions in "
                     "quotes (\"3.10\"), since YAML reads an unquoted 3.10 as the number 3.1")
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise _error(doc, path, dotted, f"must be a version string such as \"2.21.0\" or \"2.21.*\". "
                     f"Received: {echo(value)}")
    return str(value).strip()


def _error(doc: YamlDoc, path: Path, key: str, problem: str) -> ConfigError:
    line = doc.lines.get(key)
    where = f" (line {line})" if line else ""
    return ConfigError(f"expected-versions file {path}: {key}{where} {problem}")
