"""The seeded train/validation/test split, stratified by class when it can be."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from harness.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted sample indices of each part; `fallback` says why stratification was given up."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    stratified: bool
    fallback: str | None = None

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_sizes(n: int, validation_split: float, test_split: float) -> tuple[int, int, int]:
    """Rows for train, validation and test: fractions rounded, validation and test at least one."""
    n_val = max(1, round(n * validation_split))
    n_test = max(1, round(n * test_split))
    return n - n_val - n_test, n_val, n_test


def minimum_rows(validation_split: float, test_split: float) -> int:
    """The fewest rows for which every part of the split gets at least one."""
    n = 3
    while split_sizes(n, validation_split, test_split)[0] < 1:
        n += 1
    return n


def check_enough_rows(
    n: int, validation_split: float, test_split: float, source: str, detail: str = ""
) -> None:
    """Raise a DataError when `n` rows cannot give train, validation and test one row each."""
    needed = minimum_rows(validation_split, test_split)
    if n < needed:
        raise DataError(
            f"{source} must have at least {needed} usable rows for data.validation_split={validation_split} "
            f"and data.test_split={test_split}, so that train, validation and test each get one. "
            f"Received: {n} rows{detail}."
        )


def split_indices(
    n: int,
    labels: np.ndarray | None,
    validation_split: float,
    test_split: float,
    seed: int,
    source: str,
    class_names: list[str] | None = None,
) -> Split:
    """Split `n` samples; stratify by `labels` when given, else (or when impossible) shuffle freely.

    Stratification falls back to a plain shuffled split, recorded in the result and logged,
    rather than failing: a class with one or two samples cannot be in every part, and refusing to
    train on such data would be less useful than saying so in the report.
    """
    check_enough_rows(n, validation_split, test_split, source)
    _, n_val, n_test = split_sizes(n, validation_split, test_split)
    if labels is not None:
        try:
            return _split(n, labels, n_val, n_test, seed, stratified=True)
        except ValueError:
            reason = _fallback_reason(labels, n_val, n_test, class_names)
            log.warning("%s: %s", source, reason)
            return _split(n, None, n_val, n_test, seed, stratified=False, fallback=reason)
    return _split(n, None, n_val, n_test, seed, stratified=False)


def _split(
    n: int,
    labels: np.ndarray | None,
    n_val: int,
    n_test: int,
    seed: int,
    stratified: bool,
    fallback: str | None = None,
) -> Split:
    everything = np.arange(n)
    rest, test = train_test_split(everything, test_size=n_test, random_state=seed, stratify=labels)
    rest_labels = None if labels is None else labels[rest]
    train, val = train_test_split(rest, test_size=n_val, random_state=seed, stratify=rest_labels)
    return Split(np.sort(train), np.sort(val), np.sort(test), stratified, fallback)


def _fallback_reason(labels: np.ndarray, n_val: int, n_test: int, class_names: list[str] | None) -> str:
    """Say which class made stratification impossible, by name, for the report."""
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    smallest = int(present[np.argmin(counts[present])])
    name = class_names[smallest] if class_names and smallest < len(class_names) else str(smallest)
    return (
        f"stratified split impossible: class {name!r} has {int(counts[smallest])} sample(s) among "
        f"{len(present)} classes, and stratifying needs at least 2 per class and validation and test "
        f"parts ({n_val} and {n_test} samples) with room for every class; used an unstratified split"
    )
