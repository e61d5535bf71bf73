#!/usr/bin/env python3
"""`distribute.huge_pages` in one process: `harness train` with it on (the default) and off.

TensorFlow allocates every op's output anew, and glibc maps blocks above 32 MiB afresh, so a
step whose tensors are large pays a page fault per 4 KiB touched (harness.distribute.memory).
This runs the benchmark CNN (`configs/synthetic_images.yaml`) through the real CLI at a small
and a large batch, with `distribute.huge_pages=true` and `false`, interleaved (the order
alternates every repeat: this kind of machine is noisy). Each run's figure is the median
samples/s of its epochs after the first; the result is the median of the per-repeat ratios.
The system's own setting is what `false` gets (`/sys/kernel/mm/transparent_hugepage/enabled`).

    python scripts/bench_huge_pages.py [--repeats 3] [--batch-sizes 32 512] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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

from harness.distribute.memory import thp_mode

NAME = "bench_huge_pages"
SETTINGS = (True, False)


def run_once(batch: int, huge_pages: bool, args: argparse.Namespace) -> float:
    """One `harness train` in its own process; the median samples/s of epochs 2.. from metrics.jsonl."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # the setting decides, not our shell
    with tempfile.TemporaryDirectory(prefix="bench_huge_pages_") as out:
        command = [
            sys.executable, "-m", "harness", "train", str(ROOT / "configs" / "synthetic_images.yaml"),
            f"data.synthetic.samples={args.samples}", f"training.epochs={args.epochs}",
            f"training.batch_size={batch}", "training.progress=none", "training.checkpoint.every_epochs=0",
            "run.deterministic=false", "report.html=false", "report.plots=false",
            f"run.output_dir={out}", "run.name=r", f"distribute.huge_pages={str(huge_pages).lower()}",
        ]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
        if done.returncode != 0:
            raise RuntimeError(f"harness train exited {done.returncode}:\n{done.stderr[-3000:]}")
        lines = (Path(out) / "r" / "metrics.jsonl").read_text().splitlines()
        rates = [float(json.loads(line)["samples_per_s"]) for line in lines]
    return statistics.median(rates[1:])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rates: dict[str, list[float]] = {f"{b}:{h}": [] for b in args.batch_sizes for h in SETTINGS}
    loads = [load_average()]
    for repeat in range(args.repeats):
        order = [(b, h) for b in args.batch_sizes for h in SETTINGS]
        for batch, huge in order if repeat % 2 == 0 else reversed(order):
            rate = run_once(batch, huge, args)
            rates[f"{batch}:{huge}"].append(rate)
            print(f"repeat {repeat + 1}/{args.repeats} batch {batch} huge_pages={huge}: {rate:.0f} samples/s")
        loads.append(load_average())
    return {
        "rates": rates,
        "loads": loads,
        "date": time.strftime("%Y-%m-%d"),
        "source": source_version(),
        "settings": {"repeats": args.repeats, "epochs": args.epochs, "samples": args.samples},
        "provenance": provenance(),
        "thp": thp_mode(),
    }


def markdown(measured: dict[str, Any], analysis: Path | None = None, section: str = NAME) -> str:
    begin, end = markers(section)
    cfg = measured["settings"]
    batches = sorted({int(key.split(":")[0]) for key in measured["rates"]})
    lines = [
        begin,
        f"## Huge pages in one process{machine_suffix(measured)} (scripts/bench_huge_pages.py)",
        "",
        f"Measured {measured['date']} (harness {measured['source']}). `harness train configs/synthetic_images.yaml` "
        f"({cfg['samples']} synthetic images, {cfg['epochs']} epochs; figure per run: median samples/s of the epochs "
        f"after the first), `distribute.huge_pages` true and false, {cfg['repeats']} interleaved repeats. "
        f"Transparent huge pages on this system: `{measured['thp']}`. Load average before and after each repeat: "
        f"{' | '.join(measured['loads'])}.",
        "",
        provenance_line(measured.get("provenance")),
        "",
        "| batch | huge_pages=false samples/s | huge_pages=true samples/s | true / false | per repeat |",
        "|---|---|---|---|---|",
    ]
    for batch in batches:
        on, off = measured["rates"][f"{batch}:True"], measured["rates"][f"{batch}:False"]
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        lines.append(
            f"| {batch} | {statistics.median(off):.0f} | {statistics.median(on):.0f} | "
            f"**{statistics.median(ratios):.2f}** | {', '.join(f'{r:.2f}' for r in ratios)} |"
        )
    return close_section(lines, analysis, end)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 512])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is stopped")
    add_output_arguments(parser, "samples/s")
    args = parser.parse_args()
    return measure_and_publish(NAME, args, measure, markdown)


if __name__ == "__main__":
    sys.exit(main())
