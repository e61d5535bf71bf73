"""One small Strategy interface over tf.distribute (and, later, Horovod).

The training loop talks only to `Strategy`, so a new backend plugs in without touching it.
"""

from harness.distribute.strategy import STRATEGIES, Strategy, TFStrategy, make_strategy

__all__ = ["STRATEGIES", "Strategy", "TFStrategy", "make_strategy"]
