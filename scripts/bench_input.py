#!/usr/bin/env python3
"""The input side of an epoch over in-memory data: the harness pipeline against plain tf.data.

A training run over arrays held in memory builds one pipeline per epoch (a new shuffle) and
reads every batch. This measures exactly that, without a model, for the benchmark's data size
and for CIFAR-10's (50000 images of 32x32x3), each contender in its own process so its peak
memory is its own:

  harness    `harness.data.make_step_dataset` over the tensors the training loop keeps for the
             run (`in_memory`), a new pipeline per epoch, as `harness train` does
  previous   the same function given the NumPy arrays each epoch, with tf.data's default graph
             rewrite on: the harness pipeline before it kept its tensors and turned the rewrite off
  tf.data    the textbook pipeline, `from_tensor_slices((x, y)).shuffle(n).batch(b).prefetch()`,
             built once and iterated once per epoch (what `model.fit(dataset)` does with it)

Per run: the median seconds of the epochs after the first (from asking for the pipeline to
its last batch), and the peak resident memory over the data's own size. Contenders are
interleaved (the order alternates every repeat: this kind of machine is noisy).

    python scripts/bench_input.py [--repeats 3] [--samples 8192 50000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    add_output_arguments,
    close_section,
    load_average,
    machine_suffix,
    markers,
    measure_and_publish,
    provenance,
    provenance_line,
    source_version,
)

NAME = "bench_input"
CONTENDERS = ("harness", "previous", "tf.data")
RESULT = "BENCH_INPUT_RESULT"


def one_run(contender: str, samples: int, batch: int, epochs: int) -> dict[str, float]:
    """In this process: `epochs` epochs of `contender`'s pipeline; seconds per epoch and peak memory."""
    import numpy as np
    import tensorflow as tf

    from harness.data import in_memory, make_step_dataset

    rng = np.random.default_rng(0)
    x = rng.random((samples, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, samples).astype(np.int64)
    for _ in tf.data.Dataset.range(2).map(lambda v: v + 1):
        pass  # TensorFlow's own start-up memory, before the base line
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept = in_memory(x, y) if contender == "harness" else None
    textbook = (
        tf.data.Dataset.from_tensor_slices((x, y)).shuffle(samples, seed=0).batch(batch).prefetch(tf.data.AUTOTUNE)
        if contender == "tf.data"
        else None
    )
    rewrite = tf.data.Options()
    rewrite.experimental_optimization.apply_default_optimizations = True
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        if contender == "harness":
            dataset = make_step_dataset(*kept, batch, shuffle_seed=epoch)
        elif contender == "previous":
            dataset = make_step_dataset(x, y, batch, shuffle_seed=epoch).with_options(rewrite)
        else:
            dataset = textbook
        for _ in dataset:
            pass
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"epoch_s": statistics.median(times[1:]), "extra_peak": (peak - base) * 1024 / x.nbytes}


def run_once(contender: str, samples: int, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--one", contender, str(samples), str(args.batch_size), str(args.epochs)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{contender} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len(RESULT) :]))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {f"{n}:{c}": [] for n in args.samples for c in CONTENDERS}
    loads = [load_average()]
    for repeat in range(args.repeats):
        order = [(n, c) for n in args.samples for c in CONTENDERS]
        for samples, contender in order if repeat % 2 == 0 else reversed(order):
            result = run_once(contender, samples, args)
            runs[f"{samples}:{contender}"].append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} {samples} samples, {contender}: {result['epoch_s']:.3f} s "
                f"per epoch, peak +{result['extra_peak']:.2f}x the data",
                flush=True,
            )
        loads.append(load_average())
    return {
        "runs": runs,
        "loads": loads,
        "date": time.strftime("%Y-%m-%d"),
        "source": source_version(),
        "settings": {"repeats": args.repeats, "epochs": args.epochs, "batch": args.batch_size},
        "provenance": provenance(),
    }


LABELS = {
    "harness": "harness (`make_step_dataset` over the run's tensors)",
    "previous": "previous harness pipeline (arrays each epoch, default rewrite)",
    "tf.data": "textbook tf.data (`from_tensor_slices((x, y)).shuffle(n).batch(b)`)",
}


def markdown(measured: dict[str, Any], analysis: Path | None = None, section: str = NAME) -> str:
    begin, end = markers(section)
    cfg = measured["settings"]
    sizes = sorted({int(key.split(":")[0]) for key in measured["runs"]})
    lines = [
        begin,
        f"## The input side of an epoch over in-memory data{machine_suffix(measured)} (scripts/bench_input.py)",
        "",
        f"Measured {measured['date']} (harness {measured['source']}). Random 32x32x3 float32 images, batch "
        f"{cfg['batch']}, {cfg['epochs']} epochs per run (a new pipeline per epoch, every batch read, no model), "
        f"the first excluded; {cfg['repeats']} interleaved repeats, each run in its own process. Load average "
        f"before and after each repeat: {' | '.join(measured['loads'])}.",
        "",
        provenance_line(measured.get("provenance")),
        "",
        "| images (data size) | contender | s per epoch | per repeat | peak memory above the start, x the data |",
        "|---|---|---|---|---|",
    ]
    for samples in sizes:
        mib = samples * 32 * 32 * 3 * 4 / 2**20
        for contender in CONTENDERS:
            runs = measured["runs"][f"{samples}:{contender}"]
            seconds = [r["epoch_s"] for r in runs]
            peak = statistics.median(r["extra_peak"] for r in runs)
            lines.append(
                f"| {samples} ({mib:.0f} MiB) | {LABELS[contender]} | **{statistics.median(seconds):.3f}** | "
                f"{', '.join(f'{s:.3f}' for s in seconds)} | {peak:.2f} |"
            )
    return close_section(lines, analysis, end)


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        result = one_run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        print(RESULT + json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, nargs="+", default=[8192, 50000])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is stopped")
    add_output_arguments(parser, "timings")
    args = parser.parse_args()
    return measure_and_publish(NAME, args, measure, markdown)


if __name__ == "__main__":
    sys.exit(main())
