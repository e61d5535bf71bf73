#!/usr/bin/env python3
"""What a sweep costs on the local Slurm cluster, and how fast `harness sweep status` is.

- Packing: a sweep of N tiny trials with parallelism P. Packing ratio = sweep wall time
  (submission until the job array left the queue) / (sum of the trials' wall times / P);
  1.0 is perfect packing, the goal is <= 1.5. A trial's wall time is what its worker measured
  around the trial's processes (their start, TensorFlow's import, training and the report).
- Submissions: scheduler submissions per sweep (sbatch scripts submitit wrote).
- Status: `harness sweep status` on a synthetic sweep of 500 trials (ledger and journal), as a
  new process each time, against loading the same study's trials from the Optuna journal.

    python scripts/bench_sweep.py [--repeats 2] [--trials 6] [--parallelism 2] [--epochs 20] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from benchlib import ROOT, add_output_arguments, cluster_env, markers, provenance, provenance_line, publish

NAME = "bench_sweep"
MARK_BEGIN, MARK_END = markers(NAME)
POLL_S = 0.2
SYNTHETIC_TRIALS = 500


def write_spec(folder: Path, args: argparse.Namespace, name: str) -> Path:
    spec = {
        "name": name,
        "base": {
            "data": {"dataset": "iris"},
            "model": {"name": "mlp", "hidden_units": [16]},
            "training": {"epochs": args.epochs, "batch_size": 16, "progress": "none"},
            "report": {"html": False, "plots": False},
        },
        "parameters": {"training.optimizer.learning_rate": {"loguniform": [0.005, 0.1]}},
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "budget": {"trials": args.trials},
        "parallelism": args.parallelism,
        "slurm": {"time_minutes": 30, "env": {"PYTHONPATH": str(ROOT)}},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_sweep(args: argparse.Namespace, workdir: Path, env: dict[str, str], index: int) -> dict[str, float]:
    spec = write_spec(workdir, args, f"bench-{index}")
    command = [sys.executable, "-m", "harness", "sweep", str(spec)]
    started = time.time()
    out = subprocess.run(command, cwd=workdir, env=env, check=True, capture_output=True, text=True).stdout
    array = re.search(r"submitted Slurm job array (\d+)", out)
    if array is None:
        sys.exit(f"unexpected harness sweep output:\n{out}")
    while subprocess.run(["squeue", "-h", "-j", array[1]], env=env, capture_output=True, text=True).stdout.strip():
        time.sleep(POLL_S)
    wall = time.time() - started
    sweep_dir = workdir / "sweeps" / f"bench-{index}"
    records = [json.loads(p.read_text()) for p in sorted((sweep_dir / "ledger").glob("*.json"))]
    if len(records) != args.trials or {r["state"] for r in records} != {"completed"}:
        sys.exit(f"sweep {sweep_dir} did not complete: {[(r['trial'], r['state'], r['error']) for r in records]}")
    trial_sum = sum(float(r["wall_time_s"]) for r in records)
    return {
        "wall": wall,
        "trial_sum": trial_sum,
        "packing": wall / (trial_sum / args.parallelism),
        "submissions": float(len(list((sweep_dir / "workers").glob("*_submission.sh")))),
    }


def synthetic_sweep(folder: Path) -> Path:
    """A sweep directory with SYNTHETIC_TRIALS finished trials in its journal and ledger (no training)."""
    sys.path.insert(0, str(ROOT))
    from harness.sweep import ledger
    from harness.sweep.launch import normalized
    from harness.sweep.spec import load_spec
    from harness.sweep.study import create_study
    from harness.sweep.sweepdir import new_sweep_dir

    spec_path = folder / "synthetic.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "synthetic",
                "output_dir": str(folder),
                "base": {"data": {"dataset": "iris"}, "model": {"name": "mlp"}},
                "parameters": {
                    "training.optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]},
                    "model.dropout": {"uniform": [0.0, 0.5]},
                },
                "objective": {"metric": "val_accuracy", "direction": "max"},
                "budget": {"trials": SYNTHETIC_TRIALS},
                "sampler": {"name": "random", "seed": 0},
            }
        )
    )
    spec = load_spec(spec_path)
    path = folder / "synthetic"
    rng = random.Random(0)
    with new_sweep_dir(path, overwrite=False) as staging:
        staging.spec.write_text(yaml.safe_dump(normalized(spec, path)))
        study = create_study(staging, load_spec(staging.spec))
        for _ in range(SYNTHETIC_TRIALS):
            trial = study.ask()
            params = {
                "training.optimizer.learning_rate": trial.suggest_float(
                    "training.optimizer.learning_rate", 1e-4, 1e-1, log=True
                ),
                "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5),
            }
            value = rng.random()
            study.tell(trial, value)
            ledger.write(
                staging, ledger.TrialRecord(trial.number, params, "completed", value, epochs=20, wall_time_s=30.0)
            )
    return path


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure_status(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict[str, list[float]]:
    path = synthetic_sweep(workdir)
    status = [sys.executable, "-m", "harness", "sweep", "status", str(path)]
    journal = [
        sys.executable,
        "-c",
        "import optuna, sys; from optuna.storages.journal import JournalFileBackend, JournalStorage; "
        "s = optuna.load_study(study_name='sweep', storage=JournalStorage(JournalFileBackend(sys.argv[1]))); "
        "print(len(s.trials))",
        str(path / "study.journal"),
    ]
    found: dict[str, list[float]] = {"status": [], "journal": []}
    for index in range(args.status_repeats):
        order = ("status", "journal") if index % 2 == 0 else ("journal", "status")
        for kind in order:
            found[kind].append(timed(status if kind == "status" else journal, env))
    return found


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, **cluster_env(), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        workdir = Path(tmp)
        env["XDG_STATE_HOME"] = str(workdir / "state")
        sweeps = []
        for index in range(args.repeats):
            sweeps.append(run_sweep(args, workdir, env, index))
            print(f"sweep {index + 1}/{args.repeats}: {sweeps[-1]}", flush=True)
        status = measure_status(args, workdir, env)
    version = subprocess.run(["sinfo", "--version"], env=env, capture_output=True, text=True).stdout.strip()
    return {"sweeps": sweeps, "status": status, "slurm": version or "Slurm", "provenance": provenance()}


def _values(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _row(label: str, values: list[float], digits: int, unit: str = "") -> str:
    return f"| {label} | {statistics.median(values):.{digits}f}{unit} | {_values(values, digits)} |"


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    sweeps, status = summary["sweeps"], summary["status"]
    packing = [s["packing"] for s in sweeps]
    lines = [
        MARK_BEGIN,
        "## Sweeps on the local Slurm cluster (scripts/bench_sweep.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{summary['slurm']} (slurm/cluster.sh: two nodes on this machine). Workload: {args.trials} trials "
        f"(iris, MLP, {args.epochs} epochs, TPE over the learning rate), parallelism {args.parallelism}, "
        f"{args.repeats} sweep(s).",
        "",
        provenance_line(summary.get("provenance")),
        "",
        "| measure | median | all runs |",
        "|---|---|---|",
        _row("sweep wall time (submit until the array left the queue)", [s["wall"] for s in sweeps], 1, " s"),
        _row("sum of trial wall times", [s["trial_sum"] for s in sweeps], 1, " s"),
        f"| **packing ratio** (wall / (sum / parallelism); 1.0 perfect, goal <= 1.5) | "
        f"**{statistics.median(packing):.2f}** | {_values(packing)} |",
        _row("scheduler submissions per sweep", [s["submissions"] for s in sweeps], 0),
        _row(f"`harness sweep status`, {SYNTHETIC_TRIALS}-trial sweep (new process)", status["status"], 2, " s"),
        _row(
            f"loading the same {SYNTHETIC_TRIALS} trials from the Optuna journal (new process)",
            status["journal"],
            2,
            " s",
        ),
        "",
        "The packing ratio counts each trial's own start (a fresh process per trial: Python, TensorFlow, "
        "data) inside its wall time; what it leaves out is Slurm's scheduling of the array tasks, the "
        "workers' start and claims, and the tail where fewer than P trials are left. With trials this "
        "short those costs weigh far more than with real ones. Status reads only the ledger's JSON "
        "files; the status and journal timings are interleaved.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="sweeps to run")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--status-repeats", type=int, default=5)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    section = markdown(measure(args), args)
    publish(NAME, section, None if args.no_write else args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
