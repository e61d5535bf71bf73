"""CSV tables read with the standard library, and the encoder that turns their columns into numbers.

pandas is not a dependency: the csv module plus NumPy cover what the tool reads (one header row,
numeric or text cells, missing values), and the encoding rules live in one small class that the
predict path reuses exactly as training fitted it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
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

MOSTLY_NUMERIC = 0.8
"""A column with at least this share of its present cells finite numbers is a numeric column with a
few bad cells (a typo, stray text), not a text column: one-hot encoding it would silently turn every
distinct number into a category of its own."""

LISTED_CELLS = 5
"""Messages quote at most this many cells; a column can hold millions."""

CELL_CHARS = 40
"""Messages quote at most this many characters of a cell."""

LINE_NUMBERS = "line numbers as an editor shows them, the header being line 1"


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

    Masks and numbers are computed once when the file is read; `lines` keeps the file line
    each row starts on (as an editor numbers them, the header being line 1), so messages can point
    at a row even after rows were dropped or split.
    """

    path: Path
    columns: dict[str, np.ndarray]
    lines: np.ndarray
    blanks: dict[str, np.ndarray]
    parsed: dict[str, np.ndarray | None]
    dropped_index: str | None = None
    """The note on an unnamed index column `read_csv` left out (pandas or R wrote it), else None."""

    @classmethod
    def from_columns(
        cls, path: Path, columns: dict[str, np.ndarray], lines: np.ndarray, dropped_index: str | None = None
    ) -> Table:
        blanks = {name: np.isin(values, MISSING_VARIANTS) for name, values in columns.items()}
        parsed = {name: _parse_numbers(values, blanks[name]) for name, values in columns.items()}
        return cls(path, columns, lines, blanks, parsed, dropped_index)

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
            self.dropped_index,
        )

    def missing(self, name: str) -> np.ndarray:
        """Boolean mask of the cells of column `name` that count as missing."""
        return self.blanks[name]

    def numbers(self, name: str) -> np.ndarray | None:
        """Column `name` as float64 with NaN for missing cells, or None if a cell is not a number."""
        return self.parsed[name]

    def non_numbers(self, name: str) -> np.ndarray:
        """Mask of the present cells of column `name` that are not finite numbers (`abc`, `1.2.3`, `inf`).

        Text columns are parsed per distinct value, so a categorical column of a million rows costs
        as many parses as it has categories.
        """
        present = ~self.blanks[name]
        parsed = self.parsed[name]
        if parsed is not None:
            return np.asarray(present & ~np.isfinite(parsed))
        uniques, inverse = np.unique(self.columns[name], return_inverse=True)
        finite = np.array([_is_finite_number(str(text)) for text in uniques], dtype=bool)
        return np.asarray(present & ~finite[inverse.reshape(-1)])

    def with_missing(self, name: str, cells: np.ndarray) -> Table:
        """The table with the `cells` (a mask) of column `name` counted as missing values."""
        blanks = {**self.blanks, name: self.blanks[name] | cells}
        parsed = {**self.parsed, name: _parse_numbers(self.columns[name], blanks[name])}
        return Table(self.path, self.columns, self.lines, blanks, parsed, self.dropped_index)

    def describe_cells(self, name: str, cells: np.ndarray) -> str:
        """`line 5: 'abc', line 9: '1.2.3' and 4 more`: the first few `cells` (a mask) of column `name`."""
        where = np.flatnonzero(cells)
        listed = ", ".join(
            f"line {int(self.lines[i])}: {cell_text(str(self.columns[name][i]))}" for i in where[:LISTED_CELLS]
        )
        more = len(where) - LISTED_CELLS
        return listed + (f" and {more} more" if more > 0 else "")

    def describe_missing(self, name: str, cells: np.ndarray) -> str:
        """`'NA' in 3 rows, an empty cell in 1 row`: the distinct texts of missing `cells`, most common first."""
        texts, counts = np.unique(self.columns[name][cells], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:LISTED_CELLS]
        parts = [f"{cell_text(str(texts[i]))} in {int(counts[i])} row{'s' if counts[i] != 1 else ''}" for i in order]
        more = len(texts) - LISTED_CELLS
        return ", ".join(parts) + (f" and {more} more texts" if more > 0 else "")

    def column_list(self) -> str:
        return name_list(self.names)


LISTED_NAMES = 30
"""Messages list at most this many column names; a wide file can have thousands."""


def name_list(names: list[str]) -> str:
    """`'a', 'b' and 12 more`: the first few names, each cut short, for a message."""
    listed = ", ".join(cell_text(name) for name in names[:LISTED_NAMES])
    more = len(names) - LISTED_NAMES
    return listed + (f" and {more} more" if more > 0 else "")


def cell_text(text: str) -> str:
    """A cell as a message quotes it: in quotes, cut short, and named for what it is when it is missing."""
    if not text:
        return "an empty cell"
    quoted = repr(text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "...")
    return f"{quoted} (a missing-value marker)" if np.isin(text, MISSING_VARIANTS) else quoted


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
            f"CSV file {path} has a header row but no data rows. Received columns: {name_list(names)}"
        )
    cells = np.array(rows, dtype=str)
    columns = {name: np.char.strip(cells[:, i]) for i, name in enumerate(names)}
    note = _drop_index_column(path, header, columns)
    return Table.from_columns(path, columns, np.array(lines, dtype=np.int64), note)


UNNAMED = re.compile(r"(Unnamed: \d+)?")
"""Headers of an index column: empty (pandas `to_csv`, R `write.csv`) or pandas' `Unnamed: 0` on re-save."""


def index_column(header: list[str], columns: dict[str, np.ndarray]) -> str | None:
    """The name of a leading unnamed column holding a row index, or None.

    pandas `to_csv` and R `write.csv` write the row index as a first column with an empty header
    (pandas names it `Unnamed: 0` when such a file is read and saved again). Used as a feature it
    is the row number, which leaks the label of a sorted file. It is recognised by its unnamed
    header and values that are a row numbering: distinct non-negative integers that are 0..n-1 or
    1..n in any order, or increasing (an index with the gaps of a filtered frame).
    """
    if len(columns) < 2 or not header or not UNNAMED.fullmatch(header[0].strip()):
        return None
    name = next(iter(columns))
    values = columns[name]
    if not bool(np.char.isdigit(values).all()) or int(np.char.str_len(values).max()) > 18:
        return None
    numbers = values.astype(np.int64)
    ordered = np.sort(numbers)
    numbering = bool((ordered == np.arange(len(numbers))).all() or (ordered == np.arange(1, len(numbers) + 1)).all())
    increasing = bool((np.diff(numbers) > 0).all())
    return name if numbering or increasing else None


def _drop_index_column(path: Path, header: list[str], columns: dict[str, np.ndarray]) -> str | None:
    """Remove an unnamed index column (`index_column`) from `columns`; return the note printed about it."""
    name = index_column(header, columns)
    if name is None:
        return None
    numbers = columns.pop(name).astype(np.int64)
    shown = f"header {header[0].strip()!r}" if header[0].strip() else "an empty header"
    note = (
        f"CSV file {path}: left out the first column ({shown}, values {numbers.min()}..{numbers.max()}): "
        "a row index written by pandas or R, not a feature. Write files with to_csv(index=False) "
        "or write.csv(row.names = FALSE), or give the column a header to keep it"
    )
    print(f"note: {note}", file=sys.stderr, flush=True)
    return note


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
    ended = 0  # the line the previous record ended on: a quoted cell can span lines
    try:
        for record in reader:
            start, ended = ended + 1, reader.line_num
            if not record:
                continue
            if not header:
                header = record
                continue
            if len(record) != len(header):
                raise DataError(
                    f"CSV file {path}: line {start} must have {len(header)} fields like the "
                    f"header. Received: {len(record)} fields"
                )
            rows.append(record)
            lines.append(start)
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


def stray_cells(table: Table, name: str) -> np.ndarray:
    """Mask of the cells keeping a mostly numeric column from being numbers; all False otherwise.

    A column is text (categorical) rather than numbers with stray cells when fewer than
    MOSTLY_NUMERIC of its present cells are finite numbers.
    """
    bad = table.non_numbers(name)
    present = int((~table.missing(name)).sum())
    if table.numbers(name) is None and bad.sum() > (1 - MOSTLY_NUMERIC) * present:
        return np.zeros(len(table), dtype=bool)
    return bad


def decimal_comma_cells(table: Table, name: str) -> np.ndarray:
    """Mask of the cells of a text column that are numbers written with a decimal comma (`1,5`).

    Such a column would otherwise be read as text, every distinct number a category of its own;
    all False unless at least MOSTLY_NUMERIC of the present cells read as numbers that way.
    """
    none = np.zeros(len(table), dtype=bool)
    if table.numbers(name) is not None:
        return none
    present = ~table.missing(name)
    values = table.columns[name]
    with_comma = np.char.find(values, ",") >= 0
    uniques, inverse = np.unique(np.char.replace(values, ",", "."), return_inverse=True)
    finite = np.array([_is_finite_number(str(text)) for text in uniques], dtype=bool)[inverse.reshape(-1)]
    cells = present & finite & with_comma
    return cells if cells.any() and (present & finite).sum() >= MOSTLY_NUMERIC * present.sum() else none


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
            f"from. Received: all {len(table)} training rows are missing it: "
            f"{table.describe_missing(name, ~present)} (missing-value markers: an empty cell or "
            f"{', '.join(repr(token) for token in MISSING_TOKENS if token)}, in any case)"
        )
    if kind == "categorical":
        values = table.columns[name][present]
        categories = tuple(str(v) for v in np.unique(values))
        fill = None if missing == "drop" else _most_frequent(values)
        return Column(name, kind, fill, categories)
    numbers = table.numbers(name)
    bad = table.non_numbers(name)
    if numbers is None or bad.any():
        raise DataError(
            f"CSV file {table.path}: column {name!r} must hold finite numbers. Received {int(bad.sum())} "
            f"other cells: {table.describe_cells(name, bad)} ({LINE_NUMBERS})"
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
        raise DataError(
            f"CSV file {table.path}: column {column.name!r} must have a value in every row, because the "
            "model was trained with data.missing=drop, which learns no fill value. Received "
            f"{int(missing.sum())} missing: {table.describe_cells(column.name, missing)} ({LINE_NUMBERS})"
        )
    if column.kind == "numeric":
        _encode_numeric(table, column, missing, out)
    else:
        _encode_categorical(table, column, missing, out)
    return int(missing.sum())


def _encode_numeric(table: Table, column: Column, missing: np.ndarray, out: np.ndarray) -> None:
    numbers = table.numbers(column.name)
    bad = table.non_numbers(column.name)
    if numbers is None or bad.any():
        raise DataError(
            f"CSV file {table.path}: column {column.name!r} must hold finite numbers, as it did in "
            f"training. Received {int(bad.sum())} other cells: {table.describe_cells(column.name, bad)} "
            f"({LINE_NUMBERS})"
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
