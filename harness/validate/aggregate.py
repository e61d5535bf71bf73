"""Aggregate node results into a validation report: the fleet's own references, and verdicts.

Separate from running the suite: a partition run gathers one `NodeResult` per node (each written
by a job on that node) and calls `aggregate` exactly as `--local` does with its single node.

Two rules compare nodes with each other (both need at least two nodes with the value):
- fleet median: for every benchmark measurement (`fleet=True`, higher is better), a node below
  the median of the nodes validated together by more than `fleet.warn` is an outlier (WARN), by
  more than `fleet.fail` a FAIL. One-sided: being faster than the others is never a problem.
- same stack: a component whose version differs from the one most nodes have is a FAIL on the
  nodes that differ; when no version has a majority, every node involved gets a WARN.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import harness
from harness.validate.judge import band
from harness.validate.references import ReferenceTable, format_value
from harness.validate.results import REPORT_KIND, SCHEMA_VERSION, CheckResult, NodeResult
from harness.validate.runner import now
from harness.validate.verdict import Verdict, exit_code, worst

MIN_FLEET = 2
VERSIONS_CHECK = "stack.versions"


@dataclass(frozen=True)
class FleetMedian:
    check: str
    measurement: str
    unit: str
    median: float
    nodes: int

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "measurement": self.measurement, "unit": self.unit,
                "median": self.median, "nodes": self.nodes}


@dataclass(frozen=True)
class Finding:
    """A verdict the fleet comparison added to one node's check."""

    node: str
    check: str
    what: str
    verdict: Verdict
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "check": self.check, "what": self.what, "verdict": self.verdict.value,
                "message": self.message}


@dataclass(frozen=True)
class ValidationReport:
    nodes: tuple[NodeResult, ...]
    medians: tuple[FleetMedian, ...]
    findings: tuple[Finding, ...]
    mode: str
    light: bool
    created: str
    references: tuple[str, ...]
    expected: str | None

    @property
    def exit_code(self) -> int:
        return exit_code([node.verdict for node in self.nodes], any(node.judged for node in self.nodes))

    def summary(self) -> dict[str, int]:
        counts = Counter(node.verdict.value for node in self.nodes)
        return {verdict.value: counts.get(verdict.value, 0) for verdict in Verdict}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": REPORT_KIND,
            "schema_version": SCHEMA_VERSION,
            "harness_version": harness.__version__,
            "created": self.created,
            "mode": self.mode,
            "light": self.light,
            "references": list(self.references),
            "expected_versions": self.expected,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "nodes": [node.to_dict() for node in self.nodes],
            "fleet": {
                "medians": [median.to_dict() for median in self.medians],
                "findings": [finding.to_dict() for finding in self.findings],
            },
        }


def aggregate(
    nodes: Sequence[NodeResult],
    references: ReferenceTable,
    mode: str = "local",
    expected: str | None = None,
) -> ValidationReport:
    """Verdicts for every node after the fleet rules (see the module docstring)."""
    medians, slow = fleet_medians(nodes, references)
    findings = [*slow, *version_findings(nodes)]
    adjusted = tuple(_apply(node, [f for f in findings if f.node == node.node]) for node in nodes)
    light = all(node.light for node in nodes) if nodes else False
    return ValidationReport(adjusted, tuple(medians), tuple(findings), mode, light, now(), references.sources,
                            expected)


def fleet_medians(
    nodes: Sequence[NodeResult], references: ReferenceTable
) -> tuple[list[FleetMedian], list[Finding]]:
    values: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for node in nodes:
        for check in node.checks:
            for m in check.measurements:
                if m.fleet and m.value == m.value and m.value > 0:
                    values[(check.name, m.name, m.unit)][node.node] = m.value
    medians: list[FleetMedian] = []
    findings: list[Finding] = []
    for (check_name, name, unit), per_node in values.items():
        if len(per_node) < MIN_FLEET:
            continue
        median = statistics.median(per_node.values())
        medians.append(FleetMedian(check_name, name, unit, median, len(per_node)))
        for node_name, value in per_node.items():
            short = 1.0 - value / median
            verdict = band(short, references.fleet_warn, references.fleet_fail)
            if verdict is not Verdict.PASS:
                limit = references.fleet_fail if verdict is Verdict.FAIL else references.fleet_warn
                message = (
                    f"{name}: {format_value(value, unit)} is {short:.0%} below the fleet median "
                    f"{format_value(median, unit)} of {len(per_node)} nodes ({verdict.value} beyond {limit:.0%})"
                )
                findings.append(Finding(node_name, check_name, name, verdict, message))
    return medians, findings


def version_findings(nodes: Sequence[NodeResult]) -> list[Finding]:
    facts = {node.node: check.facts for node in nodes if (check := node.check(VERSIONS_CHECK)) and check.facts}
    if len(facts) < MIN_FLEET:
        return []
    findings: list[Finding] = []
    components = sorted({name for versions in facts.values() for name in versions})
    for component in components:
        seen = Counter(versions.get(component, "") for versions in facts.values())
        if len(seen) < 2:
            continue
        (top, top_count), (_, second_count) = seen.most_common(2)
        spread = ", ".join(f"{version or 'absent'} on {count}" for version, count in seen.most_common())
        for node, versions in facts.items():
            found = versions.get(component, "")
            if top_count > second_count and found != top:
                message = f"{component} {found or 'absent'} differs from {top} on {top_count} of {len(facts)} nodes"
                findings.append(Finding(node, VERSIONS_CHECK, component, Verdict.FAIL, message))
            elif top_count == second_count:
                message = f"{component} differs across nodes with no majority ({spread})"
                findings.append(Finding(node, VERSIONS_CHECK, component, Verdict.WARN, message))
    return findings


def _apply(node: NodeResult, findings: Sequence[Finding]) -> NodeResult:
    if not findings:
        return node
    checks = tuple(_adjust(check, [f for f in findings if f.check == check.name]) for check in node.checks)
    return replace(node, checks=checks)


def _adjust(check: CheckResult, findings: Sequence[Finding]) -> CheckResult:
    """A judged check takes the worse of its own verdict and the fleet's; its message says why."""
    if not findings or not check.verdict.judged:
        return check
    verdict = worst([check.verdict, *(f.verdict for f in findings)])
    fleet = "; ".join(f.message for f in findings)
    own_first = check.verdict is not Verdict.PASS
    message = f"{check.message}; fleet: {fleet}" if own_first else f"fleet: {fleet}; {check.message}"
    return replace(check, verdict=verdict, message=message)
