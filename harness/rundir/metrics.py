"""metrics.jsonl: one JSON object per epoch, appended by the chief as the run goes.

Every reader (training on resume, reports, `harness status`) goes through `read_metrics`, so a
damaged file is handled one way everywhere:
- a last line without its newline that is not a whole record is a write cut short (a run killed
  mid-write, or one still writing while status reads): it is left out without a warning;
- any other line that is not a JSON object with a whole-number `epoch` is left out with one
  warning for the whole file, naming the file and each line (`path:line`, as editors link them).
Only the writer changes the file: before it appends, a cut-short last line is removed (with a
RunDirWarning saying so), since appending to it would merge it with the next line and lose both.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from harness import atomic
from harness.errors import RunDirError
from harness.rundir.layout import RunDirWarning

MetricsLine = dict[str, Any]
"""One epoch's record; always holds a whole-number `epoch`, the rest is what training logged."""

SHOWN_BAD_LINES = 5


def read_metrics(path: Path) -> list[MetricsLine]:
    """The epoch lines of metrics.jsonl in file order; [] if there is no file (see the module doc)."""
    records, bad = _parse(path)
    if bad:
        warnings.warn(_bad_lines_message(path, bad), stacklevel=2)
    return records


def last_metrics(path: Path) -> MetricsLine | None:
    """The last epoch line, or None if there is none yet."""
    records = read_metrics(path)
    return records[-1] if records else None


def _bad_lines_message(path: Path, bad: list[tuple[int, str]]) -> str:
    number, why = bad[0]
    if len(bad) == 1:
        return f"{path}:{number}: skipping a line that is {why}"
    shown = ", ".join(f"{number} ({why})" for number, why in bad[:SHOWN_BAD_LINES])
    more = f" and {len(bad) - SHOWN_BAD_LINES} more" if len(bad) > SHOWN_BAD_LINES else ""
    return f"{path}:{number}: skipping {len(bad)} lines that are not epoch records: lines {shown}{more}"


def _parse(path: Path) -> tuple[list[MetricsLine], list[tuple[int, str]]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as err:
        raise RunDirError(f"cannot read {path}: {err.strerror or err}") from None
    lines = data.decode("utf-8", errors="replace").split("\n")
    records: list[MetricsLine] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record, why = parse_line(raw)
        if record is not None:
            records.append(record)
        elif number != len(lines):  # the last piece has no newline: a write cut short
            bad.append((number, why))
    return records, bad


def parse_line(raw: str) -> tuple[MetricsLine | None, str]:
    """(the record, "") for an epoch line, else (None, why it is not one)."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None, "not JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    epoch = record.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return None, "a JSON object without a whole-number epoch"
    return record, ""


def end_with_complete_line(path: Path) -> None:
    """Before appending: a last line without its newline is finished if whole, cut if partial."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
    start = data.rfind(b"\n") + 1
    tail = data[start:].decode("utf-8", errors="replace")
    if parse_line(tail)[0] is not None:
        atomic.append_text(path, "\n")
        return
    number = data.count(b"\n") + 1
    warnings.warn(
        RunDirWarning(f"{path}: line {number} was cut short by a crash; removed it: {tail[:200]!r}"), stacklevel=2
    )
    atomic.write_bytes(path, data[:start])


def append_metrics(path: Path, record: MetricsLine) -> None:
    """Append one epoch's line, after making sure the file ends with a whole line."""
    end_with_complete_line(path)
    atomic.append_text(path, json.dumps(record) + "\n")


def metrics_until(path: Path, epoch: int) -> list[MetricsLine]:
    """Epochs 1..epoch; the file is rewritten to hold exactly them (on resume from a checkpoint).

    Later lines (written after the checkpoint) and damaged ones go, after the warnings above, so
    the file the run appends to holds only whole lines.
    """
    end_with_complete_line(path)
    kept = [line for line in read_metrics(path) if int(line["epoch"]) <= epoch]
    text = "".join(json.dumps(line) + "\n" for line in kept)
    if path.is_file() and path.read_bytes() != text.encode("utf-8"):
        atomic.write_text(path, text)
    return kept
