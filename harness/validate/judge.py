"""Turning measurements into verdicts: against a reference table row, or against the fleet."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from harness.validate.references import format_value, shortfall
from harness.validate.results import CheckResult, Measurement, Reference
from harness.validate.verdict import Verdict, worst

NO_REFERENCE = "no reference: judged only against the median of the nodes validated together"


def band(short: float, warn: float, fail: float) -> Verdict:
    """PASS within `warn` below the expected value, WARN within `fail`, FAIL beyond."""
    if short > fail:
        return Verdict.FAIL
    if short > warn:
        return Verdict.WARN
    return Verdict.PASS


def judge_measurement(measurement: Measurement) -> tuple[Verdict, str]:
    """A benchmark number against its reference; a number that is not plausible is a FAIL."""
    value = format_value(measurement.value, measurement.unit)
    if not math.isfinite(measurement.value) or measurement.value <= 0:
        return Verdict.FAIL, f"{measurement.name}: {value} is not a plausible measurement"
    reference = measurement.reference
    if reference is None:
        return Verdict.PASS, f"{measurement.name}: {value} ({NO_REFERENCE})"
    return _against(measurement, reference)


def _against(measurement: Measurement, reference: Reference) -> tuple[Verdict, str]:
    short = shortfall(measurement.value, measurement.unit, reference)
    verdict = band(short, reference.warn, reference.fail)
    expected = format_value(reference.value, reference.unit)
    value = format_value(measurement.value, measurement.unit)
    if verdict is Verdict.PASS:
        return verdict, f"{measurement.name}: {value} (reference {expected}, {reference.source})"
    limit = reference.fail if verdict is Verdict.FAIL else reference.warn
    return verdict, (
        f"{measurement.name}: {value} is {short:.0%} below the reference {expected} ({reference.source}; "
        f"{verdict.value} beyond {limit:.0%})"
    )


def judge_all(name: str, measurements: Sequence[Measurement], empty: str) -> CheckResult:
    """A benchmark check's result: the worst measurement decides, and its message is the one shown."""
    if not measurements:
        return CheckResult(name, Verdict.ERROR, empty)
    judged = [judge_measurement(m) for m in measurements]
    verdict = worst(v for v, _ in judged)
    messages = [text for v, text in judged if v is verdict]
    extra = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
    return CheckResult(name, verdict, messages[0] + extra, tuple(measurements))


def result(
    name: str,
    findings: Sequence[tuple[Verdict, str]],
    ok: str,
    measurements: Sequence[Measurement] = (),
    facts: Mapping[str, str] | None = None,
) -> CheckResult:
    """A health check's result from (verdict, text) findings: the worst decides; PASS says `ok`."""
    problems = [(v, text) for v, text in findings if v is not Verdict.PASS]
    verdict = worst(v for v, _ in problems) if problems else Verdict.PASS
    ordered = [text for v, text in problems if v is verdict] + [text for v, text in problems if v is not verdict]
    message = ok if verdict is Verdict.PASS else "; ".join(ordered)
    return CheckResult(name, verdict, message, tuple(measurements), dict(facts or {}))
