"""Atomic checkpoints: model and optimizer variables plus the loop's position.

Layout under `checkpoints/`: one folder per save (`step-00000123/`) and three pointer files,
`latest`, `previous` (what `latest` named before the last save) and `best`, each naming a folder.
A folder is complete before a pointer names it, and a pointer is replaced atomically, so a crash
at any moment leaves a loadable checkpoint. Folders that no pointer names are deleted after each
save. Keeping `previous` means a checkpoint damaged later (a truncated copy, a disk error) still
has an older one to fall back to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from harness import atomic
from harness.errors import RunDirError
from harness.rundir.layout import checkpoint_state

POINTERS = ("latest", "previous", "best")
FOLDER_NAME = re.compile(r"step-\d{8,}")
NPZ_OVERHEAD = 512
"""Bytes an .npz adds per array (zip entry and .npy header), for the space a save needs."""


class CorruptCheckpoint(RunDirError):
    """A checkpoint file cannot be read (truncated, damaged); an older checkpoint may still be good."""


@dataclass
class LoopState:
    """Where the loop stands; saved with every checkpoint so resume is exact."""

    epoch: int = 0  # index of the epoch in progress (or next to run)
    step_in_epoch: int = 0  # batches of `epoch` already done
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    partial: dict[str, float] = field(default_factory=dict)  # accumulators of a partial epoch
    samples_seen: int = 0
    train_time_s: float = 0.0
    global_batch: int = 0  # the layout `step_in_epoch` refers to


def save(
    directory: Path, variables: list[Any], opt_variables: list[Any], state: LoopState, best: bool
) -> Path:
    """Write a checkpoint folder, then point `latest` (and `best` if asked) at it."""
    atomic.make_dirs(directory)
    name = f"step-{state.global_step:08d}"
    tmp = atomic.temp_dir(directory, f".{name}.")
    final = directory / name
    try:
        _write_arrays(tmp / "model.npz", variables)
        _write_arrays(tmp / "optimizer.npz", opt_variables)
        atomic.write_json(checkpoint_state(tmp), asdict(state))
        _replace_folder(tmp, final)
    except atomic.WriteError as err:  # named as the file it was to become, not its temporary folder
        raise err.moved(final / err.target.name) if err.target.parent == tmp else err from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    before = _pointed(directory, "latest")
    if before is not None and before != name:
        atomic.write_text(directory / "previous", before + "\n")
    atomic.write_text(directory / "latest", name + "\n")
    if best:
        atomic.write_text(directory / "best", name + "\n")
    _prune(directory)
    return final


def _replace_folder(new: Path, final: Path) -> None:
    """Move a finished folder into place; one saved at the same step before is swapped out first."""
    if not final.exists():
        os.replace(new, final)
        return
    old = new.with_name(new.name + ".old")
    os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _pointed(directory: Path, which: str) -> str | None:
    """The folder name a pointer file holds, if it holds a well-formed one."""
    try:
        name = (directory / which).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if FOLDER_NAME.fullmatch(name) else None


def resolve(directory: Path, which: str = "latest") -> Path | None:
    """The checkpoint folder a pointer names, or None if there is none."""
    name = _pointed(directory, which)
    folder = directory / name if name else None
    return folder if folder is not None and folder.is_dir() else None


def candidates(directory: Path) -> list[Path]:
    """Checkpoint folders to resume from, newest first: latest, then previous, then best."""
    found: list[Path] = []
    for which in POINTERS:
        folder = resolve(directory, which)
        if folder is not None and folder not in found:
            found.append(folder)
    return found


def read_state(folder: Path) -> LoopState:
    """The loop position saved in a checkpoint, without loading its arrays."""
    path = checkpoint_state(folder)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptCheckpoint(f"checkpoint file {path} cannot be read: {err}") from None
    known = {f.name for f in fields(LoopState)}
    if not isinstance(raw, dict) or not set(raw) <= known:
        raise CorruptCheckpoint(f"checkpoint file {path} does not hold a training loop state")
    try:
        return LoopState(**raw)
    except TypeError as err:
        raise CorruptCheckpoint(f"checkpoint file {path} does not hold a training loop state: {err}") from None


def load(folder: Path, variables: list[Any], opt_variables: list[Any]) -> LoopState:
    """Assign saved values to the given variables, checking that they match.

    Every file is read and checked before the first variable is assigned, so a damaged
    checkpoint (CorruptCheckpoint) leaves the variables as they were for an older one to load.
    """
    state = read_state(folder)
    model = _read_arrays(folder / "model.npz")
    optimizer = _read_arrays(folder / "optimizer.npz")
    _check(folder / "model.npz", model, variables, "model")
    _check(folder / "optimizer.npz", optimizer, opt_variables, "optimizer")
    for var, value in zip([*variables, *opt_variables], [*model, *optimizer], strict=True):
        var.assign(value)
    return state


def _write_arrays(path: Path, variables: list[Any]) -> None:
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    needed = sum(a.nbytes + NPZ_OVERHEAD for a in arrays.values()) + NPZ_OVERHEAD
    atomic.atomic_write(path, lambda handle: np.savez(handle, **arrays), binary=True, needed=needed)  # type: ignore[arg-type]


def _read_arrays(path: Path) -> list[np.ndarray]:
    """Every array of an .npz file, read now: a truncated file fails here, not half-way through assigning."""
    try:
        with np.load(path) as saved:
            return [np.asarray(saved[f"v{i:05d}"]) for i in range(len(saved.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise CorruptCheckpoint(
            f"checkpoint file {path} cannot be read ({type(err).__name__}: {str(err)[:200]}); "
            "it may be truncated or damaged"
        ) from None


def _check(path: Path, arrays: list[np.ndarray], variables: list[Any], what: str) -> None:
    if len(arrays) != len(variables):
        raise RunDirError(
            f"checkpoint {path} holds {len(arrays)} {what} variables but the {what} built from the "
            f"config has {len(variables)}; was the config changed since the checkpoint was written?"
        )
    for var, value in zip(variables, arrays, strict=True):
        if tuple(var.shape) != value.shape:
            raise RunDirError(
                f"checkpoint {path}: {what} variable {getattr(var, 'path', var.name)} has shape "
                f"{tuple(var.shape)} in the config's {what} but {value.shape} in the checkpoint"
            )


def _prune(directory: Path) -> None:
    keep = {p.name for p in candidates(directory)}
    for child in directory.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
