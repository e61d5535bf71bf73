"""Inter-node checks: which node pairs to test, and on which node the blame for a failing pair lands.

A pair test (an all-reduce between one process on each of two nodes) says something about two
nodes and the link between them, so a failure alone blames nobody. The plan:

1. first round: disjoint pairs in node order (`n1-n2`, `n3-n4`, ...; an odd node out is paired
   with the first node), so every node is in at least one pair;
2. each pair is judged: it could not run (ERROR), the sum was wrong or it was far slower than the
   median of the pairs (FAIL, using the fleet tolerances), else PASS or WARN;
3. retests: each node of a failing pair is paired again with a node that passed a pair (a
   different one where possible);
4. blame: a node with a passing pair is cleared; a node whose every pair failed, with at least
   one partner that was cleared, is blamed; when no partner could be cleared (two nodes, or every
   pair failed) the fault cannot be placed and every node involved keeps the failure, saying so.
   A cleared node that failed only with cleared partners gets a WARN (an intermittent fault or the
   link between them).

Each node then gets one `collective.internode` check result, which the aggregation treats like any
other check (its measurements are not compared again by the fleet rule: that was done per pair).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from harness.validate.judge import band
from harness.validate.references import format_value
from harness.validate.results import CheckResult, Measurement
from harness.validate.verdict import Verdict, worst

CHECK = "collective.internode"
Pair = tuple[str, str]


@dataclass(frozen=True)
class PairOutcome:
    """One pair test: its verdict, why, and the bus bandwidth in GB/s when it ran."""

    nodes: Pair
    verdict: Verdict
    message: str
    busbw_gbs: float | None = None
    retest: bool = False

    def partner(self, node: str) -> str:
        return self.nodes[1] if self.nodes[0] == node else self.nodes[0]

    @property
    def label(self) -> str:
        return f"{self.nodes[0]}-{self.nodes[1]}"


def plan_pairs(nodes: Sequence[str]) -> list[Pair]:
    """Disjoint pairs in the given order; an odd node out is paired with the first node."""
    pairs = [(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
    if len(nodes) % 2 and len(nodes) > 1:
        pairs.append((nodes[-1], nodes[0]))
    return pairs


def judge_rates(outcomes: Sequence[PairOutcome], warn: float, fail: float,
                median: float | None = None) -> tuple[list[PairOutcome], float | None]:
    """Passing pairs judged against the median bus bandwidth of the pairs (at least two measured).

    Returns the judged outcomes and the median used (computed from these outcomes unless given,
    so retests are judged against the first round's median).
    """
    if median is None:
        rates = [o.busbw_gbs for o in outcomes if o.busbw_gbs and o.verdict.fit]
        median = statistics.median(rates) if len(rates) >= 2 else None
    if median is None:
        return list(outcomes), None
    judged = []
    for outcome in outcomes:
        if not outcome.verdict.fit or not outcome.busbw_gbs:
            judged.append(outcome)
            continue
        short = 1.0 - outcome.busbw_gbs / median
        verdict = band(short, warn, fail)
        if verdict is Verdict.PASS:
            judged.append(outcome)
            continue
        message = (f"{format_value(outcome.busbw_gbs, 'GB/s')} is {short:.0%} below the median "
                   f"{format_value(median, 'GB/s')} of the pairs")
        judged.append(replace(outcome, verdict=worst([outcome.verdict, verdict]), message=message))
    return judged, median


def failing(outcomes: Iterable[PairOutcome]) -> list[PairOutcome]:
    return [o for o in outcomes if o.verdict in (Verdict.FAIL, Verdict.ERROR)]


def plan_retests(first: Sequence[PairOutcome]) -> list[Pair]:
    """For each node of a failing pair, a pair with a node that passed a pair (spread over them)."""
    good = _unique(node for o in first if o.verdict.fit for node in o.nodes)
    suspects = _unique(node for o in failing(first) for node in o.nodes if node not in good)
    if not good:
        return []
    retests: list[Pair] = []
    for index, node in enumerate(suspects):
        partners = [g for g in good if all(g not in o.nodes or node not in o.nodes for o in first)]
        if partners:
            retests.append((node, partners[index % len(partners)]))
    return retests


def _unique(nodes: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for node in nodes:
        if node not in seen:
            seen.append(node)
    return seen


def blame(nodes: Sequence[str], outcomes: Sequence[PairOutcome]) -> dict[str, CheckResult]:
    """One `collective.internode` result per node from every pair test it was in (see module doc)."""
    cleared = {node for o in outcomes if o.verdict.fit for node in o.nodes}
    results = {}
    for node in nodes:
        mine = [o for o in outcomes if node in o.nodes]
        results[node] = _node_result(node, mine, cleared)
    return results


def _node_result(node: str, mine: Sequence[PairOutcome], cleared: set[str]) -> CheckResult:
    if not mine:
        return CheckResult(CHECK, Verdict.SKIPPED, "no other node to pair with (validate at least two nodes)")
    measurements = tuple(
        Measurement(f"with {o.partner(node)}" + (" (retest)" if o.retest else ""), o.busbw_gbs, "GB/s")
        for o in mine if o.busbw_gbs is not None
    )
    passed = [o for o in mine if o.verdict.fit]
    failed = failing(mine)
    if not failed:
        verdict = worst(o.verdict for o in mine)
        shown = next((o for o in mine if o.verdict is verdict), mine[0])
        return CheckResult(CHECK, verdict, f"pair {shown.label}: {shown.message}", measurements)
    failed_with = ", ".join(o.partner(node) for o in failed)
    if passed:
        ok_with = ", ".join(o.partner(node) for o in passed)
        if all(o.partner(node) in cleared for o in failed):
            return CheckResult(CHECK, Verdict.WARN, f"failed with {failed_with} but passed with {ok_with}, as did "
                               f"{failed_with} with other nodes: an intermittent fault or the link between them "
                               f"({_first(failed)})", measurements)
        return CheckResult(CHECK, worst(o.verdict for o in passed),
                           f"passed with {ok_with}; failed with {failed_with}, which is blamed", measurements)
    verdict = worst(o.verdict for o in failed)
    if any(o.partner(node) in cleared for o in failed):
        return CheckResult(CHECK, verdict, f"failed with every partner ({failed_with}), including nodes that "
                           f"passed with others: this node is blamed ({_first(failed)})", measurements)
    return CheckResult(CHECK, verdict, f"failed with {failed_with} and no node that passed a pair was "
                       f"available to retest with, so the fault may be on either node ({_first(failed)})",
                       measurements)


def _first(outcomes: Sequence[PairOutcome]) -> str:
    worst_one = max(outcomes, key=lambda o: o.verdict.severity)
    return f"pair {worst_one.label}: {worst_one.message}"
