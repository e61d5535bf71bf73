#!/usr/bin/env python3
"""Minimal reproducer, without the harness: deleting a tf.data iterator idles the machine for seconds.

An iterator over a small in-memory pipeline (shuffle, batch, prefetch) is consumed inside a
`tf.function`, one call per chunk of steps, for one "epoch" of a given length; then it is
deleted, as `Model.fit` and any custom loop that makes one iterator per epoch do. The deletion
is timed, with tf.data's autotuning on (the default) and off (`Options().autotune.enabled =
False`), interleaved over epochs.

With autotuning on, the deletion waits for the tuning loop's current sleep to end, and those
sleeps double (10 ms, 20 ms, ... up to a minute), so the wait is up to as long as the epoch has
run so far: the machine is idle meanwhile. With autotuning off the deletion takes a millisecond.
An iterator consumed eagerly (`next(iterator)` in Python) waits the same way.

    python scripts/repro_iterator_teardown.py [--epoch-s 6] [--epochs 3]

Prints each epoch's deletion time per variant; writes nothing. harness turns autotuning off
in its pipelines (`harness/data/pipeline.py`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS_PER_CALL = 16


def pipeline(x: np.ndarray, autotune: bool) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x)).repeat().batch(32).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = autotune
    return dataset.with_options(options)


def make_chunk() -> tf.types.experimental.GenericFunction:
    total = tf.Variable(0.0)
    weights = tf.Variable(tf.random.normal([256, 256]) * 0.01)

    @tf.function
    def chunk(iterator: tf.data.Iterator) -> None:
        for _ in tf.range(STEPS_PER_CALL):
            batch = next(iterator)
            product = tf.matmul(batch, weights)
            for _ in range(20):  # a step's worth of compute
                product = tf.matmul(product, weights)
            total.assign_add(tf.reduce_sum(product))

    return chunk


def epoch(x: np.ndarray, autotune: bool, chunk: tf.types.experimental.GenericFunction, seconds: float) -> float:
    """Consume a new iterator for `seconds`, then delete it; returns how long the deletion took."""
    iterator = iter(pipeline(x, autotune))
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk(iterator)
    deleting = time.perf_counter()
    del iterator
    return time.perf_counter() - deleting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epoch-s", type=float, default=6.0, help="how long each iterator is consumed")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant")
    args = parser.parse_args(argv)
    x = np.random.default_rng(0).normal(size=(8192, 256)).astype(np.float32)
    chunk = make_chunk()
    waits: dict[str, list[float]] = {"autotune on": [], "autotune off": []}
    print(f"TensorFlow {tf.__version__}; each iterator consumed for {args.epoch_s:g} s inside a tf.function")
    for number in range(args.epochs):
        for name in waits if number % 2 == 0 else reversed(waits):
            waits[name].append(epoch(x, name == "autotune on", chunk, args.epoch_s))
            print(f"epoch {number + 1}, {name}: deleting the iterator took {waits[name][-1]:.3f} s", flush=True)
    for name, values in waits.items():
        print(f"{name}: median {statistics.median(values):.3f} s idle per epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
