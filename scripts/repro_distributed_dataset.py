#!/usr/bin/env python3
"""Minimal reproducer, without the harness: does a tf.distribute dataset slow a CPU step down?

On a GPU node the same question for one GPU: every variant sees only the first GPU it may use,
so a strategy never spreads the step over several devices while the figures count one device's
samples.

The same Keras CNN and the same compiled loop (K steps per `tf.function` call, batch 32) run
under several variants, each in a fresh process (a MultiWorkerMirroredStrategy can be created
once per process), interleaved over repeats:

- `none`: no strategy, a plain `tf.data` iterator;
- `default`: the default strategy's scope and `run`, a plain iterator;
- `onedevice-dist` / `onedevice-dfn` / `onedevice-plain`: `OneDeviceStrategy` (the CPU, or GPU 0) with the
  dataset through `experimental_distribute_dataset`, through `distribute_datasets_from_function`,
  or as a plain iterator consumed inside `strategy.run`;
- `mwms-dist` / `mwms-dfn` / `mwms-plain`: the same with a one-worker MultiWorkerMirroredStrategy.

    python scripts/repro_distributed_dataset.py [--repeats 3] [--steps 32] [--chunks 30] [--threads 1]
    python scripts/repro_distributed_dataset.py --variant mwms-dfn       # one variant, one process

Prints samples/s per run, the median per variant and the median of per-repeat ratios to `none`.
With `--dump DIR` a run also writes its graphs after Grappler (TF_DUMP_GRAPH_PREFIX) there, and
with `--profile DIR` a TensorFlow profiler trace of two chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

VARIANTS = (
    "none",
    "default",
    "onedevice-dist",
    "onedevice-dfn",
    "onedevice-plain",
    "mwms-dist",
    "mwms-dfn",
    "mwms-plain",
)


def make_strategy(variant: str) -> Any:
    import tensorflow as tf

    family = variant.split("-")[0]
    if family == "none":
        return None
    if family == "default":
        return tf.distribute.get_strategy()
    if family == "onedevice":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
    return tf.distribute.MultiWorkerMirroredStrategy()


def make_model(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def make_iterator(tf: Any, strategy: Any, variant: str, batch: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((4096, 32, 32, 3), np.float32)
    y = rng.integers(0, 10, 4096).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    if variant.endswith("-dist"):
        return iter(strategy.experimental_distribute_dataset(dataset))
    if variant.endswith("-dfn"):
        return iter(strategy.distribute_datasets_from_function(lambda _: dataset))
    return iter(dataset)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant in this process; steady-state samples/s over `--chunks` chunks."""
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        os.environ["TF_DUMP_GRAPH_PREFIX"] = args.dump
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.set_visible_devices(gpus[0], "GPU")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    strategy = make_strategy(args.variant)
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        model = make_model(keras)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    iterator = make_iterator(tf, strategy, args.variant, args.batch)

    def replica_step(x: Any, y: Any) -> None:
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)), global_batch_size=args.batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    @tf.function
    def chunk(iterator: Any, steps: Any) -> None:
        for _ in tf.range(steps):
            x, y = next(iterator)
            if strategy is None:
                replica_step(x, y)
            else:
                strategy.run(replica_step, args=(x, y))

    steps = tf.constant(args.steps, tf.int64)
    for _ in range(3):  # trace, then warm up
        chunk(iterator, steps)
    _ = float(optimizer.iterations.numpy())
    if args.dump:
        write_graphs(tf, chunk, iterator, steps, args.dump)
    if args.profile:
        tf.profiler.experimental.start(os.path.join(args.profile, args.variant))
        for _ in range(2):
            chunk(iterator, steps)
        _ = float(optimizer.iterations.numpy())
        tf.profiler.experimental.stop()
    before = thread_cpu_seconds()
    started = time.perf_counter()
    for _ in range(args.chunks):
        chunk(iterator, steps)
    _ = float(optimizer.iterations.numpy())  # wait for the device
    elapsed = time.perf_counter() - started
    after = thread_cpu_seconds()
    cpu = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    return {
        "variant": args.variant,
        "samples_per_s": args.chunks * args.steps * args.batch / elapsed,
        "wall_s": round(elapsed, 2),
        "cpu_s_by_thread": {name: seconds for name, seconds in sorted(cpu.items()) if seconds >= 0.01},
    }


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) per thread name of this process, from /proc (Linux only)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{task}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue  # the thread ended
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def write_graphs(tf: Any, chunk: Any, iterator: Any, steps: Any, folder: str) -> None:
    """The chunk's graphs after Grappler and partitioning (RunMetadata), with an op-type census."""
    from collections import Counter

    from tensorflow.python.eager import context

    os.makedirs(folder, exist_ok=True)
    context.context().enable_run_metadata()
    chunk(iterator, steps)
    metadata = context.context().export_run_metadata()
    context.context().disable_run_metadata()
    census: Counter[str] = Counter()
    for i, graphs in enumerate(metadata.function_graphs):
        for kind in ("pre_optimization_graph", "post_optimization_graph"):
            graph = getattr(graphs, kind)
            with open(os.path.join(folder, f"{i}_{kind}.pbtxt"), "w") as out:
                out.write(str(graph))
        for j, graph in enumerate(graphs.partition_graphs):
            with open(os.path.join(folder, f"{i}_partition_{j}.pbtxt"), "w") as out:
                out.write(str(graph))
            nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
            census.update(f"{n.op} @{n.device.split('/')[-1] if n.device else '-'}" for n in nodes)
    with open(os.path.join(folder, "census.txt"), "w") as out:
        out.writelines(f"{count:5d} {op}\n" for op, count in sorted(census.items()))


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def spawn(variant: str, args: argparse.Namespace) -> float:
    command = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--steps",
        str(args.steps),
        "--chunks",
        str(args.chunks),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(args.threads)}
    env.pop("TF_CONFIG", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return float(json.loads(line)["samples_per_s"])
    raise RuntimeError(f"variant {variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, help="run this one variant in this process")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, for the interleaved run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32, help="steps per tf.function call")
    parser.add_argument("--chunks", type=int, default=30, help="timed calls per run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="TF intra- and inter-op threads")
    parser.add_argument("--dump", help="directory for graph dumps (with --variant)")
    parser.add_argument("--profile", help="directory for a profiler trace (with --variant)")
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(run_one(args)), flush=True)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[float]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for variant in order:
            results[variant].append(spawn(variant, args))
            print(f"repeat {repeat + 1} {variant}: {results[variant][-1]:.0f} samples/s", flush=True)
    base = results.get("none")
    print(f"\n{'variant':<17} {'median samples/s':>16}  {'/ none':>6}  runs")
    for variant, values in results.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True)) if base else float("nan")
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{variant:<17} {statistics.median(values):>16.0f}  {ratio:>6.2f}  {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
