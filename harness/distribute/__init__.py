"""One small Strategy interface over tf.distribute and Horovod.

The training loop talks only to `Strategy`, so a new backend plugs in without touching it.
The strategies import TensorFlow, so they load on first use: the launcher, the cluster parsers
and `harness submit` live in this package too and must start in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.distribute.strategy import STRATEGIES, Strategy, TFStrategy, make_strategy

__all__ = ["STRATEGIES", "Strategy", "TFStrategy", "make_strategy"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from harness.distribute import strategy

        return getattr(strategy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
