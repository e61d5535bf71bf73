"""Matrix multiply throughput per device in TensorFlow, with a correctness check first.

fp32 on every device; fp16 and bf16 on GPUs (their tensor cores). A device that multiplies
fast but wrong is worse than a slow one, so each device first multiplies a small matrix and
compares it with NumPy in float64. GPUs are judged against the shipped datasheet table; CPUs
against a site's `cpus:` row or, without one, the median of the nodes validated together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.distribute.measured import cpu_model
from harness.validate.checks.timing import best_seconds
from harness.validate.context import NodeContext
from harness.validate.judge import judge_all
from harness.validate.references import Kind
from harness.validate.results import CheckResult, Measurement
from harness.validate.spec import check
from harness.validate.verdict import Verdict

SIZES = {("GPU", False): 8192, ("GPU", True): 4096, ("CPU", False): 2048, ("CPU", True): 1024}
BUDGET_S = {False: 2.0, True: 0.5}
CHECK_SIZE = 256
MAX_RELATIVE_ERROR = 1e-2  # TF32 (on by default on Ampere and later) keeps about 3 decimal digits


@check("compute.matmul", "matmul throughput per device: fp32, and fp16/bf16 on GPUs", unit="TFLOP/s (CPU: GFLOP/s)",
       reference="gpus.<model>.matmul_*, cpus.<model>.matmul_fp32, fleet median", needs=("tensorflow",),
       timeout_s=300)
def compute_matmul(ctx: NodeContext) -> CheckResult:
    import tensorflow as tf

    measurements: list[Measurement] = []
    for device, kind, model in devices(tf):
        wrong = wrong_results(tf, device)
        if wrong:
            return CheckResult("compute.matmul", Verdict.FAIL, f"{device} ({model}): {wrong}")
        dtypes = ("float32", "float16", "bfloat16") if kind == "gpus" else ("float32",)
        for dtype in dtypes:
            measurements.append(measure(ctx, tf, device, kind, model, dtype))
    return judge_all("compute.matmul", measurements, "no device to measure")


def devices(tf: Any) -> list[tuple[str, Kind, str]]:
    """(TensorFlow device, table section, model name): every GPU, else the CPU."""
    found: list[tuple[str, Kind, str]] = []
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(gpu)
        found.append((f"/GPU:{index}", "gpus", str(details.get("device_name", "unknown GPU"))))
    return found or [("/CPU:0", "cpus", cpu_model())]


def wrong_results(tf: Any, device: str) -> str | None:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((CHECK_SIZE, CHECK_SIZE)).astype(np.float32) for _ in range(2))
    with tf.device(device):
        got = tf.matmul(tf.constant(a), tf.constant(b)).numpy().astype(np.float64)
    want = a.astype(np.float64) @ b.astype(np.float64)
    error = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    if not np.isfinite(error) or error > MAX_RELATIVE_ERROR:
        return f"matmul gives wrong results (relative error {error:.2g}, allowed {MAX_RELATIVE_ERROR:g})"
    return None


def measure(ctx: NodeContext, tf: Any, device: str, kind: Kind, model: str, dtype: str) -> Measurement:
    light = ctx.settings.light
    n = SIZES[("GPU" if kind == "gpus" else "CPU", light)]
    with tf.device(device):
        a = tf.random.uniform((n, n), dtype=tf.float32, seed=1)
        b = tf.random.uniform((n, n), dtype=tf.float32, seed=2)
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)

        def once() -> object:
            product = tf.matmul(a, b)
            return product[0, 0].numpy()  # waits for the device

        seconds = best_seconds(once, BUDGET_S[light])
    flops = 2.0 * n**3 / seconds
    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
    metric = f"matmul_{short}"
    unit, scale = ("TFLOP/s", 1e12) if kind == "gpus" else ("GFLOP/s", 1e9)
    return Measurement(
        f"{device.lstrip('/')} {short}", flops / scale, unit, metric,
        ctx.references.reference(kind, model, metric), fleet=True,
    )
