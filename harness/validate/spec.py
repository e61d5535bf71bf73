"""Declarative checks and their registry (ReFrame's style: what, unit, reference, how to run).

A check is a `CheckSpec` registered under a dotted name (`gpu.ecc`, `compute.matmul`). The
spec says what it measures and in which unit, where its reference comes from, whether it fits
light mode (under 60 s on a node, for Slurm's HealthCheckProgram), what the node must have for
it to apply (`needs`), and how long it may take. The function only measures and judges; the
runner adds SKIPPED for unmet needs, ERROR for exceptions and timeouts, and the duration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.errors import UserInputError
from harness.registry import Registry, closest
from harness.validate.context import NEEDS, NodeContext
from harness.validate.results import CheckResult

CheckFn = Callable[[NodeContext], CheckResult]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    measures: str
    unit: str
    reference: str
    run: CheckFn
    light: bool
    needs: tuple[str, ...] = ()
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        unknown = [need for need in self.needs if need not in NEEDS]
        if unknown:
            raise ValueError(f"check {self.name!r}: unknown needs {unknown}; known: {', '.join(NEEDS)}")


class CheckRegistry(Registry[CheckSpec]):
    """The registry, remembering registration order: checks run cheapest group first."""

    def __init__(self) -> None:
        super().__init__("check")
        self._order: list[str] = []

    def add(self, name: str, obj: CheckSpec) -> None:
        super().add(name, obj)
        self._order.append(name)

    def in_order(self) -> list[CheckSpec]:
        return [self.get(name) for name in self._order]


CHECKS = CheckRegistry()


def check(
    name: str,
    measures: str,
    unit: str = "",
    reference: str = "",
    light: bool = True,
    needs: tuple[str, ...] = (),
    timeout_s: float = 60.0,
) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as check `name`."""

    def decorate(function: CheckFn) -> CheckFn:
        CHECKS.add(name, CheckSpec(name, measures, unit, reference, function, light, needs, timeout_s))
        return function

    return decorate


def all_checks() -> list[CheckSpec]:
    """Every registered check, in the order they run (the order the modules register them)."""
    from harness.validate import checks  # noqa: F401  (registers them)

    return CHECKS.in_order()


def select_checks(requested: Sequence[str] | None, light: bool) -> list[CheckSpec]:
    """The checks to run: `requested` names or group prefixes (`gpu` = every gpu.* check), else all;
    in light mode only light ones. An unknown name is a usage error with a "did you mean"."""
    specs = all_checks()
    if not requested:
        return [spec for spec in specs if spec.light or not light]
    names = [spec.name for spec in specs]
    groups = sorted({name.split(".")[0] for name in names})
    chosen: list[CheckSpec] = []
    for wanted in requested:
        matched = [spec for spec in specs if spec.name == wanted or spec.name.split(".")[0] == wanted]
        if not matched:
            hint = closest(wanted, [*names, *groups])
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise UserInputError(
                f"--checks: unknown check {wanted!r}.{did_you_mean} Known checks: {', '.join(names)} "
                f"(or a group: {', '.join(groups)})"
            )
        chosen.extend(spec for spec in matched if spec not in chosen)
    heavy = [spec.name for spec in chosen if light and not spec.light]
    if heavy:
        raise UserInputError(f"--checks: {', '.join(heavy)} do not fit --light (they take longer); "
                             "leave out --light to run them")
    return sorted(chosen, key=specs.index)
