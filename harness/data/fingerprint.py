"""What a run's data file was when it trained, so `harness evaluate` can tell when it changed since.

`harness evaluate` prepares the data again from `data.path`: the label encoding, the scaling and
the test split are refitted to what the file holds now. A file edited since training (a label
renamed, rows re-ordered, a class added) gives a report on another test set, with class names on
the wrong columns, and nothing would say so. The fingerprint is recorded in env.json at the
start of training and compared before evaluating.

A file is fingerprinted by its bytes (SHA-256); an image folder by the path and size of every file
the loader reads (hidden and non-image files left out, as it leaves them), which sees images added,
removed or moved between class folders without reading them all.
Built-in datasets have no file, and no fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness.errors import DataError

CHUNK = 1 << 20


def data_fingerprint(path: str | Path | None) -> dict[str, Any] | None:
    """The fingerprint of `data.path` (None for a built-in dataset or a path that is not there)."""
    if not path:
        return None
    source = Path(path)
    if source.is_file():
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        return {"path": str(source), "kind": "file", "sha256": digest.hexdigest(), "bytes": source.stat().st_size}
    if source.is_dir():
        from harness.data.images import list_images  # the files the loader reads, not .DS_Store or notes

        digest = hashlib.sha256()
        files = list_images(source)
        for file in files:
            digest.update(f"{file.relative_to(source).as_posix()}\0{file.stat().st_size}\n".encode())
        return {"path": str(source), "kind": "folder", "sha256": digest.hexdigest(), "files": len(files)}
    return None


def check_unchanged(recorded: Any, path: str | Path | None, run_dir: Path) -> None:
    """Refuse (DataError, exit 2) to evaluate on data that differs from what the run trained on."""
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return  # a run from before fingerprints, or a built-in dataset
    now = data_fingerprint(path)
    if now is None or now["sha256"] == recorded["sha256"]:
        return  # unchanged, or gone: reading it says so, naming the path
    was, is_now = _size(recorded), _size(now)
    raise DataError(
        f"data.path {path} changed since {run_dir} was trained on it ({was} then, {is_now} now; SHA-256 "
        f"{str(recorded['sha256'])[:12]}... then, {now['sha256'][:12]}... now): its labels, "
        "scaling and test split would be refitted to the new contents, and the report would describe another test "
        "set. Restore the file the run was trained on, or train a new run on the new data"
    )


def _size(fingerprint: dict[str, Any]) -> str:
    if fingerprint.get("kind") == "file":
        return f"{fingerprint.get('bytes', '?')} bytes"
    return f"{fingerprint.get('files', '?')} files"
