#!/usr/bin/env python3
"""Weak scaling of harness's data-parallel paths, against a plain Horovod script on the same machine.

On CPU nodes every worker gets one core and one TensorFlow thread, so two workers on a two-core
machine is the same experiment as two single-core nodes; on GPU nodes every worker gets one GPU
and an equal share of the cores (benchlib.Layout): ideal weak scaling keeps per-worker samples/s
constant (efficiency 1.0). What is lost goes to gradient all-reduce, synchronisation and
whatever the framework adds per step. `scripts/plain_horovod_cnn.py` is the yardstick: the
issue asks that harness's Horovod path never scale worse than plain Horovod code.

All training runs go through the real CLI (`python -m harness train ... --workers N`), and the
figures come from the run's metrics.jsonl: `samples_per_s` there is the chief's global rate
(all ranks), so per-worker = samples_per_s / N. Epoch 1 (tracing) is excluded. The machine is
noisy, so contenders are interleaved (order alternating each repeat) and every ratio is the
median of per-repeat ratios.

Contenders (1 worker / 2 workers):
  harness multiworker  single strategy, 1 process / `--workers 2 distribute.strategy=multiworker`
  harness horovod      single strategy, 1 process / `--workers 2 distribute.strategy=horovod` (Gloo)
  plain Horovod        `horovodrun -np 1 --gloo` / `horovodrun -np 2 --gloo` plain_horovod_cnn.py
plus, to separate Horovod's own per-step cost from harness's: harness horovod under
`horovodrun -np 1 --gloo`, and multiworker in one process; each two-worker path with
`distribute.gradient_compression=fp16` (`*_2_fp16`); and, only when named, two diagnostics that
replace multiworker's gradient all-reduce to split its cost into waiting and moving bytes
(`multiworker_2_noreduce`, `multiworker_2_scalar`; scripts/diagnostics/allreduce).

    python scripts/bench_scaling.py [--repeats 3] [--epochs 4] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    THREAD_SETTINGS,
    Layout,
    add_output_arguments,
    close_section,
    load_average,
    machine_suffix,
    machine_words,
    markers,
    node_layout,
    pinning_env,
    provenance,
    provenance_line,
    publish,
    section_name,
    source_version,
    start_process,
)

NAME = "bench_scaling"
CONFIG = ROOT / "configs" / "synthetic_images.yaml"
RESULT_TAG = "PLAIN_HOROVOD_RESULT"


def pin_single(command: list[str], layout: Layout, index: int = 0) -> list[str]:
    """A process we start ourselves gets worker `index`'s cores through taskset, when taskset
    exists, and on a GPU node that worker's GPU alone: a one-process run would otherwise train on
    every GPU (multiworker, mirrored), or two independent runs would share GPU 0."""
    gpu = [f"CUDA_VISIBLE_DEVICES={layout.gpu(index)}"] if layout.gpus else []
    if shutil.which("taskset"):
        cores = ",".join(map(str, layout.cores(index)))
        return [*(["env", *gpu] if gpu else []), "taskset", "-c", cores, *command]
    return ["env", *gpu, f"HARNESS_BENCH_CORE={index}", *command]


@dataclass
class Outcome:
    """One run: steady per-worker samples/s (median and best epoch after the first) and how long
    it took to get going."""

    per_worker: float
    best_per_worker: float
    to_start_s: float
    first_epoch_excess_s: float
    wall_s: float
    epochs: list[float] = field(default_factory=list)


@dataclass
class Contender:
    name: str
    workers: int
    commands: Callable[[Path], list[list[str]]]
    read: Callable[[Path, list[str], int], tuple[list[float], list[float]]]
    user_defaults: bool = False
    """Run without the benchmark's pinning and thread settings: what `harness train --workers 2` does
    for a user who sets none (compares distribute.pin_workers on and off)."""
    extra_env: dict[str, str] = field(default_factory=dict)

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        env = {**env, **self.extra_env}
        if not self.user_defaults:
            return env
        return {k: v for k, v in env.items() if k not in (*THREAD_SETTINGS, "HARNESS_BENCH_PIN")}


def run_commands(commands: list[list[str]], env: dict[str, str], timeout_s: float) -> tuple[list[str], float, float]:
    """Run the commands side by side to completion; returns their output lines, seconds until the
    first `starting:` line, and the wall time.

    `starting:` is printed by the training loop (and by the plain script) right before the first
    training step, after imports, launcher, rendezvous, data preparation, model build and preflight.
    """
    started = time.perf_counter()
    lines: list[str] = []
    seen: list[float] = []
    lock = threading.Lock()

    def pump(process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with lock:
                lines.append(line.rstrip("\n"))
                if "starting:" in line:
                    seen.append(time.perf_counter() - started)

    processes = [start_process(command, env) for command in commands]
    pumps = [threading.Thread(target=pump, args=(p,), daemon=True) for p in processes]
    for thread in pumps:
        thread.start()
    deadline = started + timeout_s
    failed = None
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            failed = f"timed out after {timeout_s:.0f}s"
            break
        if process.returncode != 0:
            failed = f"exit code {process.returncode}"
            break
    if failed:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        raise RuntimeError(f"{failed}: {' '.join(commands[0])}\n" + "\n".join(lines[-30:]))
    for thread in pumps:
        thread.join(timeout=5)
    return lines, min(seen, default=float("nan")), time.perf_counter() - started


def harness_overrides(args: argparse.Namespace, strategy: str, out: Path, name: str) -> list[str]:
    return [
        str(CONFIG),
        f"data.synthetic.samples={args.samples}",
        f"training.epochs={args.epochs}",
        f"training.batch_size={args.batch_size}",
        f"training.steps_per_execution={args.steps_per_execution}",
        "training.progress=lines",
        "training.checkpoint.every_epochs=0",
        "run.deterministic=false",
        "report.html=false",
        "report.plots=false",
        f"run.output_dir={out}",
        f"run.name={name}",
        f"distribute.strategy={strategy}",
    ]


def read_harness(out: Path, lines: list[str], workers: int) -> tuple[list[float], list[float]]:
    """Per-worker samples/s and epoch times per epoch, from the run's metrics.jsonl.

    Several run directories are independent single-process runs: their mean per epoch.
    """
    runs = []
    for path in sorted(out.glob("*/metrics.jsonl")):
        runs.append([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    if not runs:
        raise RuntimeError("no metrics.jsonl was written:\n" + "\n".join(lines[-30:]))
    per_run = workers // len(runs)
    per_worker = [statistics.mean(run[i]["samples_per_s"] / per_run for run in runs) for i in range(len(runs[0]))]
    times = [statistics.mean(run[i]["epoch_time_s"] for run in runs) for i in range(len(runs[0]))]
    return per_worker, times


def read_plain(out: Path, lines: list[str], workers: int) -> tuple[list[float], list[float]]:
    for line in lines:
        if RESULT_TAG in line:
            result = json.loads(line.split(RESULT_TAG, 1)[1])
            return result["per_worker_samples_per_s"], result["epoch_time_s"]
    raise RuntimeError("the plain Horovod script printed no result line:\n" + "\n".join(lines[-30:]))


def contenders(args: argparse.Namespace, layout: Layout) -> list[Contender]:
    python = sys.executable
    horovodrun = shutil.which("horovodrun") or str(Path(python).parent / "horovodrun")
    cli = [python, "-m", "harness", "train"]
    diagnostic_path = os.pathsep.join(filter(None, [str(DIAGNOSTIC), os.environ.get("PYTHONPATH")]))
    plain = [
        python,
        str(ROOT / "scripts" / "plain_horovod_cnn.py"),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--samples",
        str(args.samples),
    ]

    def harness(
        strategy: str, name: str, workers: int, extra: tuple[str, ...] | list[str] = ()
    ) -> Callable[[Path], list[list[str]]]:
        def build(out: Path) -> list[list[str]]:
            items = [*harness_overrides(args, strategy, out, name), *extra]
            if workers == 1:
                return [pin_single([*cli, *items], layout)]
            return [[*cli, *items, "--workers", str(workers)]]

        return build

    def independent(out: Path) -> list[list[str]]:
        return [pin_single([*cli, *harness_overrides(args, "single", out, f"alone{i}")], layout, i) for i in (0, 1)]

    def under_horovodrun(command: list[str], workers: int) -> list[str]:
        return [horovodrun, "-np", str(workers), "-H", f"localhost:{workers}", "--gloo", *command]

    return [
        Contender("single_1", 1, harness("single", "single", 1), read_harness),
        Contender("single_x2", 2, independent, read_harness),
        Contender("multiworker_1", 1, harness("multiworker", "mw1", 1), read_harness),
        Contender("multiworker_2", 2, harness("multiworker", "mw2", 2), read_harness),
        Contender("mirrored_1", 1, harness("mirrored", "mir1", 1, ["distribute.cpu_replicas=1"]), read_harness),
        Contender(
            "horovod_1",
            1,
            lambda out: [under_horovodrun([*cli, *harness_overrides(args, "horovod", out, "hvd1")], 1)],
            read_harness,
        ),
        Contender("horovod_2", 2, harness("horovod", "hvd2", 2), read_harness),
        *(
            Contender(f"{strategy}_2_fp16", 2, harness(strategy, f"{strategy}-fp16", 2, [FP16]), read_harness)
            for strategy in ("multiworker", "horovod")
        ),
        *(
            Contender(
                f"multiworker_2_{name}",
                2,
                harness("multiworker", f"mw2-{name}", 2),
                read_harness,
                extra_env={"HARNESS_DIAGNOSTIC_ALLREDUCE": mode, "PYTHONPATH": diagnostic_path},
            )
            for name, mode in (("noreduce", "none"), ("scalar", "scalar"))
        ),
        Contender(
            "horovod_mpi_2", 2, harness("horovod", "hvdmpi2", 2, ["distribute.horovod_controller=mpi"]), read_harness
        ),
        Contender(
            "horovod_mpi_2_spin",
            2,
            harness("horovod", "hvdmpi2spin", 2, ["distribute.horovod_controller=mpi"]),
            read_harness,
            extra_env={"OMPI_MCA_mpi_yield_when_idle": "0"},  # Open MPI's own default: spin while waiting
        ),
        Contender("plain_1", 1, lambda out: [under_horovodrun(plain, 1)], read_plain),
        Contender("plain_2", 2, lambda out: [under_horovodrun(plain, 2)], read_plain),
        *(
            Contender(
                f"{strategy}_2_{cores}",
                2,
                harness(strategy, f"{strategy}-{cores}", 2, [f"distribute.pin_workers={str(pin).lower()}"]),
                read_harness,
                user_defaults=True,
            )
            for strategy in ("multiworker", "horovod")
            for cores, pin in (("shared", False), ("own", True))
        ),
        *(
            Contender(
                f"{strategy}_2_4k",
                2,
                harness(strategy, f"{strategy}-4k", 2, ["distribute.huge_pages=false"]),
                read_harness,
            )
            for strategy in ("multiworker", "horovod")
        ),
    ]


def run_one(contender: Contender, env: dict[str, str], timeout_s: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"bench_scaling_{contender.name}_") as tmp:
        out = Path(tmp)
        lines, to_start, wall = run_commands(contender.commands(out), contender.environment(env), timeout_s)
        per_worker, times = contender.read(out, lines, contender.workers)
    return Outcome(
        per_worker=statistics.median(per_worker[1:]),
        best_per_worker=max(per_worker[1:]),
        to_start_s=to_start,
        first_epoch_excess_s=times[0] - statistics.median(times[1:]),
        wall_s=wall,
        epochs=per_worker,
    )


def run_with_retries(
    contender: Contender, env: dict[str, str], args: argparse.Namespace, failures: list[str]
) -> Outcome:
    """A run that fails to start is retried (`--retries`) and reported, so one flaky launch does
    not discard a quarter of an hour of measurements, and is not hidden either."""
    for attempt in range(args.retries + 1):
        try:
            return run_one(contender, env, args.timeout)
        except RuntimeError as err:
            lines = str(err).splitlines()
            reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[0])
            failures.append(f"{contender.name}: {reason.strip()[:200]}")
            print(f"{contender.name} failed (attempt {attempt + 1}): {reason}", flush=True)
            if attempt == args.retries:
                raise
    raise AssertionError("unreachable")


SETTINGS = ("repeats", "epochs", "samples", "batch_size", "steps_per_execution")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    layout = node_layout(2)
    entries = [c for c in contenders(args, layout) if c.name in args.contenders]
    results: dict[str, list[Outcome]] = {c.name: [] for c in entries}
    failures: list[str] = []
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="bench_scaling_pin_") as hook_dir:
        env = pinning_env(Path(hook_dir), layout=layout)
        machine = provenance(env)
        for repeat in range(args.repeats):
            order = entries if repeat % 2 == 0 else list(reversed(entries))
            for contender in order:
                outcome = run_with_retries(contender, env, args, failures)
                results[contender.name].append(outcome)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {contender.name}: {outcome.per_worker:.0f} samples/s "
                    f"per worker (epochs {', '.join(f'{v:.0f}' for v in outcome.epochs)}), "
                    f"starting after {outcome.to_start_s:.1f}s, load {load_average()}",
                    flush=True,
                )
            loads.append(load_average())
    return {
        "results": results,
        "loads": loads,
        "failures": failures,
        "date": time.strftime("%Y-%m-%d"),
        "source": source_version(),
        "settings": {name: getattr(args, name) for name in SETTINGS},
        "provenance": machine,
        "layout": layout.describe(),
    }


def save_outcomes(path: Path, measured: dict[str, Any]) -> None:
    """Raw outcomes, so the section can be re-rendered (e.g. with findings) without re-measuring."""
    results = {name: [o.__dict__ for o in runs] for name, runs in measured["results"].items()}
    path.write_text(json.dumps({**measured, "results": results}, indent=1))


def load_outcomes(path: Path) -> dict[str, Any]:
    raw = json.loads(path.read_text())
    return {**raw, "results": {name: [Outcome(**o) for o in runs] for name, runs in raw["results"].items()}}


Stat = Callable[[Outcome], float]


def median_epoch(outcome: Outcome) -> float:
    return outcome.per_worker


def best_epoch(outcome: Outcome) -> float:
    return outcome.best_per_worker


def per_repeat(results: dict[str, list[Outcome]], num: str, den: str, stat: Stat) -> list[float]:
    return [stat(a) / stat(b) for a, b in zip(results[num], results[den], strict=True)]


EFFICIENCIES = {
    # name: (2-worker contender, 1-worker contender, label)
    "multiworker": ("multiworker_2", "single_1", "harness `multiworker` (1 worker: `single`)"),
    "horovod": ("horovod_2", "single_1", "harness `horovod`, Gloo (1 worker: `single`)"),
    "horovod_mpi": ("horovod_mpi_2", "single_1", "harness `horovod`, MPI (1 worker: `single`)"),
    "plain": ("plain_2", "plain_1", "plain Horovod script, Gloo (`horovodrun -np 1` / `-np 2`)"),
    "horovod_hvd1": ("horovod_2", "horovod_1", "harness `horovod` (1 worker: harness under `horovodrun -np 1`)"),
    "multiworker_mw1": ("multiworker_2", "multiworker_1", "harness `multiworker` (1 worker: multiworker, 1 process)"),
    "multiworker_fp16": (
        "multiworker_2_fp16",
        "single_1",
        "harness `multiworker`, fp16 gradients (1 worker: `single`)",
    ),
    "horovod_fp16": ("horovod_2_fp16", "single_1", "harness `horovod`, Gloo, fp16 gradients (1 worker: `single`)"),
    "independent": (
        "single_x2",
        "single_1",
        "control: 2 independent `single` runs at once, one per core (no communication)",
    ),
}


ONE_PROCESS = {
    # contender: label - one process, nothing to all-reduce: the cost of the strategy alone
    "multiworker_1": "harness `multiworker`, 1 process",
    "mirrored_1": "harness `mirrored`, `cpu_replicas=1`",
    "horovod_1": "harness `horovod` under `horovodrun -np 1`",
}
ALL = (
    "single_1",
    "single_x2",
    "multiworker_1",
    "multiworker_2",
    "mirrored_1",
    "horovod_1",
    "horovod_2",
    "multiworker_2_fp16",
    "horovod_2_fp16",
    "multiworker_2_noreduce",
    "multiworker_2_scalar",
    "horovod_mpi_2",
    "horovod_mpi_2_spin",
    "plain_1",
    "plain_2",
    "multiworker_2_shared",
    "multiworker_2_own",
    "horovod_2_shared",
    "horovod_2_own",
    "multiworker_2_4k",
    "horovod_2_4k",
)
DIAGNOSTICS = ("multiworker_2_noreduce", "multiworker_2_scalar")
"""Not ways to train (scripts/diagnostics/allreduce): measured only when asked for by name."""
VS_CONTROL = {
    # key: (2-worker contender, label) - efficiency relative to the control, two runs that never communicate
    "multiworker_vs_independent": ("multiworker_2", "multiworker"),
    "horovod_vs_independent": ("horovod_2", "horovod"),
    "horovod_mpi_vs_independent": ("horovod_mpi_2", "horovod over MPI"),
    "multiworker_fp16_vs_independent": ("multiworker_2_fp16", "multiworker with fp16 gradients"),
    "horovod_fp16_vs_independent": ("horovod_2_fp16", "horovod with fp16 gradients"),
    "noreduce_vs_independent": ("multiworker_2_noreduce", "multiworker without the gradient all-reduce (diagnostic)"),
    "scalar_vs_independent": ("multiworker_2_scalar", "multiworker all-reducing one number per step (diagnostic)"),
}
FP16 = "distribute.gradient_compression=fp16"
DIAGNOSTIC = ROOT / "scripts" / "diagnostics" / "allreduce"
"""A sitecustomize that replaces the gradient all-reduce in launcher-started workers (diagnostic)."""
PINNING = {
    # strategy: (all workers on all cores, each worker on its own cores)
    "multiworker": ("multiworker_2_shared", "multiworker_2_own"),
    "horovod": ("horovod_2_shared", "horovod_2_own"),
}
HUGE_PAGES = {
    # strategy: (distribute.huge_pages=false, the default true)
    "multiworker": ("multiworker_2_4k", "multiworker_2"),
    "horovod": ("horovod_2_4k", "horovod_2"),
}


def summarize(results: dict[str, list[Outcome]], stat: Stat) -> dict[str, Any]:
    """Efficiencies and ratios as medians of per-repeat ratios (runs of a repeat ran back to back).

    Only what the measured contenders allow (`--contenders` may pick a subset).
    """

    def have(*names: str) -> bool:
        return all(name in results for name in names)

    eff = {name: per_repeat(results, two, one, stat) for name, (two, one, _) in EFFICIENCIES.items() if have(two, one)}
    for key, (two, _) in VS_CONTROL.items():
        if have(two, "single_x2"):
            eff[key] = per_repeat(results, two, "single_x2", stat)
    if have("multiworker_2", "plain_2"):
        eff["multiworker_vs_plain_2"] = per_repeat(results, "multiworker_2", "plain_2", stat)
    pinning = {
        name: per_repeat(results, own, shared, stat) for name, (shared, own) in PINNING.items() if have(shared, own)
    }
    huge = {name: per_repeat(results, on, off, stat) for name, (off, on) in HUGE_PAGES.items() if have(off, on)}
    if have("horovod_mpi_2", "horovod_mpi_2_spin"):
        eff["mpi_yield_vs_spin"] = per_repeat(results, "horovod_mpi_2", "horovod_mpi_2_spin", stat)
    ratios: dict[str, list[float]] = {}
    if "horovod" in eff and "plain" in eff:
        ratios["vs_plain"] = [h / p for h, p in zip(eff["horovod"], eff["plain"], strict=True)]
    if "horovod_hvd1" in eff and "plain" in eff:
        ratios["vs_plain_same_base"] = [h / p for h, p in zip(eff["horovod_hvd1"], eff["plain"], strict=True)]
    for key, (num, den) in {
        "abs_2_vs_plain": ("horovod_2", "plain_2"),
        "abs_1_vs_plain": ("horovod_1", "plain_1"),
        "single_vs_plain_1": ("single_1", "plain_1"),
    }.items():
        if have(num, den):
            ratios[key] = per_repeat(results, num, den, stat)
    one = {name: per_repeat(results, name, "single_1", stat) for name in ONE_PROCESS if have(name, "single_1")}
    return {
        "eff": eff,
        "eff_median": {name: statistics.median(values) for name, values in eff.items()},
        "ratios": ratios,
        "ratio_median": {name: statistics.median(values) for name, values in ratios.items()},
        "one": one,
        "one_median": {name: statistics.median(values) for name, values in one.items()},
        "pinning": pinning,
        "pinning_median": {name: statistics.median(values) for name, values in pinning.items()},
        "huge": huge,
        "huge_median": {name: statistics.median(values) for name, values in huge.items()},
        "rate": {name: statistics.median(stat(o) for o in runs) for name, runs in results.items()},
    }


def fmt(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def markdown(measured: dict[str, Any], analysis: Path | None = None, name: str = NAME) -> str:
    import keras
    import tensorflow as tf

    results = measured["results"]
    cfg = measured["settings"]
    med, best = summarize(results, median_epoch), summarize(results, best_epoch)
    start = {name: statistics.median(o.to_start_s for o in runs) for name, runs in results.items()}
    excess = {name: statistics.median(o.first_epoch_excess_s for o in runs) for name, runs in results.items()}
    begin, end = markers(name)
    lines = [
        begin,
        f"## Weak scaling, 1 vs 2 workers, batch {cfg['batch_size']} per worker{machine_suffix(measured)} "
        "(scripts/bench_scaling.py)",
        "",
        f"Measured {measured['date']} (harness {measured.get('source', 'unknown')}) on {machine_words(measured)}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}. Workload: `configs/synthetic_images.yaml` "
        f"(small CNN, {cfg['samples']} synthetic 32x32x3 images, 70% for training), batch {cfg['batch_size']} "
        f"per worker, harness steps_per_execution={cfg['steps_per_execution']}, {cfg['epochs']} epochs per run. "
        f"{measured.get('layout') or Layout(gpus=0, cores_per_worker=1).describe()} "
        f"{cfg['repeats']} interleaved repeats (order alternating); load average (1/5/15 min) before and after "
        f"each repeat: {' | '.join(measured['loads'])}.",
        "",
        provenance_line(measured.get("provenance")),
        "",
        "samples/s are per worker: metrics.jsonl `samples_per_s` (the chief's global rate) / workers; the "
        "plain script reports its own. Per run, the median (and the best) of the epochs after the first. "
        "Efficiency = per-worker samples/s with 2 workers / with 1 worker, median of per-repeat ratios.",
    ]
    if any(name in med["eff"] for name in EFFICIENCIES):
        lines += [
            "",
            "| contender | 1 worker samples/s | 2 workers, per worker | efficiency | per repeat | "
            "efficiency, best epochs | per repeat |",
            "|---|---|---|---|---|---|---|",
        ]
    for name, (two, one, label) in EFFICIENCIES.items():
        if name not in med["eff"]:
            continue
        lines.append(
            f"| {label} | {med['rate'][one]:.0f} | {med['rate'][two]:.0f} | **{med['eff_median'][name]:.2f}** | "
            f"{fmt(med['eff'][name])} | {best['eff_median'][name]:.2f} | {fmt(best['eff'][name])} |"
        )
    rm, rb, em = med["ratio_median"], best["ratio_median"], med["eff_median"]
    lines.append("")
    if "vs_plain" in rm:
        lines.append(
            f"**harness-horovod efficiency / plain-Horovod efficiency = {rm['vs_plain']:.2f}** "
            f"(per repeat {fmt(med['ratios']['vs_plain'])}; best epochs {rb['vs_plain']:.2f})."
            + (
                f" With harness's 1-worker baseline also under `horovodrun -np 1`: {rm['vs_plain_same_base']:.2f} "
                f"({fmt(med['ratios']['vs_plain_same_base'])}; best epochs {rb['vs_plain_same_base']:.2f})."
                if "vs_plain_same_base" in rm
                else ""
            )
            + "  "
        )
    if "abs_2_vs_plain" in rm and "abs_1_vs_plain" in rm:
        lines.append(
            f"Per-worker samples/s, harness horovod / plain Horovod, same run order: 2 workers "
            f"{rm['abs_2_vs_plain']:.2f} ({fmt(med['ratios']['abs_2_vs_plain'])}; best epochs "
            f"{rb['abs_2_vs_plain']:.2f}), 1 worker {rm['abs_1_vs_plain']:.2f} "
            f"({fmt(med['ratios']['abs_1_vs_plain'])}; best epochs {rb['abs_1_vs_plain']:.2f}).  "
        )
    if "mpi_yield_vs_spin" in em:
        lines.append(
            f"Per-worker samples/s, harness horovod over MPI as it starts (Open MPI yields the core while waiting, "
            f"`OMPI_MCA_mpi_yield_when_idle=1`) / with Open MPI's default spin (`=0`): "
            f"{em['mpi_yield_vs_spin']:.2f} ({fmt(med['eff']['mpi_yield_vs_spin'])}); "
            f"{med['rate']['horovod_mpi_2']:.0f} against {med['rate']['horovod_mpi_2_spin']:.0f}.  "
        )
    if "multiworker_vs_plain_2" in em:
        lines.append(
            f"Per-worker samples/s with 2 workers, harness multiworker / plain Horovod: "
            f"{em['multiworker_vs_plain_2']:.2f} ({fmt(med['eff']['multiworker_vs_plain_2'])}).  "
        )
    vs_control = [
        f"harness {label} {em[key]:.2f} ({fmt(med['eff'][key])})" for key, (_, label) in VS_CONTROL.items() if key in em
    ]
    if vs_control:
        lines.append(
            "Relative to the control (two workers that never communicate), i.e. the cost of communication and "
            "synchronisation alone: " + ", ".join(vs_control) + "."
        )
    if med["one"]:
        lines += [
            "",
            "One process, nothing to all-reduce: the strategy's own cost per step "
            "(per-repeat ratio to `single`, median; goal ≥ 0.95).",
            "",
            "| contender | samples/s | / single | per repeat | / single, best epochs |",
            "|---|---|---|---|---|",
            f"| harness `single` | {med['rate']['single_1']:.0f} | 1.00 | | |",
            *(
                f"| {ONE_PROCESS[name]} | {med['rate'][name]:.0f} | **{med['one_median'][name]:.2f}** | "
                f"{fmt(med['one'][name])} | {best['one_median'][name]:.2f} |"
                for name in med["one"]
            ),
        ]
    if med["pinning"]:
        lines += [
            "",
            "Local workers and their cores, with a user's defaults (no thread settings, no benchmark pinning): "
            "`--workers 2` with `distribute.pin_workers=false` (every worker on every core, as before) and "
            "`true` (the default: each worker on its own core). Per-worker samples/s; ratio per repeat.",
            "",
            "| strategy | all workers on all cores | each worker on its own cores | own / all | per repeat |",
            "|---|---|---|---|---|",
            *(
                f"| {name} | {med['rate'][PINNING[name][0]]:.0f} | {med['rate'][PINNING[name][1]]:.0f} | "
                f"**{med['pinning_median'][name]:.2f}** | {fmt(med['pinning'][name])} |"
                for name in med["pinning"]
            ),
        ]
    if med.get("huge"):
        lines += [
            "",
            "Huge pages for large blocks (`distribute.huge_pages`, harness.distribute.memory): `--workers 2` "
            "with `false` and with the default `true`. Per-worker samples/s; ratio per repeat.",
            "",
            "| strategy | huge_pages=false | huge_pages=true | true / false | per repeat |",
            "|---|---|---|---|---|",
            *(
                f"| {name} | {med['rate'][HUGE_PAGES[name][0]]:.0f} | {med['rate'][HUGE_PAGES[name][1]]:.0f} | "
                f"**{med['huge_median'][name]:.2f}** | {fmt(med['huge'][name])} |"
                for name in med["huge"]
            ),
        ]
    lines += [
        "",
        "Time to first training step: seconds from starting the command to the chief's `starting:` line, "
        "which the loop prints right before its first compiled step (imports, launcher, rendezvous, data, "
        "model build, preflight); plus the first epoch's extra time over a steady epoch (tracing, first "
        "collectives). Medians.",
        "",
        "| path | command | launch to `starting:` (s) | first-epoch extra (s) | sum (s) |",
        "|---|---|---|---|---|",
    ]
    commands = {
        "single_1": ("harness single, 1 worker", "`harness train ...`"),
        "multiworker_1": ("harness multiworker, 1 worker", "`harness train ... distribute.strategy=multiworker`"),
        "multiworker_2": ("harness multiworker, 2 workers", "`harness train ... --workers 2`"),
        "mirrored_1": ("harness mirrored, 1 replica", "`harness train ... distribute.strategy=mirrored`"),
        "horovod_1": ("harness horovod, 1 worker", "`horovodrun -np 1 --gloo python -m harness train ...`"),
        "horovod_2": ("harness horovod, 2 workers", "`harness train ... distribute.strategy=horovod --workers 2`"),
        "horovod_mpi_2": (
            "harness horovod over MPI, 2 workers",
            "`harness train ... distribute.strategy=horovod distribute.horovod_controller=mpi --workers 2`",
        ),
        "plain_1": ("plain Horovod, 1 worker", "`horovodrun -np 1 --gloo python plain_horovod_cnn.py`"),
        "plain_2": ("plain Horovod, 2 workers", "`horovodrun -np 2 --gloo python plain_horovod_cnn.py`"),
    }
    for name, (label, command) in commands.items():
        if name not in start:
            continue
        lines.append(
            f"| {label} | {command} | {start[name]:.1f} | {excess[name]:.1f} | {start[name] + excess[name]:.1f} |"
        )
    lines += [
        "",
        "All runs, per-worker samples/s per epoch (epoch 1 first):",
        "",
        *(f"- {name}: " + "; ".join(fmt(o.epochs, 0) for o in runs) for name, runs in results.items()),
    ]
    failures = measured.get("failures", [])
    lines += [
        "",
        f"Runs that failed and were re-run: {len(failures)}" + (": " + "; ".join(failures) if failures else "."),
    ]
    return close_section(lines, analysis, end)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--steps-per-execution", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run before it is killed")
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a run that fails (reported)")
    add_output_arguments(parser, "outcomes")
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=ALL,
        default=[name for name in ALL if name not in DIAGNOSTICS],
        help="a subset, e.g. single_1 multiworker_1 (default: all but the diagnostics)",
    )
    parser.add_argument(
        "--section", help=f"section name in the file (one per workload; default {NAME}; `_gpu` added on GPU nodes)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: epoch 1 (tracing) is excluded")
    measured = load_outcomes(args.from_json) if args.from_json else measure(args)
    if args.json:
        save_outcomes(args.json, measured)
    name = section_name(args.section or NAME, measured)
    publish(name, markdown(measured, args.analysis, name), None if args.no_write else args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
