"""Memory bandwidth: host memory (NumPy copy), device memory and host<->device (TensorFlow, GPUs).

Copies count the bytes read plus the bytes written, as STREAM's copy kernel does.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from harness.distribute.measured import cpu_model
from harness.validate.checks.compute import devices
from harness.validate.checks.timing import best_seconds
from harness.validate.context import NodeContext
from harness.validate.judge import judge_all
from harness.validate.results import CheckResult, Measurement
from harness.validate.spec import check

MIB = 2**20
HOST_MIB = {False: 512, True: 128}
DEVICE_MIB = {False: 1024, True: 256}
BUDGET_S = {False: 2.0, True: 0.5}


@check("memory.host_bandwidth", "host memory copy bandwidth (NumPy, one thread)", unit="GB/s",
       reference="cpus.<model>.host_memory_bandwidth, fleet median")
def host_bandwidth(ctx: NodeContext) -> CheckResult:
    size = HOST_MIB[ctx.settings.light] * MIB
    source = np.ones(size // 8, dtype=np.float64)
    target = np.empty_like(source)
    seconds = best_seconds(lambda: np.copyto(target, source), BUDGET_S[ctx.settings.light])
    rate = 2 * size / seconds / 1e9
    model = cpu_model()
    reference = ctx.references.reference("cpus", model, "host_memory_bandwidth")
    measurement = Measurement("copy", rate, "GB/s", "host_memory_bandwidth", reference, fleet=True)
    return judge_all("memory.host_bandwidth", [measurement], "nothing measured")


@check("memory.device_bandwidth", "GPU memory bandwidth (an elementwise kernel reading and writing)",
       unit="GB/s", reference="gpus.<model>.device_memory_bandwidth", needs=("gpu", "tensorflow"), timeout_s=120)
def device_bandwidth(ctx: NodeContext) -> CheckResult:
    import tensorflow as tf

    size = DEVICE_MIB[ctx.settings.light] * MIB
    measurements = []
    for device, kind, model in devices(tf):
        if kind != "gpus":
            continue
        with tf.device(device):
            x = tf.ones((size // 4,), dtype=tf.float32)
            seconds = best_seconds(partial(_negate, tf, x), BUDGET_S[ctx.settings.light])
        reference = ctx.references.reference(kind, model, "device_memory_bandwidth")
        measurements.append(Measurement(device.lstrip("/"), 2 * size / seconds / 1e9, "GB/s",
                                        "device_memory_bandwidth", reference, fleet=True))
    return judge_all("memory.device_bandwidth", measurements, "TensorFlow sees no GPU (NVML does)")


@check("memory.host_device_bandwidth", "host to device and device to host copy bandwidth per GPU",
       unit="GB/s", reference="gpus.<model>.host_device_bandwidth", needs=("gpu", "tensorflow"), timeout_s=120)
def host_device_bandwidth(ctx: NodeContext) -> CheckResult:
    import tensorflow as tf

    size = DEVICE_MIB[ctx.settings.light] * MIB
    budget = BUDGET_S[ctx.settings.light]
    measurements = []
    with tf.device("/CPU:0"):
        host = tf.ones((size // 4,), dtype=tf.float32)
    for device, kind, model in devices(tf):
        if kind != "gpus":
            continue
        reference = ctx.references.reference(kind, model, "host_device_bandwidth")
        with tf.device(device):
            on_device = tf.identity(host)
            to_device = best_seconds(lambda: _sync(tf.identity(host)), budget)
        to_host = best_seconds(on_device.numpy, budget)
        for direction, seconds in (("to device", to_device), ("to host", to_host)):
            measurements.append(Measurement(f"{device.lstrip('/')} {direction}", size / seconds / 1e9, "GB/s",
                                            "host_device_bandwidth", reference, fleet=True))
    return judge_all("memory.host_device_bandwidth", measurements, "TensorFlow sees no GPU (NVML does)")


def _negate(tf: Any, x: Any) -> object:
    return _sync(tf.negative(x))


def _sync(tensor: Any) -> object:
    """Wait for the device by reading one element back."""
    return tensor[0].numpy()
