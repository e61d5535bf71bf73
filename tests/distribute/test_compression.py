"""distribute.gradient_compression=fp16: the gradient all-reduce moves float16, on every backend.

The probe runs the training loop's own sequence (make_strategy, optimizer built in scope,
`prepare_optimizer`, `aggregate_gradients`, `apply_gradients` inside `strategy.run`) with
SGD at learning rate 1, so the variable ends at minus the all-reduced gradient and shows
whether it crossed as float16: 1.0001 has no float16 neighbour closer than 1.0, and 3e-9
underflows to 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import THREADS, needs_horovod

GRADIENT = [1.0001, 3e-9, -0.3]

PROBE = """
import json
import sys

import keras
import numpy as np
import tensorflow as tf

from harness.config import DistributeConfig
from harness.distribute import make_strategy

name, compression, precision, force = sys.argv[1:5]
strategy = make_strategy(DistributeConfig(strategy=name, cpu_replicas=2, gradient_compression=compression), {})
if force == "force":  # one process has one replica; check the backend's mechanism anyway
    strategy.gradient_compression = compression
with strategy.scope():
    variable = keras.Variable(np.zeros(3, np.float32))
    optimizer = keras.optimizers.SGD(1.0)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0)
    optimizer.build([variable])
strategy.prepare_optimizer(optimizer)


def step():
    # made in each replica, as gradients are: one tensor shared by every replica is not summed
    share = tf.constant(GRADIENT, tf.float32) / strategy.num_replicas
    grads = strategy.aggregate_gradients([share])
    optimizer.apply_gradients(zip(grads, [variable], strict=True))


tf.function(lambda: strategy.run(step, args=()))()
print(json.dumps({"described": strategy.describe()["gradient_compression"], "replicas": strategy.num_replicas,
                  "value": [float(x) for x in variable.numpy()]}))
"""


def probe(tmp_path: Path, *args: str) -> dict[str, object]:
    script = tmp_path / "probe.py"  # a file: AutoGraph reads the source of what it converts
    script.write_text(f"GRADIENT = {GRADIENT!r}\n" + PROBE)
    env = {**os.environ, **THREADS}
    env.pop("TF_CONFIG", None)
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def reduced(replicas: int, half: bool) -> np.ndarray:
    """What the all-reduce sums from `replicas` equal shares, in float16 or float32."""
    dtype = np.float16 if half else np.float32
    share = (np.float32(GRADIENT) / np.float32(replicas)).astype(dtype)
    return np.sum([share] * replicas, axis=0, dtype=dtype).astype(np.float32)


@pytest.mark.parametrize(
    ("strategy", "compression", "precision", "force", "half"),
    [
        pytest.param("mirrored", "fp16", "float32", "", True, id="mirrored-fp16"),
        pytest.param("mirrored", "fp16", "mixed_float16", "", True, id="mirrored-fp16-loss-scaled"),
        pytest.param("mirrored", "none", "float32", "", False, id="mirrored-none"),
        pytest.param("multiworker", "fp16", "float32", "force", True, id="multiworker-fp16"),
        pytest.param("horovod", "fp16", "float32", "force", True, id="horovod-fp16", marks=needs_horovod),
    ],
)
def test_gradients_cross_as_float16_when_asked(
    tmp_path: Path, strategy: str, compression: str, precision: str, force: str, half: bool
) -> None:
    found = probe(tmp_path, strategy, compression, precision, force or "-")
    replicas = int(found["replicas"])  # type: ignore[call-overload]
    assert found["described"] == compression
    np.testing.assert_array_equal(np.float32(found["value"]), -reduced(replicas, half))
    # the two sums differ, so the assertion above tells them apart
    assert not np.array_equal(reduced(replicas, True), reduced(replicas, False))


def test_one_replica_has_nothing_to_compress(tmp_path: Path) -> None:
    """The same YAML runs on a laptop: with one replica the key changes nothing and says so."""
    found = probe(tmp_path, "single", "fp16", "float32", "-")
    assert found["described"] == "none"
    np.testing.assert_array_equal(np.float32(found["value"]), -reduced(1, False))
