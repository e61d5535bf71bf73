"""Run the suite on this node: every selected check, guarded, into one `NodeResult`.

The guard is what makes "could not run" impossible to mistake for a pass: an unmet need is
SKIPPED with the reason, an exception is ERROR with its type and text, and a check still running
after its time limit is ERROR (its thread is left behind as a daemon; the suite goes on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import harness
from harness.validate.context import NodeContext
from harness.validate.results import CheckResult, NodeResult
from harness.validate.spec import CheckSpec
from harness.validate.verdict import Verdict

Progress = Callable[[CheckSpec, CheckResult | None], None]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_node(ctx: NodeContext, specs: Sequence[CheckSpec], progress: Progress | None = None) -> NodeResult:
    """Every check of `specs` on this node, in order; `progress` hears of each start and end."""
    started = now()
    results = []
    for spec in specs:
        if progress:
            progress(spec, None)
        outcome = run_check(ctx, spec)
        results.append(outcome)
        if progress:
            progress(spec, outcome)
    return NodeResult(ctx.node, tuple(results), started, now(), ctx.settings.light, harness.__version__)


def run_check(ctx: NodeContext, spec: CheckSpec) -> CheckResult:
    """One check, guarded (see the module docstring); the result carries its duration."""
    start = time.perf_counter()
    for need in spec.needs:
        reason = ctx.missing(need)
        if reason is not None:
            return CheckResult(spec.name, Verdict.SKIPPED, f"needs {need}: {reason}")
    outcome = _with_time_limit(spec, ctx)
    return outcome.timed(time.perf_counter() - start)


def _with_time_limit(spec: CheckSpec, ctx: NodeContext) -> CheckResult:
    box: list[CheckResult] = []

    def target() -> None:
        box.append(_guarded(spec, ctx))

    worker = threading.Thread(target=target, name=f"check-{spec.name}", daemon=True)
    worker.start()
    worker.join(spec.timeout_s)
    if not box:
        return CheckResult(spec.name, Verdict.ERROR, f"did not finish within its time limit of {spec.timeout_s:.0f} s")
    return box[0]


def _guarded(spec: CheckSpec, ctx: NodeContext) -> CheckResult:
    try:
        outcome = spec.run(ctx)
    except Exception as err:  # a check that cannot run must report why, never pass
        text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        return CheckResult(spec.name, Verdict.ERROR, f"could not run: {type(err).__name__}: {text}".rstrip(": "))
    if not isinstance(outcome, CheckResult) or outcome.name != spec.name:
        return CheckResult(spec.name, Verdict.ERROR, f"returned {type(outcome).__name__}, not its CheckResult")
    return outcome
