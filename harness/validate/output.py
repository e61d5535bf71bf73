"""The report for people: a table on the terminal and a self-contained HTML page.

Both are built from the `ValidationReport` alone (plus the history files for drift), so a
partition run renders exactly like a local one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import IO, Any

from harness.validate.aggregate import ValidationReport
from harness.validate.references import format_value
from harness.validate.results import Measurement, NodeResult
from harness.validate.verdict import Verdict

STYLES = {Verdict.PASS: "green", Verdict.WARN: "yellow", Verdict.FAIL: "bold red", Verdict.ERROR: "bold magenta",
          Verdict.SKIPPED: "dim"}
HISTORY_ROWS = 10
EXIT_MEANING = {0: "every node passed", 1: "some node failed", 3: "nothing could be validated"}


def print_table(report: ValidationReport, file: IO[str]) -> None:
    """One row per check and node, then one verdict line per node."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, width=max(120, Console(file=file).width), highlight=False)
    table = Table(title="harness validate", show_lines=False)
    for column in ("node", "check", "verdict", "time", "message"):
        table.add_column(column, overflow="fold", no_wrap=column != "message")
    for node in report.nodes:
        for check in node.checks:
            table.add_row(node.node, check.name, f"[{STYLES[check.verdict]}]{check.verdict.value}[/]",
                          f"{check.duration_s:.1f}s", _escape(check.message))
    console.print(table)
    for node in report.nodes:
        console.print(f"node {_escape(node.node)}: [{STYLES[node.verdict]}]{node.verdict.value}[/]  ({_counts(node)})")
    console.print(f"exit code {report.exit_code}: {EXIT_MEANING[report.exit_code]}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _counts(node: NodeResult) -> str:
    counts = {v: sum(1 for c in node.checks if c.verdict is v) for v in Verdict}
    return ", ".join(f"{n} {v.value}" for v, n in counts.items() if n)


# --- HTML --------------------------------------------------------------------------------------


def render_html(report: ValidationReport, history: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    from harness.evaluate.document import Document, Image, Paragraph, Section, Table, key_values
    from harness.evaluate.render_html import document_to_html

    summary = key_values([
        ("mode", report.mode + (" (light)" if report.light else "")),
        ("created", report.created),
        ("nodes", ", ".join(f"{n.node} {n.verdict.value}" for n in report.nodes) or "none"),
        ("verdicts", ", ".join(f"{count} {name}" for name, count in report.summary().items() if count)),
        ("exit code", f"{report.exit_code} ({EXIT_MEANING[report.exit_code]})"),
        ("references", ", ".join(report.references)),
        ("expected versions", report.expected or "none given"),
    ])
    sections = [Section("Summary", [summary])]
    medians = {(m.check, m.measurement): m for m in report.medians}
    for node in report.nodes:
        checks = Table(["check", "verdict", "time", "message"],
                       [[c.name, c.verdict.value, f"{c.duration_s:.1f} s", c.message] for c in node.checks])
        rows = [_measurement_row(c.name, m, medians) for c in node.checks for m in c.measurements]
        blocks: list[Any] = [checks]
        if rows:
            blocks.append(Table(["check", "measurement", "value", "reference", "fleet median"], rows))
        versions = node.check("stack.versions")
        if versions and versions.facts:
            blocks.append(key_values(sorted(versions.facts.items())))
        sections.append(Section(f"Node {node.node}: {node.verdict.value}", blocks))
    if report.findings:
        sections.append(Section("Fleet comparison", [Table(
            ["node", "check", "verdict", "message"],
            [[f.node, f.check, f.verdict.value, f.message] for f in report.findings],
        )]))
    plots = benchmark_plots(report)
    if plots:
        images = [Image(key, caption) for key, (caption, _) in plots.items()]
        sections.append(Section("Benchmarks against the reference and the fleet median", list(images), html_only=True))
    drift = _history_table(history)
    if drift is not None:
        sections.append(Section("History", [Paragraph("Earlier validations of these nodes, newest first."), drift]))
    document = Document("Node validation", f"{len(report.nodes)} node(s), {report.created}", sections)
    return document_to_html(document, {key: png for key, (_, png) in plots.items()})


def _measurement_row(check: str, m: Measurement, medians: Mapping[tuple[str, str], Any]) -> list[str]:
    reference = "none"
    if m.reference is not None:
        reference = f"{format_value(m.reference.value, m.reference.unit)} ({m.reference.source})"
    median = medians.get((check, m.name))
    fleet = format_value(median.median, median.unit) + f" of {median.nodes}" if median else "-"
    return [check, m.name, format_value(m.value, m.unit) if math.isfinite(m.value) else "n/a", reference, fleet]


def _history_table(history: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    from harness.evaluate.document import Table

    rows = []
    for node, lines in history.items():
        for line in list(reversed(lines))[:HISTORY_ROWS]:
            checks = line.get("checks") if isinstance(line.get("checks"), list) else []
            bad = [f"{c.get('name')} {c.get('verdict')}" for c in checks
                   if isinstance(c, dict) and c.get("verdict") not in ("PASS", "SKIPPED")]
            rows.append([node, str(line.get("started", "?")), str(line.get("verdict", "?")), ", ".join(bad) or "-"])
    return Table(["node", "started", "verdict", "not passed"], rows) if rows else None


def benchmark_plots(report: ValidationReport) -> dict[str, tuple[str, bytes]]:
    """One bar chart per benchmark measurement: every node's value, the reference and the fleet median.

    A plot that cannot be drawn is left out: the tables above hold the same numbers.
    """
    series: dict[tuple[str, str, str], list[tuple[str, float, float | None]]] = {}
    for node in report.nodes:
        for check in node.checks:
            for m in check.measurements:
                if m.fleet and math.isfinite(m.value):
                    expected = m.reference.value * _scale(m.reference.unit, m.unit) if m.reference else None
                    series.setdefault((check.name, m.name, m.unit), []).append((node.node, m.value, expected))
    medians = {(m.check, m.measurement): m.median for m in report.medians}
    plots: dict[str, tuple[str, bytes]] = {}
    for index, ((check_name, name, unit), values) in enumerate(series.items()):
        try:
            png = _bars(values, medians.get((check_name, name)), f"{check_name}: {name} ({unit})")
        except Exception:  # a report without one picture is better than no report
            continue
        if png:
            plots[f"bench{index}"] = (f"{check_name}: {name} per node ({unit})", png)
    return plots


def _scale(unit: str, to_unit: str) -> float:
    from harness.validate.references import convert

    return convert(1.0, unit, to_unit)


def _bars(values: Sequence[tuple[str, float, float | None]], median: float | None, title: str) -> bytes | None:
    from matplotlib.figure import Figure

    from harness.evaluate.plots import render_png, short

    def draw(figure: Figure) -> bool:
        ax = figure.add_subplot()
        names = [short(node) for node, _, _ in values]
        ax.barh(names, [value for _, value, _ in values], color="#4c72b0")
        references = {expected for _, _, expected in values if expected is not None}
        for expected in sorted(references):
            ax.axvline(expected, color="#c44e52", linestyle="--", label="reference")
        if median is not None:
            ax.axvline(median, color="#55a868", linestyle=":", label="fleet median")
        if references or median is not None:
            ax.legend(loc="lower right", fontsize="small")
        ax.set_title(title, fontsize="medium")
        ax.invert_yaxis()
        return True

    return render_png(draw, (6.0, 1.2 + 0.3 * len(values)))
