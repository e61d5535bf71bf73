"""Atomic file writes: a crash or a full disk never leaves a half-written file behind.

Everything the run directory holds is written to a temporary file in the same folder and
renamed over the target, which POSIX makes atomic.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write(target: Path, writer: Callable[[IO[Any]], object], binary: bool = False) -> None:
    """Call `writer` with an open temporary file, then rename it onto `target`."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(target: Path, text: str) -> None:
    atomic_write(target, lambda handle: handle.write(text))


def write_bytes(target: Path, data: bytes) -> None:
    atomic_write(target, lambda handle: handle.write(data), binary=True)


def write_json(target: Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    """Serialise NumPy scalars and arrays, which metrics code produces everywhere."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
