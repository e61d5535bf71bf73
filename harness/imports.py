"""Resolve 'package.module:attribute' strings from configs into Python objects."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """Import `pkg.module:attr`; raises ImportError with a message that names the path."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f"{path!r} is not an import path of the form 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any error while importing user code is reported the same way
        raise ImportError(
            f"module {module_name!r} of {path!r} does not import: {type(err).__name__}: {err}"
        ) from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj
