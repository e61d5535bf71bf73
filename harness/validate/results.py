"""What a check returns and what a node's run produces: plain frozen records with a JSON form.

A `NodeResult` is the contract between running the suite on a node and aggregating nodes: the
suite writes it as JSON (locally, or from a Slurm job into a shared folder) and the aggregation
reads it back with `node_from_dict`, so both halves meet only at this format (schema in
`data/validate.schema.json`, version `SCHEMA_VERSION`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from harness.errors import UserInputError
from harness.validate.verdict import Verdict, worst

SCHEMA_VERSION = 1
NODE_KIND = "harness-validate-node"
REPORT_KIND = "harness-validate-report"


@dataclass(frozen=True)
class Reference:
    """The value a measurement is judged against: below value*(1-warn) WARN, below value*(1-fail) FAIL."""

    value: float
    unit: str
    warn: float
    fail: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "warn": self.warn, "fail": self.fail, "source": self.source}


@dataclass(frozen=True)
class Measurement:
    """One number a check measured. `metric` names its row in the reference table (if any);
    `fleet` says whether nodes are compared on it (higher is better)."""

    name: str
    value: float
    unit: str
    metric: str | None = None
    reference: Reference | None = None
    fleet: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _finite_or_none(self.value),
            "unit": self.unit,
            "metric": self.metric,
            "reference": self.reference.to_dict() if self.reference else None,
            "fleet": self.fleet,
        }


@dataclass(frozen=True)
class CheckResult:
    """A check's outcome: verdict, one-line message, measurements and plain facts (versions...)."""

    name: str
    verdict: Verdict
    message: str
    measurements: tuple[Measurement, ...] = ()
    facts: Mapping[str, str] = field(default_factory=dict)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "message": self.message,
            "measurements": [m.to_dict() for m in self.measurements],
            "facts": dict(self.facts),
            "duration_s": round(self.duration_s, 3),
        }

    def timed(self, seconds: float) -> CheckResult:
        return replace(self, duration_s=seconds)


@dataclass(frozen=True)
class NodeResult:
    """Every check run on one node, as the suite wrote it."""

    node: str
    checks: tuple[CheckResult, ...]
    started: str
    finished: str
    light: bool
    harness_version: str

    @property
    def verdict(self) -> Verdict:
        return worst(check.verdict for check in self.checks)

    @property
    def judged(self) -> bool:
        return any(check.verdict.judged for check in self.checks)

    def check(self, name: str) -> CheckResult | None:
        return next((check for check in self.checks if check.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": NODE_KIND,
            "schema_version": SCHEMA_VERSION,
            "harness_version": self.harness_version,
            "node": self.node,
            "verdict": self.verdict.value,
            "started": self.started,
            "finished": self.finished,
            "light": self.light,
            "checks": [check.to_dict() for check in self.checks],
        }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity; a measurement that is not a number is written as null."""
    return value if math.isfinite(value) else None


# --- reading back (the aggregation side) ---------------------------------------------------


def node_from_dict(data: Mapping[str, Any], source: str) -> NodeResult:
    """A NodeResult from its JSON form; a wrong kind or schema version names both values."""
    if data.get("kind") != NODE_KIND:
        raise UserInputError(f"{source}: not a node result (kind={data.get('kind')!r:.100}, expected {NODE_KIND!r})")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserInputError(
            f"{source}: node result schema_version {version!r:.50} is not the one this harness reads "
            f"({SCHEMA_VERSION}); validate the node again with this version"
        )
    try:
        return NodeResult(
            node=str(data["node"]),
            checks=tuple(_check_from_dict(item) for item in data["checks"]),
            started=str(data["started"]),
            finished=str(data["finished"]),
            light=bool(data["light"]),
            harness_version=str(data["harness_version"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"{source}: malformed node result ({type(err).__name__}: {err!s:.200})") from None


def _check_from_dict(data: Mapping[str, Any]) -> CheckResult:
    return CheckResult(
        name=str(data["name"]),
        verdict=Verdict(data["verdict"]),
        message=str(data["message"]),
        measurements=tuple(_measurement_from_dict(item) for item in data["measurements"]),
        facts={str(k): str(v) for k, v in data["facts"].items()},
        duration_s=float(data["duration_s"]),
    )


def _measurement_from_dict(data: Mapping[str, Any]) -> Measurement:
    ref = data.get("reference")
    value = data["value"]
    return Measurement(
        name=str(data["name"]),
        value=math.nan if value is None else float(value),
        unit=str(data["unit"]),
        metric=None if data.get("metric") is None else str(data["metric"]),
        reference=None if ref is None else Reference(
            float(ref["value"]), str(ref["unit"]), float(ref["warn"]), float(ref["fail"]), str(ref["source"])
        ),
        fleet=bool(data.get("fleet", False)),
    )
