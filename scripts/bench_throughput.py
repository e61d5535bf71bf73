#!/usr/bin/env python3
"""Training throughput: the harness loop against `keras.Model.fit`, same model, data and batch.

Both run in one process, interleaved (the order alternates every repeat) because this kind of
machine is noisy; each run's figure is the median samples/s of its epochs after the first
(which includes tracing and compilation). The result is the median of the pairwise ratios.

Samples/s counts the training steps only. The second table is the whole epoch as a user waits
for it (steps, validation, and what happens between epochs), from one epoch's start to the
next's: the harness loop against `Model.fit` with validation data, once on harness's pipeline and
once on the textbook `tf.data` pipeline (`from_tensor_slices`, `shuffle`, `batch`,
`prefetch(AUTOTUNE)`), whose autotuning makes every epoch end with an idle wait
(`scripts/repro_iterator_teardown.py`).

    python scripts/bench_throughput.py [--repeats 5] [--epochs 4] [--samples 8192]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from benchlib import (
    ROOT,
    add_output_arguments,
    machine_suffix,
    machine_words,
    markers,
    provenance,
    provenance_line,
    publish,
    section_name,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from harness.config import load_config  # noqa: E402
from harness.data import make_dataset, prepare_data  # noqa: E402
from harness.distribute import make_strategy  # noqa: E402
from harness.models import build_model  # noqa: E402
from harness.train.loop import Trainer, make_optimizer  # noqa: E402

NAME = "bench_throughput"


def bench_config(args: argparse.Namespace, xla: bool = False) -> Any:
    """The workload; with `xla` the step is compiled by XLA, which has no deterministic MaxPool
    gradient, so run.deterministic is false for every contender."""
    return load_config(
        ROOT / "configs" / "synthetic_images.yaml",
        [
            f"data.synthetic.samples={args.samples}",
            f"training.epochs={args.epochs}",
            f"training.batch_size={args.batch_size}",
            f"training.steps_per_execution={args.steps_per_execution}",
            "training.progress=none",
            "training.schedule.name=constant",
            "run.deterministic=false",
            # one device, as Model.fit uses: `auto` would train on every GPU of a GPU node
            "distribute.strategy=single",
            f"training.jit_compile={'true' if xla else 'false'}",
        ],
    )


class EpochTimer(keras.callbacks.Callback):
    """Each epoch's steps (begin to end, as `fit` reports them) and its whole wall time (begin to
    the next epoch's begin, or to the end of training)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.starts: list[float] = []
        self.finished = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.starts.append(time.perf_counter())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.times.append(time.perf_counter() - self.starts[-1])

    def on_train_end(self, logs: dict | None = None) -> None:
        self.finished = time.perf_counter()

    def steady_wall_s(self) -> float:
        """Median wall seconds of an epoch after the first."""
        edges = [*self.starts, self.finished]
        return statistics.median(b - a for a, b in zip(edges[1:-1], edges[2:], strict=True))


def run_harness(config: Any, data: Any) -> dict[str, float]:
    """Steady-state samples/s of the harness loop (median over epochs after the first), and its
    epochs' wall time (validation included)."""
    keras.backend.clear_session()
    timer = EpochTimer()
    trainer = Trainer(config, data, make_strategy(config.distribute), callbacks=[timer])
    history = trainer.fit().history
    return {"rate": statistics.median(line["samples_per_s"] for line in history[1:]), "wall": timer.steady_wall_s()}


def textbook_dataset(x: Any, y: Any, batch: int, shuffle: bool) -> tf.data.Dataset:
    """The pipeline of TensorFlow's tutorials, autotuning on (its default)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x))
    return dataset.batch(batch).prefetch(tf.data.AUTOTUNE)


def run_fit(config: Any, data: Any, steps_per_execution: int, validation: str = "") -> dict[str, float]:
    """Steady-state samples/s of `Model.fit` on the same pipeline, model and optimizer, and its
    epochs' wall time. `validation`: "" (none), "harness" or "textbook" (which pipeline feeds both
    the training and the validation data)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.run.seed)
    model = build_model(config.model, input_shape=data.input_shape, num_outputs=data.num_outputs, task=data.task)
    model.compile(
        optimizer=make_optimizer(config.training.optimizer, config.training.optimizer.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    batch = config.training.batch_size
    if validation == "textbook":
        dataset = textbook_dataset(data.x_train, data.y_train, batch, shuffle=True)
        held_out = textbook_dataset(data.x_val, data.y_val, batch, shuffle=False)
    else:
        dataset = make_dataset(data.x_train, data.y_train, batch, shuffle_seed=config.run.seed)
        held_out = make_dataset(data.x_val, data.y_val, batch) if validation else None
    timer = EpochTimer()
    model.fit(dataset, validation_data=held_out, epochs=config.training.epochs, verbose=0, callbacks=[timer])
    return {"rate": statistics.median(len(data.x_train) / t for t in timer.times[1:]), "wall": timer.steady_wall_s()}


WHOLE_EPOCH = {
    # contender: label - the whole epoch, validation included
    "harness": "harness loop",
    "fit_val": "`Model.fit` with validation data, harness's pipeline",
    "fit_textbook": "`Model.fit` with validation data, the textbook `tf.data` pipeline",
}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    config = bench_config(args)
    data = prepare_data(config.data, config.run.seed)
    spe = args.steps_per_execution
    contenders = {
        "harness": lambda: run_harness(config, data),
        "harness_xla": lambda: run_harness(bench_config(args, xla=True), data),
        "fit": lambda: run_fit(config, data, 1),
        "fit_spe": lambda: run_fit(config, data, spe),
        "fit_val": lambda: run_fit(config, data, spe, validation="harness"),
        "fit_textbook": lambda: run_fit(config, data, spe, validation="textbook"),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        order = list(contenders) if repeat % 2 == 0 else list(reversed(contenders))
        for name in order:
            runs[name].append(contenders[name]())
        print(
            f"repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{n}={runs[n][-1]['rate']:.0f}/s {runs[n][-1]['wall']:.2f}s/epoch" for n in contenders),
            flush=True,
        )
    results = {name: [run["rate"] for run in values] for name, values in runs.items()}
    walls = {name: [run["wall"] for run in values] for name, values in runs.items() if name in WHOLE_EPOCH}

    def ratios(num: list[float], den: list[float]) -> list[float]:
        return [a / b for a, b in zip(num, den, strict=True)]

    ratio_fit = ratios(results["harness"], results["fit"])
    ratio_spe = ratios(results["harness"], results["fit_spe"])
    ratio_xla = ratios(results["harness_xla"], results["harness"])
    # how many times longer an epoch takes than harness's
    wall_ratios = {name: ratios(walls[name], walls["harness"]) for name in walls}
    return {
        "config": config,
        "n_train": len(data.x_train),
        "results": results,
        "walls": walls,
        "wall_ratios": wall_ratios,
        "ratio_fit": statistics.median(ratio_fit),
        "ratio_fit_spe": statistics.median(ratio_spe),
        "ratios_fit": ratio_fit,
        "ratios_fit_spe": ratio_spe,
        "ratio_xla": statistics.median(ratio_xla),
        "ratios_xla": ratio_xla,
        "provenance": provenance(),
    }


def xla_advice(ratio: float) -> str:
    """What to do with training.jit_compile, from the measured ratio (±5% is noise here)."""
    if ratio >= 1.05:
        return "XLA is faster for this model: turn it on (with run.deterministic=false)."
    if ratio <= 0.95:
        return "XLA is slower for this model here: leave it off."
    return "no clear difference: leave XLA off unless your own model measures faster with it."


def markdown(summary: dict[str, Any], args: argparse.Namespace, section: str) -> str:
    """The section `section` of docs/benchmarks.md, markers included."""
    config = summary["config"]
    res = summary["results"]
    med = {name: statistics.median(values) for name, values in res.items()}
    begin, end = markers(section)
    lines = [
        begin,
        f"## Training loop vs `keras.Model.fit`{machine_suffix(summary)} (scripts/bench_throughput.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_words(summary)}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}. Workload: `configs/synthetic_images.yaml` "
        f"(small CNN, {summary['n_train']} training images 32x32x3, batch {config.training.batch_size}), "
        f"{args.epochs} epochs per run, the first epoch (tracing) excluded, "
        f"{args.repeats} interleaved repeats.",
        "",
        provenance_line(summary["provenance"]),
        "",
        "| contender | median samples/s | all runs |",
        "|---|---|---|",
        f"| harness loop (steps_per_execution={args.steps_per_execution}) | {med['harness']:.0f} | "
        + ", ".join(f"{v:.0f}" for v in res["harness"])
        + " |",
        "| harness loop with XLA (`training.jit_compile=true`, `run.deterministic=false`) | "
        f"{med['harness_xla']:.0f} | " + ", ".join(f"{v:.0f}" for v in res["harness_xla"]) + " |",
        f"| `Model.fit` (default steps_per_execution=1) | {med['fit']:.0f} | "
        + ", ".join(f"{v:.0f}" for v in res["fit"])
        + " |",
        f"| `Model.fit` (steps_per_execution={args.steps_per_execution}) | {med['fit_spe']:.0f} | "
        + ", ".join(f"{v:.0f}" for v in res["fit_spe"])
        + " |",
        "",
        f"**harness / fit = {summary['ratio_fit']:.2f}** (median of pairwise ratios: "
        + ", ".join(f"{r:.2f}" for r in summary["ratios_fit"])
        + ")  ",
        f"harness / fit with the same steps_per_execution = {summary['ratio_fit_spe']:.2f} ("
        + ", ".join(f"{r:.2f}" for r in summary["ratios_fit_spe"])
        + ")  ",
        f"harness with XLA / without = {summary['ratio_xla']:.2f} ("
        + ", ".join(f"{r:.2f}" for r in summary["ratios_xla"])
        + "): "
        + xla_advice(summary["ratio_xla"]),
        "",
        "The harness loop also validates every epoch and reads its metrics once per compiled chunk; "
        "`fit` here runs without validation data.",
        "",
        *whole_epoch_table(summary),
        end,
    ]
    return "\n".join(lines) + "\n"


def whole_epoch_table(summary: dict[str, Any]) -> list[str]:
    """The whole epoch as a user waits for it: seconds from one epoch's start to the next's."""
    walls, ratios = summary.get("walls"), summary.get("wall_ratios")
    if not walls:
        return []
    return [
        "The whole epoch, validation and the time between epochs included (seconds from one "
        "epoch's start to the next's, epochs after the first):",
        "",
        "| contender | median s per epoch | all runs | time / harness's time (median of pairs) |",
        "|---|---|---|---|",
        *(
            f"| {WHOLE_EPOCH[name]} | {statistics.median(values):.2f} | "
            + ", ".join(f"{v:.2f}" for v in values)
            + f" | **{statistics.median(ratios[name]):.2f}** |"
            for name, values in walls.items()
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps-per-execution", type=int, default=32)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    summary = measure(args)
    section = section_name(NAME, summary)
    publish(section, markdown(summary, args, section), None if args.no_write else args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
