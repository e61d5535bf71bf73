"""The dataset registry: `data.dataset` names a loader registered here.

Users add their own datasets with `@DATASETS.register("name")` on a function with the
`Loader` signature; the built-in loaders register themselves the same way.
"""

from __future__ import annotations

from harness.data.raw import Loader
from harness.errors import DataError
from harness.registry import Registry

DATASETS: Registry[Loader] = Registry("dataset")


def get_loader(name: str) -> Loader:
    """Return the loader registered as `name`; a miss lists what exists and a close match."""
    try:
        return DATASETS.get(name)
    except KeyError:
        raise DataError(
            f"data.dataset must name a registered dataset: {DATASETS.miss_message(name)}"
        ) from None
