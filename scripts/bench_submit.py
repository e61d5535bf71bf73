#!/usr/bin/env python3
"""What `harness submit` costs: the same training run directly and as a job on the local Slurm cluster.

Measured on the two-node cluster of slurm/cluster.sh (started here if needed, as root):
- how long `harness submit` takes to return;
- submission to first training step (a callback marks the first epoch's start);
- the whole run's wall time directly (`harness train`) and through `harness submit` (submission
  until the job has left the queue), as the median of pairwise ratios.
Runs are interleaved (the order alternates every repeat) because this kind of machine is noisy.

    python scripts/bench_submit.py [--repeats 3] [--epochs 150] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, add_output_arguments, cluster_env, markers, provenance, provenance_line, publish

SCRIPTS = Path(__file__).resolve().parent
NAME = "bench_submit"
MARK_BEGIN, MARK_END = markers(NAME)
MARKS_ENV = "HARNESS_BENCH_MARKS"
POLL_S = 0.1


def first_step() -> Any:
    """Training callback (training.callbacks=['bench_submit:first_step']): appends the wall-clock
    time at which the first epoch starts to the file named by $HARNESS_BENCH_MARKS."""
    import keras

    class FirstStep(keras.callbacks.Callback):
        marked = False

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if not self.marked and os.environ.get(MARKS_ENV):
                with open(os.environ[MARKS_ENV], "a") as handle:
                    handle.write(f"{time.time()}\n")
                self.marked = True

    return FirstStep()


def overrides(args: argparse.Namespace, name: str) -> list[str]:
    return [
        f"training.epochs={args.epochs}",
        "training.progress=lines",
        f"run.name={name}",
        "training.callbacks=['bench_submit:first_step']",
    ]


def first_mark(path: Path) -> float:
    return float(path.read_text().split()[0])


def run_direct(args: argparse.Namespace, workdir: Path, env: dict[str, str], index: int) -> dict[str, float]:
    marks = workdir / f"direct-{index}.marks"
    child_env = {**env, "PYTHONPATH": str(SCRIPTS), MARKS_ENV: str(marks)}
    command = [sys.executable, "-m", "harness", "train", str(args.config), *overrides(args, f"direct-{index}")]
    started = time.time()
    subprocess.run(command, cwd=workdir, env=child_env, check=True, stdout=subprocess.DEVNULL)
    ended = time.time()
    return {"wall": ended - started, "first_step": first_mark(marks) - started}


def run_submitted(args: argparse.Namespace, workdir: Path, env: dict[str, str], index: int) -> dict[str, float]:
    marks = workdir / f"submit-{index}.marks"
    job_env = json.dumps({"PYTHONPATH": str(SCRIPTS), MARKS_ENV: str(marks)})
    command = [
        sys.executable,
        "-m",
        "harness",
        "submit",
        str(args.config),
        *overrides(args, f"submit-{index}"),
        f"slurm.env={job_env}",
        "--time",
        "60",
    ]
    started = time.time()
    out = subprocess.run(command, cwd=workdir, env=env, check=True, capture_output=True, text=True).stdout
    returned = time.time()
    job_id = re.search(r"submitted Slurm job (\d+)", out)
    if job_id is None:
        sys.exit(f"unexpected harness submit output:\n{out}")
    wait_until_gone(job_id[1], env)
    ended = time.time()
    state = json.loads((workdir / "runs" / f"submit-{index}" / "state.json").read_text())
    if state.get("state") != "completed":
        sys.exit(f"job {job_id[1]} ended as {state.get('state')}: {state.get('error')}")
    return {"submit_cli": returned - started, "first_step": first_mark(marks) - started, "wall": ended - started}


def wait_until_gone(job_id: str, env: dict[str, str]) -> None:
    while True:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
        ).stdout.strip()
        if not queued or queued in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return
        time.sleep(POLL_S)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, **cluster_env(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    results: dict[str, list[dict[str, float]]] = {"direct": [], "submit": []}
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        workdir = Path(tmp)
        env["XDG_STATE_HOME"] = str(workdir / "state")
        for index in range(args.warmup):  # file caches and TensorFlow's first start, not measured
            run_direct(args, workdir, env, -1 - index)
            run_submitted(args, workdir, env, -1 - index)
        for index in range(args.repeats):
            order = ("direct", "submit") if index % 2 == 0 else ("submit", "direct")
            for kind in order:
                run = run_direct if kind == "direct" else run_submitted
                results[kind].append(run(args, workdir, env, index))
                print(f"repeat {index + 1}/{args.repeats} {kind}: {results[kind][-1]}", flush=True)
    ratios = [s["wall"] / d["wall"] for s, d in zip(results["submit"], results["direct"], strict=True)]
    version = subprocess.run(["sinfo", "--version"], env=env, capture_output=True, text=True).stdout.strip()
    return {
        "results": results,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "slurm": version or "Slurm",
        "provenance": provenance(),
    }


def _row(label: str, values: list[float]) -> str:
    return f"| {label} | {statistics.median(values):.1f} s | " + ", ".join(f"{v:.1f}" for v in values) + " |"


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    direct, submit = summary["results"]["direct"], summary["results"]["submit"]
    slurm = summary["slurm"]
    overhead = [s["wall"] - d["wall"] for s, d in zip(submit, direct, strict=True)]
    lines = [
        MARK_BEGIN,
        "## `harness submit` overhead on the local Slurm cluster (scripts/bench_submit.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, {slurm} "
        "(slurm/cluster.sh: two nodes on this machine, no accounting). Workload: "
        f"`{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}` "
        f"with {args.epochs} epochs, one task (strategy auto -> single), {args.repeats} interleaved repeats "
        f"after {args.warmup} unmeasured pair(s); "
        "the first training step is marked by a callback at the start of the first epoch.",
        "",
        provenance_line(summary.get("provenance")),
        "",
        "| measure | median | all runs |",
        "|---|---|---|",
        _row("`harness submit` returns (job id printed)", [r["submit_cli"] for r in submit]),
        _row("submission -> first training step (through Slurm)", [r["first_step"] for r in submit]),
        _row("process start -> first training step (direct `harness train`)", [r["first_step"] for r in direct]),
        _row("whole run, direct `harness train`", [r["wall"] for r in direct]),
        _row("whole run through `harness submit` (until the job left the queue)", [r["wall"] for r in submit]),
        _row("difference (submit - direct)", overhead),
        "",
        f"**submit / direct = {summary['ratio']:.3f}** (median of pairwise ratios: "
        + ", ".join(f"{r:.3f}" for r in summary["ratios"])
        + "); goal: under 1.10.",
        "",
        "Submission adds Slurm's scheduling and step launch, submitit's unpickling, and polling "
        f"(squeue every {POLL_S} s here); both runs import TensorFlow and prepare the data the same way. "
        "On this 2-core machine single pairs vary by 10% or more (other work shares the cores): read the medians.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured pairs of runs first")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.config = args.config.resolve()
    section = markdown(measure(args), args)
    publish(NAME, section, None if args.no_write else args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
