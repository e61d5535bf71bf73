"""Slurm's compact list syntaxes (host lists, tasks per node), expanded in Slurm's own order."""

from __future__ import annotations

import re

from harness.errors import LaunchError

MAX_HOSTS_PER_RANGE = 64 * 1024
"""Same cap as Slurm's hostlist.c (MAX_RANGE): a typo like n[1-9999999] must not eat memory."""


def expand_hostlist(spec: str) -> list[str]:
    """Expand Slurm hostlist syntax in Slurm's own order, like `scontrol show hostnames`.

    Rank placement follows this order, so it must not be sorted: `n[9-10]` is n9, n10.
    Numbers keep the width of the range's lower bound (`node[001-003]`). With several bracket
    groups the last one varies fastest (`c[1-2]-ib[1-2]` is c1-ib1 c1-ib2 c2-ib1 c2-ib2); with
    three or more, the order of Slurm 22.05's recursive expansion is reproduced. Like Slurm,
    text after the last bracket is rejected; unlike Slurm, so is an unclosed bracket (Slurm
    would silently read "n[1-" as the host name "n[1-]").
    """
    hosts: list[str] = []
    for token in _split_hostlist(spec):
        hosts.extend(_expand_token(token, spec))
    return hosts


def _hostlist_error(spec: str, why: str) -> LaunchError:
    return LaunchError(f"malformed Slurm hostlist {spec!r}: {why}")


def _split_hostlist(spec: str) -> list[str]:
    """Split on commas and whitespace outside brackets; empty items are skipped, as Slurm does."""
    tokens, current, inside = [], "", False
    for char in spec:
        if char == "[":
            if inside:
                raise _hostlist_error(spec, "nested '['")
            inside = True
        elif char == "]":
            if not inside:
                raise _hostlist_error(spec, "']' without a matching '['")
            inside = False
        if char in ", \t\n" and not inside:
            tokens.append(current)
            current = ""
        else:
            current += char
    if inside:
        raise _hostlist_error(spec, "'[' is never closed")
    tokens.append(current)
    return [token for token in tokens if token]


def _expand_token(token: str, spec: str) -> list[str]:
    open_at = token.rfind("[")
    if open_at < 0:
        return [token]
    close_at = token.index("]", open_at)
    if close_at != len(token) - 1:
        raise _hostlist_error(spec, f"text after the last ']' in {token!r}")
    numbers = _expand_ranges(token[open_at + 1 : close_at], spec)
    return _expand_prefix(token[:open_at], numbers, spec)


def _expand_prefix(prefix: str, numbers: list[str], spec: str) -> list[str]:
    """Slurm's _push_range_list: the prefix's last bracket is the outer loop, recursively."""
    open_at = prefix.rfind("[")
    if open_at < 0:
        return [prefix + number for number in numbers]
    close_at = prefix.index("]", open_at)
    head, tail = prefix[:open_at], prefix[close_at + 1 :]
    hosts = []
    for value in _expand_ranges(prefix[open_at + 1 : close_at], spec):
        hosts.extend(_expand_prefix(head + value + tail, numbers, spec))
    return hosts


_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def _expand_ranges(text: str, spec: str) -> list[str]:
    """ "1-3,10" -> ["1", "2", "3", "10"]; zero padding follows the lower bound, as in Slurm."""
    values: list[str] = []
    for item in text.split(","):
        match = _RANGE.fullmatch(item)
        if not match:
            raise _hostlist_error(spec, f"{item!r} is not a number or a range lo-hi")
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high:
            raise _hostlist_error(spec, f"range {item!r} runs backwards")
        if high - low + 1 > MAX_HOSTS_PER_RANGE:
            raise _hostlist_error(spec, f"range {item!r} has more than {MAX_HOSTS_PER_RANGE} hosts")
        width = len(match[1])
        values.extend(f"{number:0{width}d}" for number in range(low, high + 1))
    return values


_TASKS_ITEM = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def expand_tasks_per_node(spec: str) -> list[int]:
    """SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE: "2(x3),1" -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for item in spec.split(","):
        match = _TASKS_ITEM.fullmatch(item.strip())
        if not match or match[2] == "0":
            raise LaunchError(f"malformed Slurm tasks-per-node list {spec!r}: {item!r} is not N or N(xM)")
        counts.extend([int(match[1])] * int(match[2] or 1))
    return counts
