"""New rows for `harness predict`: identifiers, unseen categories and missing values.

Training fixed the feature columns, their categories and their fill values. New data breaks
those assumptions in ways a researcher needs to hear about: a category the model never saw, a
row with an empty cell, a column that is gone. Each is reported or refused here, by rule rather
than smoothed over, and every output row carries an identifier so predictions can be joined back
to their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from harness.data.table import LINE_NUMBERS, Column, Table, TableEncoder, cell_text, name_list
from harness.errors import DataError
from harness.registry import closest

MissingPolicy = Literal["impute", "skip", "error"]
MISSING_POLICIES: tuple[MissingPolicy, ...] = ("impute", "skip", "error")

ROW_ID = "row"
"""The identifier column of table predictions without --id-column: the 1-based data row number."""
INDEX_ID = "index"
"""The identifier column of NPZ/NPY predictions: the 0-based index in the array."""
FILE_ID = "file"
"""The identifier column of image predictions: the path relative to the input folder."""

LISTED_ROWS = 5
"""Messages name at most this many rows; a file can have millions."""
LISTED_VALUES = 5
"""Messages quote at most this many distinct values per column."""

ROW_NUMBERS = "numbered as the `row` column of the predictions: the first row after the header is row 1"


@dataclass(frozen=True)
class PredictOptions:
    """What `harness predict` does with new rows that do not fit the training data.

    `missing` None means as trained: impute when training imputed (data.missing other than drop),
    refuse otherwise, since the model never saw a filled value.
    """

    missing: MissingPolicy | None = None
    strict: bool = False
    id_column: str | None = None


@dataclass(frozen=True)
class NewRows:
    """Raw inputs to predict, and what to write beside each prediction.

    `x` holds the predicted rows only; `predicted` marks, per input row, whether it is in `x`
    (rows with missing values under --missing skip are not). `ids` has one entry per input row.
    """

    x: np.ndarray
    id_name: str
    ids: list[str]
    predicted: np.ndarray
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def every_row(cls, x: np.ndarray, id_name: str, ids: list[str]) -> NewRows:
        return cls(x, id_name, ids, np.ones(len(ids), dtype=bool))


def fills_from_table(table: Table, encoder: TableEncoder) -> dict[str, float | str]:
    """Per column of `encoder`, the training rows' median (numbers) or most frequent value (text)."""
    fills: dict[str, float | str] = {}
    for column in encoder.columns:
        present = ~table.missing(column.name)
        if not present.any():
            continue
        numbers = table.numbers(column.name)
        if column.kind == "numeric" and numbers is not None:
            fills[column.name] = float(np.median(numbers[present]))
        else:
            fills[column.name] = _most_frequent(table.columns[column.name][present])
    return fills


def fills_from_array(x: np.ndarray, encoder: TableEncoder) -> dict[str, float | str]:
    """The per-column median of named numeric training features (NPZ and built-in tables)."""
    if x.ndim != 2 or x.shape[1] != len(encoder.columns) or not len(x):
        return {}
    medians = np.median(np.asarray(x, np.float64), axis=0)
    return {column.name: float(m) for column, m in zip(encoder.columns, medians, strict=True)}


def _most_frequent(values: np.ndarray) -> str:
    """The most common value; ties go to the smallest, as training's most_frequent does."""
    uniques, counts = np.unique(values, return_counts=True)
    return str(uniques[int(np.argmax(counts))])


def table_rows(
    table: Table,
    encoder: TableEncoder,
    options: PredictOptions,
    fills: dict[str, float | str] | None,
    target_column: str | None,
) -> NewRows:
    """Encode `table` for predicting: the raw feature matrix of the predicted rows, with ids and notes."""
    id_name, ids = _table_ids(table, options.id_column)
    check_feature_columns(table, encoder)
    notes = _unused_columns(table, encoder, target_column, options.id_column)
    if options.id_column in {column.name for column in encoder.columns}:
        notes.append(
            f"--id-column {options.id_column!r} is also a feature the model was trained on; it stays one, as "
            "in training (choose a column the model does not use to identify rows by a plain id)"
        )
    warnings = _unseen_categories(table, encoder, options.strict)
    incomplete = _incomplete_rows(table, encoder)
    keep = np.ones(len(table), dtype=bool)
    if incomplete.any():
        policy = options.missing or ("impute" if all(c.fill is not None for c in encoder.columns) else "error")
        if policy == "error":
            raise _missing_error(table, encoder, incomplete, options.missing is None)
        if policy == "skip":
            keep = ~incomplete
            notes.append(
                f"{_some_rows_have(int(incomplete.sum()), len(table))} missing feature values and were not "
                f"predicted (--missing skip; their prediction cells are left empty): "
                f"{_row_list(table, np.flatnonzero(incomplete))}"
            )
        else:
            encoder = _imputing(table, encoder, fills)
            notes.append(_imputed_note(table, encoder, incomplete))
    x, _ = encoder.encode(table.take(keep))
    return NewRows(x, id_name, ids, keep, notes, warnings)


def _table_ids(table: Table, id_column: str | None) -> tuple[str, list[str]]:
    if id_column is None:
        return ROW_ID, [str(i + 1) for i in range(len(table))]
    if id_column not in table.columns:
        match = closest(id_column, table.names)
        hint = f" (did you mean {match!r}?)" if match else ""
        raise DataError(
            f"--id-column must name a column of CSV file {table.path}. Received: {id_column!r}{hint}. "
            f"Columns in the file: {table.column_list()}."
        )
    return id_column, [str(v) for v in table.columns[id_column]]


def check_feature_columns(table: Table, encoder: TableEncoder) -> None:
    """Every feature column the model was trained on must be in the file; name the ones that are not."""
    absent = [column.name for column in encoder.columns if column.name not in table.columns]
    if not absent:
        return
    others = [name for name in table.names if name not in {c.name for c in encoder.columns}]
    described = []
    for name in absent:
        match = closest(name, others)
        described.append(f"{name!r} (did you mean {match!r}?)" if match else repr(name))
    raise DataError(
        f"CSV file {table.path} must have every feature column the model was trained on. Missing "
        f"{len(absent)}: {', '.join(described)}. Columns in the file: {table.column_list()}."
    )


def _unused_columns(
    table: Table, encoder: TableEncoder, target_column: str | None, id_column: str | None
) -> list[str]:
    features = {column.name for column in encoder.columns}
    unused = [name for name in table.names if name not in features and name != id_column]
    if not unused:
        return []
    described = [f"{name!r} (the training target)" if name == target_column else repr(name) for name in unused]
    listed = ", ".join(described[:LISTED_VALUES]) + (
        f" and {len(described) - LISTED_VALUES} more" if len(described) > LISTED_VALUES else ""
    )
    what = "1 column" if len(unused) == 1 else f"{len(unused)} columns"
    verb = "is" if len(unused) == 1 else "are"
    return [f"CSV file {table.path}: {what} the model does not use {verb} ignored: {listed}"]


def _unseen_categories(table: Table, encoder: TableEncoder, strict: bool) -> list[str]:
    """One line per categorical column holding values training never saw; with `strict`, an error."""
    found = []
    for column in encoder.columns:
        if column.kind != "categorical":
            continue
        present = ~table.missing(column.name)
        values = table.columns[column.name]
        unseen = present & ~np.isin(values, np.array(column.categories, dtype=str))
        if unseen.any():
            found.append(_describe_unseen(column, values[unseen]))
    if not found:
        return []
    if strict:
        raise DataError(
            f"CSV file {table.path} has category values the model never saw in training, refused by "
            f"--strict. {'. '.join(found)}. Correct them to a known value, leave those rows out, or "
            "drop --strict to predict them as unknown categories (an all-zero one-hot block)."
        )
    return [
        f"CSV file {table.path}: {line}. Predicted as an unknown category (an all-zero one-hot block; "
        "--strict refuses such files)"
        for line in found
    ]


def _describe_unseen(column: Column, values: np.ndarray) -> str:
    """`column 'island' has 3 rows with 2 values not seen in training: 'Anvers' (2 rows), ...`."""
    uniques, counts = np.unique(values, return_counts=True)
    order = np.lexsort((uniques, -counts))
    listed = []
    for i in order[:LISTED_VALUES]:
        value = str(uniques[i])
        match = _known_spelling(value, column.categories)
        hint = f", did you mean {match!r}?" if match else ""
        listed.append(f"{cell_text(value)} ({_rows(int(counts[i]))}{hint})")
    more = len(uniques) - LISTED_VALUES
    known = name_list(list(column.categories))
    return (
        f"column {column.name!r} has {_rows(len(values))} with {len(uniques)} value"
        f"{'s' if len(uniques) > 1 else ''} not seen in training: {', '.join(listed)}"
        f"{f' and {more} more' if more > 0 else ''}; known values: {known}"
    )


def _known_spelling(value: str, categories: tuple[str, ...]) -> str | None:
    """The known category `value` most likely means: the same up to case, else a close spelling."""
    same_case = [c for c in categories if c.lower() == value.lower()]
    return same_case[0] if same_case else closest(value, list(categories))


def _incomplete_rows(table: Table, encoder: TableEncoder) -> np.ndarray:
    incomplete = np.zeros(len(table), dtype=bool)
    for column in encoder.columns:
        incomplete |= table.missing(column.name)
    return incomplete


def _missing_error(table: Table, encoder: TableEncoder, incomplete: np.ndarray, by_default: bool) -> DataError:
    """Name the rows (as the `row` column numbers them) and, per column, the lines and what the cells hold."""
    columns = [
        f"column {column.name!r}: {table.describe_cells(column.name, table.missing(column.name))}"
        for column in encoder.columns
        if table.missing(column.name).any()
    ]
    why = (
        "The model was trained with data.missing=drop, so it never saw a filled value: "
        if by_default
        else "--missing error refuses them: "
    )
    return DataError(
        f"CSV file {table.path}: {_some_rows_have(int(incomplete.sum()), len(table))} missing feature values, "
        f"{_row_list(table, np.flatnonzero(incomplete))}. {'; '.join(columns)} ({LINE_NUMBERS}). {why}fill "
        "those cells, or rerun with --missing impute (the training split's median or most frequent value) "
        "or --missing skip (predict the other rows, leave these empty)."
    )


def _imputing(table: Table, encoder: TableEncoder, fills: dict[str, float | str] | None) -> TableEncoder:
    """`encoder` with a fill value for every column that has missing cells in `table`."""
    columns = []
    for column in encoder.columns:
        if column.fill is None and table.missing(column.name).any():
            fill = (fills or {}).get(column.name)
            if fill is None:
                raise DataError(
                    f"CSV file {table.path}: column {column.name!r} has missing values and --missing impute "
                    "needs the training split's statistics, which this run's preprocessing.json does not "
                    "record (it was written by an older harness version, or the column never had a value "
                    "in training). Use --missing skip, fill the cells, or train the run again."
                )
            column = replace(column, fill=fill if column.kind == "categorical" else float(fill))
        columns.append(column)
    return TableEncoder(tuple(columns))


def _imputed_note(table: Table, encoder: TableEncoder, incomplete: np.ndarray) -> str:
    parts = []
    for column in encoder.columns:
        count = int(table.missing(column.name).sum())
        if count:
            fill = f"{column.fill:.6g}" if isinstance(column.fill, float) else repr(column.fill)
            parts.append(f"{column.name!r}: {count} with {fill}")
    return (
        f"{_some_rows_have(int(incomplete.sum()), len(table))} missing feature values, filled with the "
        f"training split's values (--missing impute): {'; '.join(parts)}"
    )


def _row_list(table: Table, rows: np.ndarray) -> str:
    listed = ", ".join(str(int(i) + 1) for i in rows[:LISTED_ROWS])
    more = len(rows) - LISTED_ROWS
    return f"rows {listed}{f' and {more} more' if more > 0 else ''} ({ROW_NUMBERS})"


def _some_rows_have(count: int, total: int) -> str:
    return f"{count} of {total} row{'s' if total != 1 else ''} {'has' if count == 1 else 'have'}"


def _rows(count: int) -> str:
    return f"{count} row{'s' if count != 1 else ''}"
