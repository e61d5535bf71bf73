"""The import rule of docs/architecture.md, checked on the source: parts import only downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
FOUNDATION = {"rundir", "atomic", "errors", "envinfo", "registry", "shapes", "imports", "__version__"}
LIBRARIES = {"config", "data", "models", "distribute", "evaluate"}
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "data": {"config"},
    "models": {"config"},
    "distribute": {"config"},
    "evaluate": {"config"},
    "train": LIBRARIES,
    "slurm": {"train", *LIBRARIES},
    "commands": {"train", *LIBRARIES},
    "sweep": {"slurm", "train", *LIBRARIES},
    "validate": {"slurm", "train", *LIBRARIES},
}
"""Which parts each part may import besides the foundation (any part may use the foundation)."""


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported_parts(path: Path) -> set[str]:
    """harness parts a source file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            if node.module == "harness":
                found.update(alias.name for alias in node.names)
            else:
                found.add(part_of(node.module))
        elif isinstance(node, ast.Import):
            found.update(part_of(a.name) for a in node.names if a.name.startswith("harness."))
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_parts_import_only_downwards(path: Path) -> None:
    me = part_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    if me in ("cli", "__main__", "__init__"):
        return
    others = imported_parts(path) - {me}
    if me in FOUNDATION:
        assert others <= FOUNDATION, f"{path}: the foundation imports {sorted(others - FOUNDATION)}"
        return
    assert me in ALLOWED, f"{path}: part {me!r} is not in docs/architecture.md"
    wrong = others - FOUNDATION - ALLOWED[me]
    assert not wrong, f"{path}: {me} may not import {sorted(wrong)} (docs/architecture.md)"


@pytest.mark.parametrize(
    "module",
    [
        "harness.rundir",
        "harness.distribute.choice",
        "harness.distribute.measured",
        "harness.distribute.cores",
        "harness.cli",
    ],
)
def test_light_modules_do_not_import_tensorflow(module: str) -> None:
    """Status, the auto rule and the command line start without TensorFlow (seconds on a login node)."""
    code = f"import sys, {module}; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"], f"{module} imports TensorFlow or Keras"
