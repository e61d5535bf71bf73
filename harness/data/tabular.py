"""The `csv` dataset: one row per sample, a target column, numeric and categorical features.

Only row selection happens here (rows without a target, and with data.missing=drop rows with
an empty feature). Fill values and categories are learnt after the split, from training rows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from harness.config.schema import DataConfig
from harness.data.raw import RawData, resolve_data_path
from harness.data.registry import DATASETS
from harness.data.split import check_enough_rows
from harness.data.table import (
    LINE_NUMBERS,
    Kind,
    Table,
    column_kind,
    decimal_comma_cells,
    missing_column_error,
    read_csv,
    stray_cells,
)
from harness.errors import DataError


@DATASETS.register("csv")
def load_csv(cfg: DataConfig, seed: int, base_dir: Path) -> RawData:
    """Read data.path; data.target is the label or target column, data.features the inputs."""
    path = resolve_data_path(cfg, base_dir, "CSV file")
    table = read_csv(path)
    target = target_column(cfg, table)
    features = feature_columns(cfg, table, target)
    categorical = categorical_columns(cfg, table, features)
    numeric = [name for name in (target, *features) if name not in categorical]
    if cfg.task == "classification":
        numeric.remove(target)  # class labels may be any text
    table, coerced = check_numbers(table, numeric, target, cfg.coerce_numeric)
    table, notes = drop_rows(table, target, features, cfg)
    if coerced:
        notes["coerced_to_missing"] = coerced
    if table.dropped_index:
        notes["index_column_dropped"] = table.dropped_index
    detail = _drop_detail(notes)
    check_enough_rows(len(table), cfg.validation_split, cfg.test_split, f"CSV file {path}", detail)
    kinds: dict[str, Kind] = {
        name: "categorical" if name in categorical else column_kind(table, name) for name in features
    }
    notes["categorical_columns"] = [name for name, kind in kinds.items() if kind == "categorical"]
    numbers = table.numbers(target)
    return RawData(
        source=f"CSV file {path}",
        y=table.columns[target] if numbers is None else numbers,
        target_name=target,
        table=table,
        column_kinds=kinds,
        notes=notes,
    )


def target_column(cfg: DataConfig, table: Table) -> str:
    if not cfg.target:
        raise DataError(
            f"data.target must name the target column of CSV file {table.path}. Received: data.target=None. "
            f"Columns in the file: {table.column_list()}."
        )
    if cfg.target not in table.columns:
        raise missing_column_error(table, "data.target", [cfg.target])
    return cfg.target


def feature_columns(cfg: DataConfig, table: Table, target: str) -> list[str]:
    """data.features in the given order, or every column but the target in file order."""
    if cfg.features is None:
        features = [name for name in table.names if name != target]
    else:
        features = list(cfg.features)
        absent = [name for name in features if name not in table.columns]
        if absent:
            raise missing_column_error(table, "data.features", absent)
        if target in features:
            raise DataError(
                f"data.features must not include the target column of CSV file {table.path}. "
                f"Received: data.features={features} with data.target={target!r}"
            )
        if len(set(features)) != len(features):
            raise DataError(f"data.features must not repeat a column. Received: data.features={features}")
    if not features:
        raise DataError(
            f"CSV file {table.path} must have at least one feature column besides the target {target!r}. "
            f"Columns in the file: {table.column_list()}."
        )
    return features


def categorical_columns(cfg: DataConfig, table: Table, features: list[str]) -> list[str]:
    """data.categorical, checked to name feature columns; text columns are categorical regardless."""
    forced = list(cfg.categorical or [])
    absent = [name for name in forced if name not in table.columns]
    if absent:
        raise missing_column_error(table, "data.categorical", absent)
    outside = [name for name in forced if name not in features]
    if outside:
        raise DataError(
            f"data.categorical must list feature columns of CSV file {table.path}. "
            f"Received: {', '.join(map(repr, outside))}, not in the features {features}"
        )
    return forced


LISTED_COLUMNS = 5
"""Messages about bad cells describe at most this many columns."""


def check_numbers(
    table: Table, columns: list[str], target: str, coerce: bool
) -> tuple[Table, dict[str, int]]:
    """Refuse numeric columns with a few cells that are not numbers, or with `coerce` blank them out.

    Read as they are, such columns would silently become categorical, every distinct number a
    category. With data.coerce_numeric the cells become missing values (data.missing then applies)
    and a warning lists them. Returns the table and the number of cells blanked per column.
    """
    _refuse_decimal_commas(table, columns)
    stray = {name: cells for name in columns if (cells := stray_cells(table, name)).any()}
    if not stray:
        return table, {}
    described = _describe_stray(table, stray)
    if not coerce:
        hint = (
            f", or set data.task=classification if the target {target!r} holds class labels"
            if target in stray
            else ""
        )
        raise DataError(
            f"CSV file {table.path}: mostly numeric columns must hold only numbers. Received: {described} "
            f"({LINE_NUMBERS}). Correct those cells, set data.coerce_numeric=true to read them as missing "
            "values (data.missing then applies), or list the column in data.categorical to treat it as "
            f"text{hint}."
        )
    for name, cells in stray.items():
        table = table.with_missing(name, cells)
    print(
        f"warning: CSV file {table.path}: data.coerce_numeric=true reads cells that are not numbers as "
        f"missing values: {described} ({LINE_NUMBERS})",
        file=sys.stderr,
        flush=True,
    )
    return table, {name: int(cells.sum()) for name, cells in stray.items()}


def _describe_stray(table: Table, stray: dict[str, np.ndarray]) -> str:
    parts = []
    for name, cells in list(stray.items())[:LISTED_COLUMNS]:
        present = int((~table.missing(name)).sum())
        parts.append(
            f"column {name!r} has {present - int(cells.sum())} numbers among its {present} values but "
            f"{int(cells.sum())} other cells: {table.describe_cells(name, cells)}"
        )
    more = len(stray) - LISTED_COLUMNS
    return "; ".join(parts) + (f"; and {more} more columns" if more > 0 else "")


def _refuse_decimal_commas(table: Table, columns: list[str]) -> None:
    for name in columns:
        cells = decimal_comma_cells(table, name)
        if cells.any():
            raise DataError(
                f"CSV file {table.path}: column {name!r} must hold numbers written with a decimal point. "
                f"Received numbers with a decimal comma or a thousands separator: "
                f"{table.describe_cells(name, cells)} ({LINE_NUMBERS}). Write them as 1.5 and 1234, or "
                "list the column in data.categorical to treat it as text."
            )


def drop_rows(
    table: Table, target: str, features: list[str], cfg: DataConfig
) -> tuple[Table, dict[str, Any]]:
    """Drop rows without a target always, and rows with an empty feature when data.missing=drop."""
    no_target = table.missing(target)
    has_target = ~no_target
    per_column = {name: int((table.missing(name) & has_target).sum()) for name in features}
    incomplete = np.zeros(len(table), dtype=bool)
    for name in features:
        incomplete |= table.missing(name)
    keep = has_target & ~incomplete if cfg.missing == "drop" else has_target
    notes: dict[str, Any] = {
        "rows_read": len(table),
        "rows_used": int(keep.sum()),
        "rows_dropped": int(len(table) - keep.sum()),
        "rows_dropped_missing_target": int(no_target.sum()),
        "missing": cfg.missing,
        "missing_values": {name: count for name, count in per_column.items() if count},
    }
    if cfg.missing == "drop":
        notes["rows_dropped_missing_features"] = int((has_target & incomplete).sum())
    return table.take(keep), notes


def _drop_detail(notes: dict[str, Any]) -> str:
    """Which columns emptied the table, for the not-enough-rows message."""
    if not notes["rows_dropped"]:
        return ""
    worst = sorted(notes["missing_values"].items(), key=lambda item: -item[1])[:3]
    columns = ", ".join(f"{name!r}: {count}" for name, count in worst)
    where = f"; missing cells (empty or a marker such as NA) per column: {columns}" if columns else ""
    hint = ". Fill them, leave such columns out of data.features, or set data.missing=mean" if columns else ""
    return (
        f" ({notes['rows_dropped']} of {notes['rows_read']} rows dropped: "
        f"{notes['rows_dropped_missing_target']} without a target{where}){hint}"
    )
