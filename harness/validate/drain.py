"""Drain failing nodes and return them to service, touching only what this tool did itself.

A node drained here gets a reason starting with `REASON_PREFIX`, naming the check that failed:

    harness-validate: compute.matmul FAIL: CPU:0 fp32: 3.1 GFLOP/s is 61% below ...

so a sysadmin (and `sinfo -R`) sees who drained it and why, and `--resume-drained` can tell the
nodes it drained from those someone else drained for their own reasons: it never resumes the
latter. Without `--yes` nothing changes: the exact `scontrol` lines are printed instead.

Every function here but `apply` is pure, so the rules are tested without a cluster.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from harness.validate.results import NodeResult
from harness.validate.verdict import Verdict

REASON_PREFIX = "harness-validate:"
MAX_REASON = 200
"""Slurm stores reasons of any length, but `sinfo -R`, NHC and most dashboards show the first
couple of hundred characters; a reason cut here still names the tool and the check."""
NOT_RUN_CHECK = "validate.job"
"""The pseudo-check of a node whose validation job never ran: such a node is not drained."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class NodeState:
    """What Slurm says about one node: its state flags and its reason (without Slurm's [user@time])."""

    name: str
    state: str
    reason: str = ""

    @property
    def drained(self) -> bool:
        """DRAIN set (sinfo shows it as drained or draining, scontrol as IDLE+DRAIN...)."""
        return "DRAIN" in self.state.upper()

    @property
    def drained_by_us(self) -> bool:
        return self.drained and drained_by_us(self.reason)


def drained_by_us(reason: str) -> bool:
    """Whether a drain reason was written by this tool (it starts with the fixed prefix)."""
    return reason.strip().startswith(REASON_PREFIX)


def should_drain(node: NodeResult) -> bool:
    """A node that FAILed or ERRORed a check that ran on it; not one whose job never ran."""
    if node.verdict.fit or node.verdict is Verdict.SKIPPED:
        return False
    return any(check.name != NOT_RUN_CHECK and not check.verdict.fit and check.verdict is not Verdict.SKIPPED
               for check in node.checks)


def drain_reason(node: NodeResult) -> str:
    """`harness-validate: CHECK VERDICT: message (+N more)`, one line, at most MAX_REASON characters."""
    failed = [check for check in node.checks if check.verdict in (Verdict.FAIL, Verdict.ERROR)
              and check.name != NOT_RUN_CHECK]
    failed.sort(key=lambda check: -check.verdict.severity)
    if not failed:
        return f"{REASON_PREFIX} node verdict {node.verdict.value}"
    first = failed[0]
    more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
    text = f"{REASON_PREFIX} {first.name} {first.verdict.value}: {_one_line(first.message)}"
    if len(text) + len(more) > MAX_REASON:
        text = text[: MAX_REASON - len(more) - 3].rstrip() + "..."
    return text + more


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def drain_command(node: str, reason: str) -> list[str]:
    return ["scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"]


def resume_command(node: str) -> list[str]:
    return ["scontrol", "update", f"NodeName={node}", "State=RESUME"]


def shell_line(command: Sequence[str]) -> str:
    """The command as an administrator would type it (each argument quoted for the shell)."""
    return " ".join(shlex.quote(part) for part in command)


@dataclass(frozen=True)
class Action:
    """One change to a node (or a note why not), and the command that makes it."""

    node: str
    what: str  # "drain", "resume", "leave"
    why: str
    command: tuple[str, ...] = ()


def plan_drain(nodes: Sequence[NodeResult], states: dict[str, NodeState]) -> list[Action]:
    """DRAIN every failing node, unless it is drained already (by us: kept; by someone else: left alone)."""
    actions = []
    for node in nodes:
        if not should_drain(node):
            continue
        state = states.get(node.node)
        if state is not None and state.drained:
            who = "by this tool" if state.drained_by_us else "by someone else"
            actions.append(Action(node.node, "leave", f"already drained {who} (reason: {state.reason or 'none'})"))
            continue
        reason = drain_reason(node)
        actions.append(Action(node.node, "drain", reason, tuple(drain_command(node.node, reason))))
    return actions


def plan_resume(nodes: Sequence[NodeResult], states: dict[str, NodeState]) -> list[Action]:
    """RESUME the nodes this tool drained that now pass; say why each other drained node stays."""
    results = {node.node: node for node in nodes}
    actions = []
    for name, state in states.items():
        if not state.drained:
            continue
        if not state.drained_by_us:
            actions.append(Action(name, "leave", f"drained by someone else (reason: {state.reason or 'none'}): "
                                  "left alone"))
            continue
        node = results.get(name)
        if node is None:
            actions.append(Action(name, "leave", "drained by this tool but not validated now: stays drained"))
        elif node.verdict.fit:
            actions.append(Action(name, "resume", f"now {node.verdict.value}", tuple(resume_command(name))))
        else:
            actions.append(Action(name, "leave", f"still {node.verdict.value}: stays drained"))
    return actions


# --- what Slurm says about nodes ---------------------------------------------------------------

SINFO_NODES = ["sinfo", "-h", "-N", "-o", "%N|%P|%T|%E"]
"""One line per node and partition: name, partition (default marked *), state, reason."""


@dataclass(frozen=True)
class SlurmNodes:
    """Nodes and partitions as `sinfo` lists them, in its order."""

    partitions: dict[str, list[str]]
    states: dict[str, NodeState]
    default_partition: str | None = None

    @property
    def names(self) -> list[str]:
        return list(self.states)


def parse_sinfo_nodes(text: str) -> SlurmNodes:
    partitions: dict[str, list[str]] = {}
    states: dict[str, NodeState] = {}
    default = None
    for line in text.splitlines():
        fields = line.strip().split("|", 3)
        if len(fields) != 4 or not fields[0]:
            continue
        node, partition, state, reason = fields
        if partition.endswith("*"):
            partition = partition.rstrip("*")
            default = partition
        members = partitions.setdefault(partition, [])
        if node not in members:
            members.append(node)
        states[node] = NodeState(node, state, "" if reason.strip() in ("none", "(null)") else _strip_stamp(reason))
    return SlurmNodes(partitions, states, default)


_STAMP = re.compile(r"\s*\[[^\]\s]+@[^\]\s]+\]\s*$")


def _strip_stamp(reason: str) -> str:
    """scontrol shows `reason [root@2026-01-01T10:00:00]`: the reason is what comes before."""
    return _STAMP.sub("", reason.strip())
