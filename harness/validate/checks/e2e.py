"""End to end: a short synthetic training run through `harness train` itself, samples/s.

It runs as a child process (`python -m harness train`), the way users start training, so the
whole stack is exercised (config, data pipeline, model, training loop, checkpoint, report) and a
hang is ended by a time limit. The run directory goes to a temporary folder in scratch and is
removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.rundir import read_report
from harness.validate.checks.timing import cpu_model
from harness.validate.context import NodeContext
from harness.validate.judge import judge_all
from harness.validate.nvml import NvmlUnavailable
from harness.validate.references import Kind
from harness.validate.results import CheckResult, Measurement
from harness.validate.spec import check
from harness.validate.verdict import Verdict

TIMEOUT_S = 600.0
RUN_NAME = "validate-e2e"
OVERRIDES = (
    "data.dataset=synthetic_tabular",
    "data.synthetic.samples=4096",
    "model.name=mlp",
    "training.epochs=2",
    "training.batch_size=64",
    "training.progress=none",
    "training.early_stopping.enabled=false",
    "distribute.strategy=single",
    "report.html=false",
    "report.plots=false",
    f"run.name={RUN_NAME}",
)


def node_model(ctx: NodeContext) -> tuple[Kind, str]:
    """Where training runs: the first GPU's model, else the CPU's."""
    try:
        return "gpus", ctx.gpu_snapshot().gpus[0].name
    except NvmlUnavailable:
        return "cpus", cpu_model()


def train_command(output_dir: Path) -> list[str]:
    return [sys.executable, "-m", "harness", "train", *OVERRIDES, f"run.output_dir={output_dir}"]


@check("e2e.training", "a short synthetic training run through `harness train` (single strategy)",
       unit="samples/s", reference="cpus/gpus.<model>.training_samples_per_s, fleet median",
       light=False, needs=("tensorflow",), timeout_s=TIMEOUT_S + 30)
def training(ctx: NodeContext) -> CheckResult:
    folder = Path(tempfile.mkdtemp(prefix="harness-validate-", dir=ctx.settings.scratch_dir))
    try:
        try:
            done = subprocess.run(train_command(folder), capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return CheckResult("e2e.training", Verdict.ERROR, f"training did not finish in {TIMEOUT_S:.0f} s")
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return CheckResult("e2e.training", Verdict.FAIL, f"harness train exited {done.returncode}: {last[:300]}")
        report = read_report(folder / RUN_NAME)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rate = float(report["training"]["train_samples_per_s"])
    reference = ctx.references.reference(*node_model(ctx), "training_samples_per_s")
    measurement = Measurement("single", rate, "samples/s", "training_samples_per_s", reference, fleet=True)
    return judge_all("e2e.training", [measurement], "nothing measured")
