"""Where results go: the output folder of a validation and the per-node history.

    OUT/validation.json        the validation report (schema: data/validate.schema.json)
    OUT/validation.html        the same for people
    OUT/nodes/NODE.json        each node's own result: what a job on that node writes
    OUT/history/NODE.jsonl     one line per validation of that node, appended: drift over time

Every file is written atomically (a temporary file renamed into place); a history line is one
append of one complete line, and each node appends only to its own file, so jobs on several
nodes never write the same file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import atomic
from harness.errors import UserInputError
from harness.validate.results import NodeResult, node_from_dict

NODES = "nodes"
HISTORY = "history"
REPORT_JSON = "validation.json"
REPORT_HTML = "validation.html"


def safe_name(node: str) -> str:
    """A node name as a file name: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", node).lstrip(".") or "node"


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that cannot be one, before anything runs (nothing is created here)."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UserInputError(f"--out {out}: {folder} exists and is not a folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise UserInputError(f"--out {out}: the folder {folder} is not writable")
            return


def write_node(out: Path, node: NodeResult) -> Path:
    target = out / NODES / f"{safe_name(node.node)}.json"
    atomic.write_json(target, node.to_dict())
    return target


def append_history(out: Path, node: NodeResult) -> Path:
    target = out / HISTORY / f"{safe_name(node.node)}.jsonl"
    atomic.make_dirs(target.parent)
    atomic.append_text(target, json.dumps(node.to_dict(), separators=(",", ":")) + "\n")
    return target


def read_history(out: Path, node: str) -> list[dict[str, Any]]:
    """Earlier results of `node`, oldest first; an unreadable line (cut by a crash) is skipped."""
    path = out / HISTORY / f"{safe_name(node)}.jsonl"
    return list(_lines(path)) if path.is_file() else []


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            yield item


def write_text(target: Path, text: str) -> None:
    atomic.write_text(target, text)


def read_nodes(folder: Path) -> list[NodeResult]:
    """Every node result in OUT/nodes (what a partition run gathers), sorted by node name."""
    results = []
    for path in sorted((folder / NODES).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserInputError(f"{path}: cannot read a node result ({err})") from None
        results.append(node_from_dict(data, str(path)))
    return results
