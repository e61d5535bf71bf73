"""Verdicts and how they combine: one order, decided here and nowhere else.

Severity, least to most: SKIPPED < PASS < WARN < FAIL < ERROR. A node's verdict is its worst
check, so:

- SKIPPED (the check does not apply here: no GPU on a CPU node) never hides a result; a node
  whose checks all skipped is SKIPPED, which is not a pass (nothing was validated).
- WARN is a pass with something to look at (a GPU link at a lower PCIe generation while idle,
  a benchmark a little below its reference). It does not fail the command.
- ERROR ranks above FAIL: a check that crashed or timed out leaves the node's state unknown,
  and a node that cannot be vouched for is not fit to run jobs until someone looks.

Exit codes of a validation (`exit_code`): 0 when every node is PASS or WARN, 1 when some node
is FAIL or ERROR, 3 when nothing could be judged at all (every check of every node ERROR or
SKIPPED, or no node result). Code 2 (bad input) is raised before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"

    @property
    def severity(self) -> int:
        return SEVERITY[self]

    @property
    def judged(self) -> bool:
        """Whether the check produced a judgement on the node (it ran, and applied)."""
        return self in (Verdict.PASS, Verdict.WARN, Verdict.FAIL)

    @property
    def fit(self) -> bool:
        """Whether a node with this verdict may run jobs."""
        return self in (Verdict.PASS, Verdict.WARN)


SEVERITY: dict[Verdict, int] = {
    Verdict.SKIPPED: 0,
    Verdict.PASS: 1,
    Verdict.WARN: 2,
    Verdict.FAIL: 3,
    Verdict.ERROR: 4,
}

EXIT_ALL_PASS = 0
EXIT_SOME_FAIL = 1
EXIT_COULD_NOT_RUN = 3


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict; SKIPPED for none (nothing was validated)."""
    return max(verdicts, key=lambda verdict: verdict.severity, default=Verdict.SKIPPED)


def exit_code(node_verdicts: Iterable[Verdict], anything_judged: bool) -> int:
    """0 all fit, 1 some node FAIL/ERROR, 3 nothing judged (see the module docstring)."""
    verdicts = list(node_verdicts)
    if not verdicts or not anything_judged:
        return EXIT_COULD_NOT_RUN
    if any(verdict in (Verdict.FAIL, Verdict.ERROR) for verdict in verdicts):
        return EXIT_SOME_FAIL
    return EXIT_ALL_PASS
