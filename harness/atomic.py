"""Atomic file writes: a crash or a full disk never leaves a half-written file behind.

Everything the run directory holds is written to a temporary file in the same folder and
renamed over the target, which POSIX makes atomic. Files and folders get the permissions the
user's umask gives any other file (`tempfile` would make them private), so colleagues on a shared
cluster can read a run. A write that fails (a full disk, a read-only folder) raises `WriteError`,
which names the file and, when space ran out, how much was free and how much the file needed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from harness.errors import UserInputError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class WriteError(UserInputError, OSError):
    """A file could not be written. Still an OSError, so code that handles OSError keeps working."""

    def __init__(self, message: str, target: Path, code: int | None, needed: int | None = None) -> None:
        super().__init__(code, message)
        self.message = message
        self.target = Path(target)
        self.needed = needed

    def __str__(self) -> str:
        return self.message

    @property
    def no_space(self) -> bool:
        return self.errno in NO_SPACE

    def explained(self, extra: str) -> WriteError:
        """The same failure with one more sentence (e.g. how much space the whole run needs)."""
        return WriteError(f"{self.message.rstrip('.')}. {extra}", self.target, self.errno, self.needed)

    def moved(self, target: Path) -> WriteError:
        """The same failure told for `target`: a file written in a staging folder before its rename."""
        message = self.message.replace(str(self.target), str(target))
        return WriteError(message, target, self.errno, self.needed)


def write_failure(target: Path, err: OSError, needed: int | None = None) -> WriteError:
    """Say which file could not be written and why; for a full disk, how much space there was."""
    if isinstance(err, WriteError):
        return err
    reason = err.strerror or type(err).__name__
    message = f"cannot write {target}: {reason}"
    if err.errno in NO_SPACE:
        free = free_bytes(Path(target).parent)
        need = f"it needs at least {format_size(needed)}" if needed else "its size is not known yet"
        have = f"{format_size(free)} free" if free is not None else "free space unknown"
        message += f" ({have} there; {need}). Free some space or choose another run.output_dir"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        message += f" (the folder {Path(target).parent} is not writable)"
    return WriteError(message, Path(target), err.errno, needed)


def free_bytes(path: Path) -> int | None:
    """Free space on the file system holding `path` (its nearest existing folder)."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def format_size(size: int) -> str:
    """1536 -> '1.5 KiB': what a person reads in a disk-full message."""
    if size < 1024:
        return f"{size} bytes"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "TiB":
            break
    return f"{scaled:.1f} {unit}"


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


def make_dirs(folder: Path) -> None:
    """`mkdir -p` that reports a failure like any other write."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_failure(Path(folder), err) from None


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new folder beside its final place, with the umask's permissions (mkdtemp makes it 0700)."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        os.chmod(folder, dir_mode())
    except OSError as err:
        raise write_failure(Path(parent) / prefix, err) from None
    return folder


@contextmanager
def atomic_path(target: Path, suffix: str = "", needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds.

    `needed` (bytes, if known) goes into the message when the disk is full.
    """
    target = Path(target)
    make_dirs(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
        os.close(fd)
        os.chmod(tmp, file_mode())
    except OSError as err:
        raise write_failure(target, err, needed) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except WriteError:
        raise
    except OSError as err:
        raise write_failure(target, err, needed or _size(tmp_path)) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size or None
    except OSError:
        return None


def atomic_write(
    target: Path, writer: Callable[[IO[Any]], object], binary: bool = False, needed: int | None = None
) -> None:
    """Call `writer` with an open temporary file, then rename it onto `target`.

    `needed`: the bytes to be written, if known (a `Payload` knows its own), for a full-disk message.
    """
    needed = needed if needed is not None else getattr(writer, "needed", None)
    with atomic_path(target, needed=needed) as tmp:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())


class Payload:
    """A writer for bytes known in advance: it knows how much space it needs."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.needed = len(data)

    def __call__(self, handle: IO[Any]) -> None:
        handle.write(self.data)


def write_text(target: Path, text: str) -> None:
    atomic_write(target, Payload(text.encode("utf-8")), binary=True)


def write_bytes(target: Path, data: bytes) -> None:
    atomic_write(target, Payload(data), binary=True)


def write_json(target: Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_text(target: Path, text: str) -> None:
    """Append to a log-like file (metrics.jsonl); a failed append is cut off again, not left half."""
    data = text.encode("utf-8")
    target = Path(target)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as err:
        raise write_failure(target, err, len(data)) from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as err:
            _cut(fd, start)
            raise write_failure(target, err, len(data)) from None
    finally:
        os.close(fd)


def _cut(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the reader skips a partial line, and the next resume cuts it


def _json_default(obj: Any) -> Any:
    """Serialise NumPy scalars and arrays, which metrics code produces everywhere."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
