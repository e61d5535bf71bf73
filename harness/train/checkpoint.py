"""Atomic checkpoints: model and optimizer variables plus the loop's position.

Layout under `checkpoints/`: one folder per save (`step-00000123/`) and two pointer files,
`latest` and `best`, each naming a folder. A folder is complete before a pointer names it, and a
pointer is replaced atomically, so a crash at any moment leaves a loadable checkpoint. Folders
that no pointer names are deleted after each save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import io
from harness.errors import RunDirError

POINTERS = ("latest", "best")


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
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.global_step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=directory))
    try:
        _write_arrays(tmp / "model.npz", variables)
        _write_arrays(tmp / "optimizer.npz", opt_variables)
        io.write_json(tmp / "state.json", asdict(state))
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    io.write_text(directory / "latest", name + "\n")
    if best:
        io.write_text(directory / "best", name + "\n")
    _prune(directory)
    return final


def resolve(directory: Path, which: str = "latest") -> Path | None:
    """The checkpoint folder a pointer names, or None if there is none."""
    pointer = directory / which
    if not pointer.is_file():
        return None
    folder = directory / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def load(folder: Path, variables: list[Any], opt_variables: list[Any]) -> LoopState:
    """Assign saved values to the given variables, checking that they match."""
    _assign(folder / "model.npz", variables, "model")
    _assign(folder / "optimizer.npz", opt_variables, "optimizer")
    try:
        raw = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"checkpoint {folder} has no readable state.json: {err}") from None
    return LoopState(**raw)


def _write_arrays(path: Path, variables: list[Any]) -> None:
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    io.atomic_write(path, lambda handle: np.savez(handle, **arrays), binary=True)  # type: ignore[arg-type]


def _assign(path: Path, variables: list[Any], what: str) -> None:
    try:
        with np.load(path) as saved:
            arrays = [saved[f"v{i:05d}"] for i in range(len(saved.files))]
    except (OSError, ValueError, KeyError) as err:
        raise RunDirError(f"checkpoint file {path} cannot be read: {err}") from None
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
        var.assign(value)


def _prune(directory: Path) -> None:
    keep = {p.name for p in (resolve(directory, w) for w in POINTERS) if p is not None}
    for child in directory.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
