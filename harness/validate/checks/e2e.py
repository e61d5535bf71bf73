"""End to end: the same short synthetic training run through each strategy, samples/s and scaling.

Each run is a child process (`python -m harness train ... --workers N`), the way users start
training, so the whole stack is exercised (config, data pipeline, model, strategy and its
collectives, training loop, checkpoint, report) and a hang is ended by a time limit. Run
directories go to a temporary folder in scratch, removed afterwards.

What runs: `single` (one process, one device); with N = the node's GPUs (2 on a CPU node)
`multiworker --workers N` and, when Horovod is installed, `horovod --workers N`; on a GPU node
with more than one GPU also `mirrored` (one process, all its GPUs). A node with one GPU has
nothing to scale to and runs `single` only.

What is measured, per strategy: the global training rate (samples of every replica per second,
as rank 0 reports it) of the run's last epoch, from `metrics.jsonl`. The report's
`train_samples_per_s` is the same global rate over the whole run, but it includes the first
epoch's tracing and compilation of the step function, which in a run this short outweighs the
training itself and differs between strategies; the last epoch is steady state. From the rates,
the scaling efficiency of each N-replica strategy: rate_N / (N x rate_1), 1.0 being perfect.

How it is judged:
- each rate is a fleet measurement (nodes validated together are compared on it); `single` is
  also judged against `training_samples_per_s` in the reference table when a site gives one;
- efficiency below 0.5 is a WARN on a GPU node, where each replica has a device of its own and
  perfect scaling is possible; never a FAIL (a small model's all-reduce can outweigh its step).
  On a CPU node the N processes share the cores the single process already used, so about 1/N
  is expected there and the efficiency is reported, not judged: it is what a site reads to
  choose `distribute.strategy` for its CPU nodes (the message names the fastest);
- a strategy that fails to run (or runs as another strategy) leaves its measurements out and
  the check is an ERROR naming it; Horovod not installed is said in the message, not an error.

The rates that ran are saved for `distribute.strategy=auto` (harness.distribute.measured: one
file per node in the measurements folder, with the job's partition and this machine's stack), and
the message says what `auto` now picks here for N processes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import __version__
from harness.distribute import measured
from harness.distribute.measured import cpu_model
from harness.envinfo import utc_now
from harness.errors import RunDirError
from harness.rundir import last_metrics, read_report
from harness.rundir.layout import METRICS
from harness.validate.context import NodeContext
from harness.validate.judge import judge_measurement
from harness.validate.nvml import NvmlUnavailable
from harness.validate.references import Kind, format_value
from harness.validate.results import CheckResult, Measurement, Reference
from harness.validate.spec import check
from harness.validate.verdict import Verdict, worst

NAME = "e2e.training"
RUN_TIMEOUT_S = 300.0
MAX_RUNS = 4  # single, mirrored, multiworker, horovod
CPU_PROCESSES = 2
EFFICIENCY_WARN = 0.5
EFFICIENCY_UNIT = "of ideal"
RUN_NAME = "validate-e2e"
OVERRIDES = (
    "data.dataset=synthetic_tabular",
    "data.synthetic.samples=16384",
    "model.name=mlp",
    "training.epochs=2",
    "training.batch_size=64",
    "training.progress=none",
    "training.early_stopping.enabled=false",
    "report.html=false",
    "report.plots=false",
    f"run.name={RUN_NAME}",
)


@dataclass(frozen=True)
class Plan:
    """One strategy to run: `processes` for `--workers`, `replicas` the devices it trains on."""

    strategy: str
    processes: int = 1
    replicas: int = 1

    @property
    def label(self) -> str:
        return self.strategy if self.replicas == 1 else f"{self.strategy} x{self.replicas}"


@dataclass(frozen=True)
class Outcome:
    """A plan's result: its rate in samples/s, or why it has none."""

    plan: Plan
    rate: float | None
    error: str = ""


RunPlan = Callable[[Plan, Path], Outcome]
"""Runs one plan with run directories under the given folder (a fake in tests)."""


def node_model(ctx: NodeContext) -> tuple[Kind, str]:
    """Where training runs: the first GPU's model, else the CPU's."""
    try:
        return "gpus", ctx.gpu_snapshot().gpus[0].name
    except NvmlUnavailable:
        return "cpus", cpu_model()


def gpu_count(ctx: NodeContext) -> int:
    try:
        return len(ctx.gpu_snapshot().gpus)
    except NvmlUnavailable:
        return 0


def plans(gpus: int, horovod: bool) -> list[Plan]:
    """What runs on a node with `gpus` GPUs (0: a CPU node); `single` first, as the others' base."""
    n = gpus if gpus else CPU_PROCESSES
    chosen = [Plan("single")]
    if n < 2:
        return chosen
    if gpus > 1:
        chosen.append(Plan("mirrored", 1, gpus))
    chosen.append(Plan("multiworker", n, n))
    if horovod:
        chosen.append(Plan("horovod", n, n))
    return chosen


def train_command(plan: Plan, output_dir: Path) -> list[str]:
    return [sys.executable, "-m", "harness", "train", *OVERRIDES, f"distribute.strategy={plan.strategy}",
            f"run.output_dir={output_dir}", "--workers", str(plan.processes)]


def run_plan(plan: Plan, folder: Path) -> Outcome:
    """`harness train` with this plan in a child process; the last epoch's global samples/s."""
    output_dir = folder / plan.strategy
    try:
        done = subprocess.run(train_command(plan, output_dir), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return Outcome(plan, None, f"did not finish in {RUN_TIMEOUT_S:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Outcome(plan, None, f"harness train exited {done.returncode}: {last[:300]}")
    return read_rate(plan, output_dir / RUN_NAME)


def read_rate(plan: Plan, run_dir: Path) -> Outcome:
    """The last epoch's rate, once the report shows the run trained as planned (not as a fallback)."""
    try:
        training = read_report(run_dir).get("training", {})
    except RunDirError as err:
        return Outcome(plan, None, str(err)[:300])
    ran_as = (training.get("strategy"), training.get("replicas"))
    if ran_as != (plan.strategy, plan.replicas):
        return Outcome(plan, None, f"ran as {ran_as[0]!r} with {ran_as[1]!r} replicas")
    last = last_metrics(run_dir / METRICS)
    if last is None or not isinstance(last.get("samples_per_s"), int | float):
        return Outcome(plan, None, f"no samples_per_s in {METRICS}")
    return Outcome(plan, float(last["samples_per_s"]))


def efficiency(rate_n: float, replicas: int, rate_1: float) -> float:
    """Scaling efficiency: the N-replica rate over N times the single rate (1.0 is perfect)."""
    return rate_n / (replicas * rate_1)


def efficiency_finding(label: str, value: float, on_gpus: bool) -> tuple[Verdict, str]:
    """WARN below EFFICIENCY_WARN on a GPU node; on a CPU node reported only (module docstring)."""
    text = f"{label}: efficiency {value:.2f}"
    if on_gpus and value < EFFICIENCY_WARN:
        return Verdict.WARN, f"{text}, below {EFFICIENCY_WARN} of ideal scaling"
    return Verdict.PASS, text


def fastest(outcomes: Sequence[Outcome], on_gpus: bool) -> str:
    """ "fastest with 2 processes: multiworker 1.2x horovod", among the strategies with N replicas
    (what a site reads to pick one); empty with fewer than two of them."""
    scaled = sorted(((o.rate, o.plan) for o in outcomes if o.rate and o.plan.replicas > 1),
                    key=lambda pair: -pair[0])
    if len(scaled) < 2:
        return ""
    (best, plan), rest = scaled[0], scaled[1:]
    where = f"{plan.replicas} {'GPUs' if on_gpus else 'processes'}"
    return f"fastest with {where}: {plan.strategy} " + ", ".join(f"{best / rate:.1f}x {other.strategy}"
                                                                   for rate, other in rest)


def judge_outcomes(outcomes: Sequence[Outcome], reference: Reference | None, on_gpus: bool,
                   notes: Sequence[str] = ()) -> CheckResult:
    """The check's result from every plan's outcome: failures first (ERROR), then the worst finding."""
    measurements: list[Measurement] = []
    findings: list[tuple[Verdict, str]] = []
    single = next((o.rate for o in outcomes if o.plan.strategy == "single"), None)
    for outcome in outcomes:
        if outcome.rate is None:
            findings.append((Verdict.ERROR, f"{outcome.plan.label} failed: {outcome.error}"))
            continue
        rate = Measurement(outcome.plan.label, outcome.rate, "samples/s",
                           "training_samples_per_s" if outcome.plan.strategy == "single" else None,
                           reference if outcome.plan.strategy == "single" else None, fleet=True)
        measurements.append(rate)
        findings.append(judge_measurement(rate))
        if outcome.plan.replicas > 1 and single:
            value = efficiency(outcome.rate, outcome.plan.replicas, single)
            measurements.append(Measurement(f"{outcome.plan.label} efficiency", value, EFFICIENCY_UNIT))
            findings.append(efficiency_finding(outcome.plan.label, value, on_gpus))
    if not findings:
        return CheckResult(NAME, Verdict.ERROR, "nothing ran")
    verdict = worst(v for v, _ in findings)
    problems = [text for v, text in findings if v is verdict and v is not Verdict.PASS]
    rates = [f"single {format_value(single, 'samples/s')}"] if single else []
    scaled = [f"{m.name.removesuffix(' efficiency')} {m.value:.2f}" for m in measurements if m.unit == EFFICIENCY_UNIT]
    efficiencies = ["efficiency " + ", ".join(scaled)] if scaled else []
    summary = [*problems, *rates, *efficiencies, fastest(outcomes, on_gpus), *notes]
    return CheckResult(NAME, verdict, "; ".join(part for part in summary if part), tuple(measurements))


def measure(ctx: NodeContext, run: RunPlan = run_plan) -> CheckResult:
    """Every plan for this node, run one after the other in a scratch folder removed afterwards."""
    horovod_missing = ctx.missing("horovod") is not None
    gpus = gpu_count(ctx)
    folder = Path(tempfile.mkdtemp(prefix="harness-validate-", dir=ctx.settings.scratch_dir))
    try:
        outcomes = [run(plan, folder) for plan in plans(gpus, not horovod_missing)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    reference = ctx.references.reference(*node_model(ctx), "training_samples_per_s")
    notes = ["horovod: not installed"] if horovod_missing and len(outcomes) > 1 else []
    notes += save_rates(ctx, outcomes, not horovod_missing)
    return judge_outcomes(outcomes, reference, gpus > 0, notes)


def save_rates(ctx: NodeContext, outcomes: Sequence[Outcome], horovod_installed: bool) -> list[str]:
    """Save the multi-process rates that ran for `auto`; what it now picks here, as a note."""
    scaled = [o for o in outcomes if o.rate and o.plan.processes > 1]
    folder = ctx.settings.measurements_dir
    if folder is None or not scaled:
        return []
    record = measured.Record(
        node=ctx.node,
        partition=ctx.partition,
        machine=measured.this_machine(),
        versions=measured.stack_versions(),
        processes=scaled[0].plan.processes,
        rates={o.plan.strategy: float(o.rate) for o in outcomes if o.rate},
        measured_at=utc_now(),
        measured_by=f"harness validate {__version__} (e2e.training)",
    )
    try:
        measured.write_record(folder, record)
    except OSError as err:
        return [f"rates not saved for auto ({err})"]
    choice = measured.auto_choice([record], processes=record.processes, versions=record.versions,
                                  horovod_installed=horovod_installed, machine=record.machine)
    return [f"auto with {record.processes} processes now picks {choice.strategy} here"]


@check(NAME, "a short synthetic run through `harness train` per strategy (single; multiworker and Horovod "
       "with N processes; mirrored on multi-GPU nodes): samples/s and 1->N scaling efficiency",
       unit="samples/s", reference="cpus/gpus.<model>.training_samples_per_s (single), fleet median; "
       f"efficiency below {EFFICIENCY_WARN} WARNs on GPU nodes",
       light=False, needs=("tensorflow",), timeout_s=MAX_RUNS * RUN_TIMEOUT_S + 30)
def training(ctx: NodeContext) -> CheckResult:
    return measure(ctx)
