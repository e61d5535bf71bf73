#!/usr/bin/env python3
"""A plain Horovod training script: the reference that harness's Horovod path is measured against.

It trains the same small CNN on the same data as `configs/synthetic_images.yaml` the way the
Horovod documentation does it, without any of harness's machinery (no compiled multi-step
chunks, no step layout, no per-chunk metric reads, no validation): per-rank shard of a
`tf.data` pipeline over the in-memory arrays, a `tf.function` per step with a plain `tf.GradientTape` and
`hvd.grouped_allreduce(op=hvd.Average)` (the only Horovod route that works with Keras 3:
Horovod 0.28.1's Keras optimizer wrappers predate Keras 3), and a broadcast of model and
optimizer variables after the first step.
If harness scales worse than this, the difference is harness's own overhead.

    horovodrun -np 2 --gloo python scripts/plain_horovod_cnn.py [--epochs 4]

Rank 0 prints one line `PLAIN_HOROVOD_RESULT {json}` with per-epoch, per-worker samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import horovod.tensorflow as hvd  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchlib import pin_gpu  # noqa: E402

from harness.config import load_config  # noqa: E402
from harness.data import prepare_data  # noqa: E402
from harness.models import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "PLAIN_HOROVOD_RESULT"


def load_data(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """The training split harness would use (and its config), so both train on identical arrays."""
    config = load_config(ROOT / "configs" / "synthetic_images.yaml", [f"data.synthetic.samples={samples}"])
    data = prepare_data(config.data, seed)
    return data.x_train, data.y_train, config, data


def make_dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int, pipeline: str) -> tf.data.Dataset:
    """This rank's shard, reshuffled on every pass and repeated, as in Horovod's examples.

    The training loop takes a fixed number of batches per epoch from one iterator, so every
    rank runs the same number of steps (no rank waits in an allreduce for a peer that ran out
    of data) and no epoch waits for the end of an iterator: on a single pinned core, running
    a `tf.data` iterator to its end stalled for up to seconds, which is input plumbing, not the
    training cost this script is the yardstick for. harness's loop also runs a fixed number of
    steps over an iterator it never exhausts.

    `indices` (default) shuffles and batches sample indices and gathers each batch from
    in-memory tensors, which is how one feeds in-memory arrays without per-sample work; it
    keeps the input side from dominating one core, so the comparison with harness measures
    the distributed overhead. `elements` is the per-sample pipeline of Horovod's examples.
    """
    if pipeline == "elements":
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).shard(hvd.size(), hvd.rank())
        dataset = dataset.shuffle(4096, seed=seed + hvd.rank(), reshuffle_each_iteration=True)
        dataset = dataset.batch(batch, drop_remainder=True)
    else:
        features, targets = tf.constant(x), tf.constant(y)
        dataset = tf.data.Dataset.range(len(x)).shard(hvd.size(), hvd.rank())
        dataset = dataset.shuffle(len(x), seed=seed + hvd.rank(), reshuffle_each_iteration=True)
        dataset = dataset.batch(batch, drop_remainder=True)
        dataset = dataset.map(lambda idx: (tf.gather(features, idx), tf.gather(targets, idx)))
    return dataset.repeat().prefetch(tf.data.AUTOTUNE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--samples", type=int, default=8192, help="data.synthetic.samples")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pipeline", choices=("indices", "elements"), default="indices")
    args = parser.parse_args(argv)

    hvd.init()
    pin_gpu(hvd.local_rank())
    keras.utils.set_random_seed(args.seed)
    x, y, config, data = load_data(args.samples, args.seed)
    steps = (len(x) // hvd.size()) // args.batch_size
    batches = iter(make_dataset(x, y, args.batch_size, args.seed, args.pipeline))

    model = build_model(config.model, input_shape=data.input_shape, num_outputs=data.num_outputs, task=data.task)
    optimizer = keras.optimizers.Adam(learning_rate=args.learning_rate)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = hvd.grouped_allreduce(grads, op=hvd.Average)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    if hvd.rank() == 0:
        print(
            f"starting: {len(x)} training samples, {hvd.size()} worker(s), batch {args.batch_size} per worker, "
            f"{steps} steps per epoch",
            flush=True,
        )
    per_worker: list[float] = []
    epoch_times: list[float] = []
    loss = tf.constant(0.0)
    for epoch in range(args.epochs):
        started = time.perf_counter()
        for step in range(steps):
            images, labels = next(batches)
            loss = train_step(images, labels)
            if epoch == 0 and step == 0:
                hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
                hvd.broadcast_variables([v.value for v in optimizer.variables], root_rank=0)
        # Waits for every rank's last step, as harness's per-chunk metric read does.
        final_loss = float(hvd.allreduce(loss, op=hvd.Average, name="epoch_loss"))
        elapsed = time.perf_counter() - started
        epoch_times.append(elapsed)
        per_worker.append(steps * args.batch_size / elapsed)
        if hvd.rank() == 0:
            print(
                f"epoch {epoch + 1}/{args.epochs} loss={final_loss:.4f} epoch_time_s={elapsed:.2f} "
                f"samples_per_s_per_worker={per_worker[-1]:.0f}",
                flush=True,
            )
    if hvd.rank() == 0:
        result = {
            "workers": hvd.size(),
            "per_worker_samples_per_s": per_worker,
            "epoch_time_s": epoch_times,
            "steady_per_worker_samples_per_s": statistics.median(per_worker[1:] or per_worker),
        }
        print(f"{RESULT_TAG} {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
