"""CSV tables read with the standard library, and the encoder that turns their columns into numbers.

pandas is not a dependency: the csv module plus NumPy cover what the tool reads (one header row,
numeric or text cells, missing values), and the encoding rules live in one small class that the
predict path reuses exactly as training fitted it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.errors import DataError
from harness.registry import closest

Kind = Literal["numeric", "categorical"]
Missing = Literal["drop", "mean", "median", "most_frequent"]

MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "?")
"""Cell texts that count as a missing value, in any mix of upper and lower case."""

DELIMITERS = (",", ";", "\t", "|")


def _case_variants(token: str) -> list[str]:
    variants = [""]
    for char in token:
        variants = [v + c for v in variants for c in {char.lower(), char.upper()}]
    return variants


MISSING_VARIANTS = np.array(sorted({v for token in MISSING_TOKENS for v in _case_variants(token)}), dtype=str)
"""Every spelling of the missing tokens: matching these is much faster than lower-casing each cell."""


@dataclass(frozen=True, eq=False)
class Table:
    """A CSV file's cells as stripped text columns, with missing-cell masks and parsed numbers.

    Masks and numbers are computed once when the file is read; `lines` keeps file line numbers
    so messages can point at a row even after rows were dropped or split.
    """

    path: Path
    columns: dict[str, np.ndarray]
    lines: np.ndarray
    blanks: dict[str, np.ndarray]
    parsed: dict[str, np.ndarray | None]

    @classmethod
    def from_columns(cls, path: Path, columns: dict[str, np.ndarray], lines: np.ndarray) -> Table:
        blanks = {name: np.isin(values, MISSING_VARIANTS) for name, values in columns.items()}
        parsed = {name: _parse_numbers(values, blanks[name]) for name, values in columns.items()}
        return cls(path, columns, lines, blanks, parsed)

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, rows: np.ndarray) -> Table:
        """The table restricted to `rows` (indices or a boolean mask), line numbers kept."""
        return Table(
            self.path,
            {k: v[rows] for k, v in self.columns.items()},
            self.lines[rows],
            {k: v[rows] for k, v in self.blanks.items()},
            {k: None if v is None else v[rows] for k, v in self.parsed.items()},
        )

    def missing(self, name: str) -> np.ndarray:
        """Boolean mask of the cells of column `name` that count as missing."""
        return self.blanks[name]

    def numbers(self, name: str) -> np.ndarray | None:
        """Column `name` as float64 with NaN for missing cells, or None if a cell is not a number."""
        return self.parsed[name]

    def first_non_number(self, name: str) -> tuple[int, str]:
        """Line number and text of the first present cell of `name` that is not a finite number."""
        for line, text, absent in zip(self.lines, self.columns[name], self.blanks[name], strict=True):
            if not absent and not _is_finite_number(text):
                return int(line), str(text)
        raise ValueError(f"column {name!r} holds only finite numbers")

    def column_list(self) -> str:
        return ", ".join(repr(name) for name in self.names)


def _parse_numbers(values: np.ndarray, blank: np.ndarray) -> np.ndarray | None:
    try:
        return np.where(blank, "nan", values).astype(np.float64)
    except ValueError:
        return None


def read_csv(path: Path) -> Table:
    """Read a CSV file with one header row; every problem is a DataError naming the file."""
    text = _read_text(path)
    if not text.strip():
        raise DataError(
            f"CSV file {path} is empty: it must start with a header row naming the columns, "
            "followed by one row per sample."
        )
    header, rows, lines = _parse_rows(path, text, _guess_delimiter(text))
    names = _column_names(path, header)
    if not rows:
        raise DataError(
            f"CSV file {path} has a header row but no data rows. Received columns: {', '.join(names)}"
        )
    cells = np.array(rows, dtype=str)
    columns = {name: np.char.strip(cells[:, i]) for i, name in enumerate(names)}
    return Table.from_columns(path, columns, np.array(lines, dtype=np.int64))


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"CSV file {path} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"CSV file {path} is a folder, not a file.") from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"CSV file {path} must be UTF-8 text. Received: undecodable byte at offset {err.start}"
        ) from None


def _guess_delimiter(text: str) -> str:
    """The delimiter used most in the header line; a comma when none appears (one column)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _parse_rows(path: Path, text: str, delimiter: str) -> tuple[list[str], list[list[str]], list[int]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if not record:
                continue
            if not header:
                header = record
                continue
            if len(record) != len(header):
                raise DataError(
                    f"CSV file {path}: line {reader.line_num} must have {len(header)} fields like the "
                    f"header. Received: {len(record)} fields"
                )
            rows.append(record)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise DataError(f"CSV file {path} is not valid CSV near line {reader.line_num}: {err}") from None
    return header, rows, lines


def _column_names(path: Path, header: list[str]) -> list[str]:
    names = [name.strip() or f"column_{i + 1}" for i, name in enumerate(header)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(
            f"CSV file {path} must have unique column names. "
            f"Received duplicates: {', '.join(map(repr, duplicates))}"
        )
    return names


def _is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def column_kind(table: Table, name: str) -> Kind:
    """A column is numeric when every present cell parses as a number, categorical otherwise."""
    return "numeric" if table.numbers(name) is not None else "categorical"


def missing_column_error(table: Table, key: str, missing: list[str], hint: str = "") -> DataError:
    """The error for config keys naming columns the CSV lacks, with a "did you mean" per name."""
    described = []
    for name in missing:
        match = closest(name, table.names)
        described.append(f"{name!r} (did you mean {match!r}?)" if match else repr(name))
    what = "a column" if len(missing) == 1 else "columns"
    return DataError(
        f"{key} must name {what} of CSV file {table.path}. Not found: {', '.join(described)}. "
        f"Columns in the file: {table.column_list()}.{hint}"
    )


@dataclass(frozen=True)
class Column:
    """How one CSV column becomes model inputs: a number, or a one-hot block over `categories`.

    `fill` replaces missing cells; None means missing cells are an error (data.missing=drop).
    """

    name: str
    kind: Kind
    fill: float | str | None = None
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories)

    def output_names(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name]
        return [f"{self.name}={category}" for category in self.categories]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "fill": self.fill, "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Column:
        if data["kind"] not in ("numeric", "categorical"):
            raise ValueError(f"column kind must be numeric or categorical. Received: {data['kind']!r}")
        return cls(str(data["name"]), data["kind"], data["fill"], tuple(str(c) for c in data["categories"]))


@dataclass(frozen=True)
class TableEncoder:
    """Turns named CSV columns into the numeric feature matrix, with what it learnt from training."""

    columns: tuple[Column, ...]

    @classmethod
    def fit(cls, table: Table, kinds: dict[str, Kind], missing: Missing) -> TableEncoder:
        """Learn fill values and categories from `table`, which must hold the training rows only."""
        return cls(tuple(_fit_column(table, name, kind, missing) for name, kind in kinds.items()))

    @classmethod
    def numeric(cls, names: list[str]) -> TableEncoder:
        """An encoder for array datasets with named features, so CSVs with those headers can be predicted."""
        return cls(tuple(Column(name, "numeric") for name in names))

    @property
    def feature_names(self) -> list[str]:
        return [name for column in self.columns for name in column.output_names()]

    def encode(self, table: Table) -> tuple[np.ndarray, dict[str, int]]:
        """Return the float32 feature matrix and how many cells were filled per column."""
        absent = [column.name for column in self.columns if column.name not in table.columns]
        if absent:
            raise DataError(
                f"CSV file {table.path} must have every feature column the model was trained on. "
                f"Missing: {', '.join(map(repr, absent))}. Columns in the file: {table.column_list()}."
            )
        out = np.zeros((len(table), sum(c.width for c in self.columns)), dtype=np.float32)
        filled: dict[str, int] = {}
        offset = 0
        for column in self.columns:
            count = _encode_column(table, column, out[:, offset : offset + column.width])
            if count:
                filled[column.name] = count
            offset += column.width
        return out, filled

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [column.to_dict() for column in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableEncoder:
        return cls(tuple(Column.from_dict(item) for item in data["columns"]))


def _fit_column(table: Table, name: str, kind: Kind, missing: Missing) -> Column:
    present = ~table.missing(name)
    if not present.any():
        raise DataError(
            f"column {name!r} of CSV file {table.path} must have values in the training split to learn "
            f"from. Received: all {len(table)} training rows are empty"
        )
    if kind == "categorical":
        values = table.columns[name][present]
        categories = tuple(str(v) for v in np.unique(values))
        fill = None if missing == "drop" else _most_frequent(values)
        return Column(name, kind, fill, categories)
    numbers = table.numbers(name)
    if numbers is None or not np.isfinite(numbers[present]).all():
        line, text = table.first_non_number(name)
        raise DataError(
            f"CSV file {table.path}, line {line}: column {name!r} must hold finite numbers. "
            f"Received: {text!r}"
        )
    return Column(name, kind, _numeric_fill(numbers[present], missing))


def _numeric_fill(values: np.ndarray, missing: Missing) -> float | None:
    if missing == "drop":
        return None
    if missing == "mean":
        return float(values.mean())
    if missing == "median":
        return float(np.median(values))
    return float(_most_frequent(values))


def _most_frequent(values: np.ndarray) -> Any:
    """The most common value; ties go to the smallest, so the choice is reproducible."""
    uniques, counts = np.unique(values, return_counts=True)
    best = uniques[int(np.argmax(counts))]
    return best.item() if hasattr(best, "item") else best


def _encode_column(table: Table, column: Column, out: np.ndarray) -> int:
    """Write `column`'s encoding into `out` (a view of the feature matrix); return cells filled."""
    missing = table.missing(column.name)
    if missing.any() and column.fill is None:
        line = int(table.lines[np.argmax(missing)])
        raise DataError(
            f"CSV file {table.path}, line {line}: column {column.name!r} must have a value, because the "
            "model was trained with data.missing=drop, which learns no fill value. Received: an empty cell "
            f"({int(missing.sum())} in this column)"
        )
    if column.kind == "numeric":
        _encode_numeric(table, column, missing, out)
    else:
        _encode_categorical(table, column, missing, out)
    return int(missing.sum())


def _encode_numeric(table: Table, column: Column, missing: np.ndarray, out: np.ndarray) -> None:
    numbers = table.numbers(column.name)
    if numbers is None or not np.isfinite(numbers[~missing]).all():
        line, text = table.first_non_number(column.name)
        raise DataError(
            f"CSV file {table.path}, line {line}: column {column.name!r} must hold finite numbers, as it "
            f"did in training. Received: {text!r}"
        )
    if missing.any() and isinstance(column.fill, float | int):
        numbers = np.where(missing, column.fill, numbers)
    out[:, 0] = numbers


def _encode_categorical(table: Table, column: Column, missing: np.ndarray, out: np.ndarray) -> None:
    """One-hot over the categories seen in training; an unseen category encodes as all zeros."""
    values = np.where(missing, str(column.fill), table.columns[column.name])
    categories = np.array(column.categories, dtype=str)
    position = np.clip(np.searchsorted(categories, values), 0, len(categories) - 1)
    known = categories[position] == values
    out[np.flatnonzero(known), position[known]] = 1.0
