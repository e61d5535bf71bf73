"""Where a run directory may be created or replaced, and how, so that nothing else is ever deleted.

Only a folder the harness made as a run directory may ever be deleted (`--overwrite`): such a
folder holds a `.harness-run` marker from its first moment, because a new run directory is
assembled under a temporary name, marker first, and renamed into place once its first files
are written. A full disk or a crash during that assembly therefore leaves no half-made run
directory that would block the next attempt.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import atomic
from harness.envinfo import utc_now
from harness.errors import RunDirError
from harness.rundir.layout import MARKER, RunDir
from harness.rundir.records import read_state

MARKER_SCHEMA_VERSION = 1


def check_output_dir(output_dir: Path) -> None:
    """run.output_dir must be a writable folder, or one that can be created (exit 2 before any work).

    What decides is the nearest folder that exists: the output folder itself, or the parent it
    would be created in.
    """
    out = Path(output_dir).absolute()
    folder = next((path for path in (out, *out.parents) if path.exists()), None)
    if folder is None:
        return
    key = f"run.output_dir={str(output_dir)!r}" + ("" if folder == out else " cannot be created")
    if not folder.is_dir():
        raise RunDirError(f"{key}: {folder} is a file, not a folder; choose another run.output_dir")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunDirError(f"{key}: {folder} is not writable (read-only or not yours); choose another run.output_dir")


def is_run_dir(path: Path) -> bool:
    """Whether harness created `path` as a run directory.

    The marker says so; a folder from before the marker existed counts if it holds the harness's
    own state.json (with its schema version) next to config.yaml.
    """
    run = RunDir(path)
    if run.marker.is_file():
        return True
    try:
        state = read_state(path)
    except RunDirError:
        return False
    return "schema_version" in state and "state" in state and run.config.is_file()


def removal_problem(path: Path, output_dir: Path) -> str | None:
    """Why `path` must not be deleted to make room for a new run, or None if it may be."""
    if path.is_symlink():
        return f"it is a symbolic link (to {os.readlink(path)}), and harness never deletes through a link"
    resolved, out = path.resolve(), Path(output_dir).resolve()
    if resolved == out:
        return f"it is run.output_dir itself ({out}), which holds other runs"
    if resolved.parent != out:
        return f"it ({resolved}) is not a folder directly inside run.output_dir ({out})"
    if not resolved.is_dir():
        return "it is a file, not a run directory"
    if not is_run_dir(resolved):
        return f"it holds no {MARKER} marker, so harness did not create it as a run directory"
    return None


def check_removable(path: Path, output_dir: Path) -> None:
    problem = removal_problem(path, output_dir)
    if problem is not None:
        raise RunDirError(
            f"--overwrite refused: {path} was not deleted because {problem}. Delete it yourself if it "
            "is no longer needed, or choose another name with run.name=NEW_NAME"
        )


def remove_run_dir(path: Path, output_dir: Path) -> None:
    """Delete a run directory, checking again at the last moment that it is one."""
    check_removable(path, output_dir)
    shutil.rmtree(path.resolve())


def write_marker(folder: Path, by: str) -> None:
    """Mark `folder` as a run directory made by harness, the only kind --overwrite deletes."""
    marker = {"schema_version": MARKER_SCHEMA_VERSION, "created": utc_now(), "by": by}
    atomic.write_json(RunDir(folder).marker, marker)


@contextmanager
def new_run_dir(path: Path, output_dir: Path, *, overwrite: bool, by: str = "harness train") -> Iterator[Path]:
    """Yield a staging folder for a new run directory; it becomes `path` when the block succeeds.

    The staging folder sits beside `path` and is removed if the block fails, so nothing
    half-made is left. A run `--overwrite` replaces is deleted only then, once the new run's
    first files were written.
    """
    atomic.make_dirs(path.parent)
    staging = atomic.temp_dir(path.parent, f".{path.name}.new-")
    try:
        write_marker(staging, by)
        try:
            yield staging
        except atomic.WriteError as err:
            raise _told_for(err, staging, path) from None
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise RunDirError(f"run directory {path} appeared while this run was starting; nothing was replaced")
            _swap_in(staging, path, output_dir)
        else:
            os.rename(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def set_aside(path: Path, output_dir: Path) -> Path:
    """Move a run that --overwrite replaces to a hidden name beside it; returns where it went.

    The caller deletes it once the new run is in place, or renames it back if that fails.
    """
    check_removable(path, output_dir)
    aside = atomic.temp_dir(path.parent, f".{path.name}.old-")
    os.rmdir(aside)  # only its unique name is wanted: rename needs a free target
    os.rename(path, aside)
    return aside


def _swap_in(staging: Path, path: Path, output_dir: Path) -> None:
    """Replace the old run at `path` by `staging`: the old one is set aside first and deleted only
    once the new one is in place, so a failed rename loses neither."""
    aside = set_aside(path, output_dir)
    try:
        os.rename(staging, path)
    except OSError:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _told_for(err: atomic.WriteError, staging: Path, final: Path) -> atomic.WriteError:
    try:
        return err.moved(final / err.target.relative_to(staging))
    except ValueError:
        return err
