"""`harness smoke`: a few steps of the real code path before spending an allocation.

It runs the user's config, shrunk (a small data subset, one epoch, a temporary run directory),
through the same launcher and training loop a real run uses, with the distributed wiring
included, then checks the results a real run depends on and prints PASS or FAIL for each.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.config import Config, load_config
from harness.rundir import RunDir, read_metrics
from harness.train import checkpoint

SMOKE_OVERRIDES = (
    "training.epochs=1",
    "training.progress=lines",
    "run.name=smoke",
    "training.early_stopping.enabled=false",
)


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str


def smoke_overrides(config: Config, output_dir: Path, max_samples: int, workers: int = 1) -> list[str]:
    wanted = max(max_samples, samples_for_two_steps(config, workers))
    limit = min(config.data.max_samples, wanted) if config.data.max_samples else wanted
    return [*SMOKE_OVERRIDES, f"run.output_dir={output_dir}", f"data.max_samples={limit}"]


def samples_for_two_steps(config: Config, workers: int) -> int:
    """A subset large enough for two global batches of training after the validation/test split.

    Training refuses a global batch larger than the training split, so a subset cut below that
    would make the smoke test fail where the real run would not.
    """
    per_process = config.distribute.cpu_replicas if config.distribute.strategy == "mirrored" else 1
    global_batch = config.training.batch_size * workers * per_process
    train_fraction = max(1.0 - config.data.validation_split - config.data.test_split, 0.05)
    return math.ceil(2 * global_batch / train_fraction)


def run_smoke(
    config_path: Path | None,
    overrides: Sequence[str],
    workers: int,
    run: Callable[[list[str], int], int],
    max_samples: int = 512,
) -> tuple[bool, list[Result]]:
    """Train the shrunk config with `run(args, workers)` and check what it produced."""
    base = load_config(config_path, overrides)
    output_dir = Path(tempfile.mkdtemp(prefix="harness-smoke-"))
    extra = smoke_overrides(base, output_dir, max_samples, workers)
    load_config(config_path, [*overrides, *extra])  # the shrunk config must validate too
    args = ["train", *([str(config_path)] if config_path else []), *overrides, *extra]
    code = run(args, workers)
    results = check_run(output_dir / "smoke", code, workers)
    passed = all(r.ok for r in results)
    if passed:
        shutil.rmtree(output_dir, ignore_errors=True)
    else:
        results.append(Result("kept for inspection", False, str(output_dir / "smoke")))
    return passed, results


def check_run(run_dir: Path, code: int, workers: int) -> list[Result]:
    results = [Result("all ranks exited 0", code == 0, f"exit code {code}")]
    run = RunDir(run_dir)
    lines = read_metrics(run.metrics)
    losses = [line.get("loss", math.nan) for line in lines]
    results.append(
        Result(
            "loss is finite",
            bool(losses) and all(math.isfinite(x) for x in losses),
            f"losses {losses}" if losses else f"no {run.metrics.name} lines",
        )
    )
    latest = checkpoint.resolve(run.checkpoints)
    results.append(Result("checkpoint written", latest is not None, str(latest)))
    report_path = run.report
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    results.append(Result("report written", bool(report), str(report_path)))
    world = report.get("training", {}).get("world_size")
    results.append(Result("ranks took part", world == workers, f"world size {world}, expected {workers}"))
    results.append(Result("model saved", run.model.is_file(), str(run.model)))
    return results


def format_results(passed: bool, results: list[Result]) -> str:
    rows = [f"  {'ok  ' if r.ok else 'FAIL'}  {r.name}: {r.detail}" for r in results]
    return "\n".join([*rows, "PASS" if passed else "FAIL"])
