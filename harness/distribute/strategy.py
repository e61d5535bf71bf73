"""Strategies: where replicas run, how gradients are combined, which rank is the chief."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from harness.config import DistributeConfig
from harness.errors import ConfigError
from harness.registry import Registry


class Strategy(ABC):
    """What the training loop needs from a parallel backend, and nothing more."""

    name: str

    @property
    @abstractmethod
    def num_replicas(self) -> int:
        """Replicas taking part in one optimizer step (devices x processes)."""

    @property
    def rank(self) -> int:
        """This process's index among the worker processes."""
        return 0

    @property
    def world_size(self) -> int:
        """Number of worker processes."""
        return 1

    @property
    def is_chief(self) -> bool:
        """Only the chief writes checkpoints, metrics and reports."""
        return self.rank == 0

    @abstractmethod
    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which model and optimizer variables must be created."""

    @abstractmethod
    def distribute(self, dataset: tf.data.Dataset) -> Any:
        """Turn a per-process dataset into what `run` consumes."""

    @abstractmethod
    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run `fn` on every local replica."""

    @abstractmethod
    def sum(self, value: Any) -> tf.Tensor:
        """Sum a per-replica value over all replicas of all processes."""

    def aggregate_gradients(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """Combine gradients across processes; tf.distribute does it inside the optimizer."""
        return grads

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "replicas": self.num_replicas,
            "rank": self.rank,
            "world_size": self.world_size,
        }


class TFStrategy(Strategy):
    """Any tf.distribute strategy; the default one runs on a single device."""

    def __init__(self, name: str, strategy: tf.distribute.Strategy) -> None:
        self.name = name
        self._strategy = strategy

    @property
    def num_replicas(self) -> int:
        return int(self._strategy.num_replicas_in_sync)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self._strategy.scope()

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        return self._strategy.experimental_distribute_dataset(dataset)

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return self._strategy.run(fn, args=args)

    def sum(self, value: Any) -> tf.Tensor:
        return self._strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)


STRATEGIES: Registry[Callable[[DistributeConfig], Strategy]] = Registry("strategy")


@STRATEGIES.register("single")
def _single(cfg: DistributeConfig) -> Strategy:
    return TFStrategy("single", tf.distribute.get_strategy())


@STRATEGIES.register("auto")
def _auto(cfg: DistributeConfig) -> Strategy:
    return _single(cfg)


def make_strategy(cfg: DistributeConfig) -> Strategy:
    """Build the configured strategy; an unknown name lists the known ones."""
    try:
        factory = STRATEGIES.get(cfg.strategy)
    except KeyError as err:
        raise ConfigError(f"distribute.strategy: {err.args[0]}") from None
    return factory(cfg)
