"""Short echoes of user values for error messages.

A message shows the bad value so the user recognises it, but a value can be huge (a pasted
array, a YAML alias bomb, a megabyte-long key): every config error echoes values through
`echo` and `clip`, so no message grows beyond a few hundred characters per value.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Any

ECHO_LIMIT = 200
MAX_PROBLEMS = 20


def _repr_engine() -> reprlib.Repr:
    """A `repr` that stops early: it never builds the full text of a big nested value."""
    engine = reprlib.Repr()
    engine.maxlevel = 4
    engine.maxlist = engine.maxtuple = engine.maxset = engine.maxdict = 12
    engine.maxstring = engine.maxother = ECHO_LIMIT
    engine.maxlong = 60
    return engine


_REPR = _repr_engine()


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)`, cut to about `limit` characters; long strings say how long they are."""
    text = clip(_REPR.repr(value), limit)
    if isinstance(value, str | bytes) and len(value) > limit:
        text += f" ({len(value)} characters)"
    return text


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` itself when short, else its first `limit` characters and an ellipsis."""
    return text if len(text) <= limit else text[:limit] + "..."


def bullet_list(problems: Sequence[str], limit: int = MAX_PROBLEMS) -> str:
    """Problems as `  - ...` lines; past `limit` of them, one line says how many were left out."""
    shown = list(problems[:limit])
    if len(problems) > limit:
        shown.append(f"... and {len(problems) - limit} more problems")
    return "\n  - " + "\n  - ".join(shown)
