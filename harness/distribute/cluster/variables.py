"""Reading launcher variables from a mapping, with errors that name the variable and its value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.errors import LaunchVariableError


def int_var(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    value = env.get(name)
    if value is None:
        raise LaunchVariableError(
            f"{name} is not set, but the other variables of its launcher are: set it too, or unset them"
        )
    try:
        number = int(value.strip())
    except ValueError:
        raise LaunchVariableError(f"{name} must be an integer. Received: {name}={value!r}") from None
    if number < minimum:
        raise LaunchVariableError(f"{name} must be at least {minimum}. Received: {name}={value!r}")
    return number


def first_var(env: Mapping[str, str], names: Sequence[str]) -> str | None:
    """The first of several equivalent variables that is set (newest name first)."""
    return next((name for name in names if env.get(name, "").strip()), None)


def first_value(env: Mapping[str, str], names: Sequence[str]) -> str | None:
    name = first_var(env, names)
    return env[name].strip() if name else None


def check_rank(rank_name: str, rank: int, size_name: str, size: int) -> None:
    if rank >= size:
        raise LaunchVariableError(
            f"{rank_name} must be smaller than {size_name}. Received: {rank_name}={rank}, {size_name}={size}"
        )
