"""tf.data input pipelines over in-memory arrays, built on sample indices.

The pipeline shuffles and shards integers, then gathers whole batches from two in-memory
tensors with one `tf.gather` each: no per-sample Python and no per-sample ops, which keeps a
custom training loop's input side as fast as `model.fit` on NumPy arrays.

The arrays become tensors once (`in_memory`; the training loop keeps them for the whole run),
and tf.data's default graph rewrite is off: it runs every time an iterator is made, and it
copies every tensor the pipeline captures into a graph, so with the data captured it cost each
epoch seconds and several copies of the data (CIFAR-10's 586 MiB: 3.8 s per epoch; 2.3 GiB of
images: 18 s per epoch and a 15 GiB peak; docs/benchmarks.md). The one rewrite that matters
here, running the gather in parallel, is asked for directly.

tf.data's autotuning is off too, with fixed, small parallelism and prefetch instead. With it on,
deleting an iterator, as the training loop does at the end of every epoch (consumed inside a
`tf.function` or eagerly, alike), waits idle until the tuning loop's next round, and the rounds
grow twice as far apart each time, up to a minute: the machine sat idle for 3 s after every 6 s
epoch of the benchmark CNN, and longer epochs wait longer (docs/benchmarks.md,
scripts/repro_iterator_teardown.py). A gather is a memory copy; two in flight and two batches
ready keep up with any device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    Array: TypeAlias = np.ndarray | tf.Tensor  # in-memory data; a tensor is used without a copy


def sample_order(n: int, shuffle_seed: int | None = None, shard: tuple[int, int] | None = None) -> np.ndarray:
    """The sample indices one epoch visits, in order: a seeded permutation, then this shard's share.

    The permutation is a pure function of (n, shuffle_seed), independent of TensorFlow's global
    seed, so every rank computes the same one (shards of it are disjoint and cover every sample)
    and a resumed run replays exactly the order of an uninterrupted one. Shard `(index, count)`
    keeps every count-th position starting at index; shard sizes differ by at most one.
    """
    if shuffle_seed is None:
        order = np.arange(n, dtype=np.int64)
    else:
        order = np.random.default_rng(shuffle_seed).permutation(n).astype(np.int64)
    if shard is None:
        return order
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"`shard` must be (index, count) with 0 <= index < count. Received: shard={shard}")
    return order[index::count]


def make_dataset(
    x: Array,
    y: Array,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    shard: tuple[int, int] | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of (x, y) for one epoch; pass a new `shuffle_seed` per epoch (e.g. seed + epoch).

    With `shard`, the dataset's auto-sharding is switched off: the indices are already this
    rank's share, and a distribution strategy sharding again would drop data. Ranks can get a
    different number of batches (shards differ by one sample) unless `drop_remainder` is set.
    TensorFlow is imported here so that importing `harness.data` stays cheap for the CLI.
    """
    import tensorflow as tf

    if len(x) != len(y):
        raise ValueError(f"`x` and `y` must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size}")
    order = sample_order(len(x), shuffle_seed, shard)
    features, targets = in_memory(x, y)
    dataset = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
    return _gathered(
        dataset, lambda idx: (tf.gather(features, idx), tf.gather(targets, idx)), sharded=shard is not None
    )


def make_predict_dataset(x: Array, batch_size: int) -> tf.data.Dataset:
    """Batches of `x` alone, in order, for predictions: the same gathers and options as training,
    so a prediction's iterator neither copies the data nor waits out tf.data's tuning when deleted."""
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size}")
    with tf.device("/CPU:0"):
        features = tf.convert_to_tensor(x)
    dataset = tf.data.Dataset.range(len(x)).batch(batch_size)
    return _gathered(dataset, lambda idx: tf.gather(features, idx), sharded=False)


def in_memory(x: Array, y: Array) -> tuple[tf.Tensor, tf.Tensor]:
    """`x` and `y` as tensors in host memory; tensors there already are used as they are (no copy)."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        return tf.convert_to_tensor(x), tf.convert_to_tensor(y)


GATHERS_IN_FLIGHT = 2
BATCHES_AHEAD = 2


def _gathered(indices: tf.data.Dataset, gather: Callable[..., Any], *, sharded: bool) -> tf.data.Dataset:
    """The tail every pipeline shares: batches gathered from host memory in order, a fixed number
    in flight and ahead, under `_options`."""
    dataset = indices.map(gather, num_parallel_calls=GATHERS_IN_FLIGHT, deterministic=True)
    return dataset.with_options(_options(sharded=sharded)).prefetch(BATCHES_AHEAD)


def _options(sharded: bool) -> tf.data.Options:
    """No default graph rewrite and no autotuning (see the module's docstring); no auto-sharding
    of a rank's own share."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    if sharded:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def step_layout(
    n: int, local_batch: int, world: int, rank: int, shuffle_seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """This rank's sample indices and loss weights for every step of one epoch.

    All ranks walk one seeded permutation in global batches of `local_batch * world` samples;
    rank r takes every world-th sample of each global batch, so a step's global batch is the
    same set of samples whatever the number of ranks. The last, shorter global batch is padded
    with index 0 and weight 0, so every rank runs the same number of steps (no collective waits
    for a rank that ran out) and no sample counts twice. A real sample's weight is one over the
    number of real samples in its global batch: summing weighted losses over all replicas gives
    the global mean, exactly as one process with the whole global batch would.
    Returns int64 indices and float32 weights, both of shape (steps, local_batch).
    """
    global_batch = local_batch * world
    steps = max(1, -(-n // global_batch))
    order = np.full(steps * global_batch, -1, dtype=np.int64)
    order[:n] = sample_order(n, shuffle_seed)
    rows = order.reshape(steps, global_batch)
    real = (rows >= 0).sum(axis=1, keepdims=True).astype(np.float32)
    mine = rows[:, rank::world]
    weights = np.where(mine >= 0, 1.0 / np.maximum(real, 1.0), 0.0).astype(np.float32)
    return np.maximum(mine, 0), weights


def make_step_dataset(
    x: Array,
    y: Array,
    local_batch: int,
    *,
    world: int = 1,
    rank: int = 0,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of (x, y, weight) following `step_layout`, for the training loop.

    Auto-sharding is off: the batches are already this rank's share.
    """
    import tensorflow as tf

    indices, weights = step_layout(len(x), local_batch, world, rank, shuffle_seed)
    features, targets = in_memory(x, y)
    dataset = tf.data.Dataset.from_tensor_slices((indices, weights))
    return _gathered(dataset, lambda idx, w: (tf.gather(features, idx), tf.gather(targets, idx), w), sharded=True)
