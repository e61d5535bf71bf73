"""Shared fixtures and helpers: TensorFlow quietened, a working folder per test, the leak check, a
poll helper, and the real two-node Slurm cluster (the tests that use it are marked `slurm`)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow sets environment variables when first imported; import it before the leak check runs.
import tensorflow  # noqa: E402, F401

# submitit configures logging when first imported, which closes pytest's capture handlers when that
# happens inside a test: load it before any test runs, whichever tests are selected.
import harness.slurm.submit  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SLURM_CLUSTER = ROOT / "slurm" / "cluster.sh"

THREADS = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
"""One thread per pool in worker subprocesses: two cores are shared by every rank of a test."""


def horovod_available() -> bool:
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


needs_horovod = pytest.mark.skipif(
    not horovod_available() and not os.environ.get("HARNESS_REQUIRE_HOROVOD"),
    reason="Horovod is not installed (make test installs it; scripts/install_horovod.sh)",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slurm` every test that needs the real cluster, so `-m "not slurm"` runs without root.

    The mark follows the fixture (directly or through `slurm`), so a new real-cluster test cannot
    be forgotten; tryfirst puts it on before `-m` selects.
    """
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session", autouse=True)
def measurement_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty store of strategy measurements for the whole session (and the processes it starts):
    what `auto` picks in a test never depends on what `harness validate` measured on this machine."""
    from harness.distribute.measured import ENV

    folder = tmp_path_factory.mktemp("measurements")
    before = os.environ.get(ENV)
    os.environ[ENV] = str(folder)
    yield folder
    if before is None:
        del os.environ[ENV]
    else:
        os.environ[ENV] = before


@pytest.fixture(autouse=True)
def no_env_leaks() -> Iterator[None]:
    """Fail a test that leaves environment variables changed for the tests after it."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    changed.discard("PYTEST_CURRENT_TEST")
    assert not changed, f"test leaked environment variables: {sorted(changed)}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from an empty folder so relative run directories land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, what: str = "the condition"
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Tests wait for what they can observe (a file, a process state, a job leaving the queue) rather
    than sleeping for a guessed time: fast when the machine is idle, patient when it is loaded.
    After `timeout` seconds the test fails with a message naming `what` it waited for; an
    exception raised by `predicate` (an assertion that a process is still alive) ends it at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}", pytrace=False)
        time.sleep(interval)


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """Start (as root) the two-node Slurm cluster once per session; the variables its clients need.

    `slurm/cluster.sh start` (after `slurm/cluster.sh install`, which `make test` runs) starts the
    daemons or finds them running; every real-cluster test of the session shares them. A failure
    to start fails the tests instead of skipping them: run `pytest -m "not slurm"` where there is
    no root.
    """
    started = subprocess.run([str(SLURM_CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.fail(f"slurm/cluster.sh start failed:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}")
    exports = subprocess.run([str(SLURM_CLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    return {
        name: shlex.split(value)[0] if value else ""
        for name, value in re.findall(r"^export (\w+)=(.*)$", exports, flags=re.M)
    }


@pytest.fixture
def slurm(slurm_cluster: dict[str, str], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A test's working folder with the cluster's client variables (SLURM_CONF...) set and a private job index."""
    for name, value in slurm_cluster.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_STATE_HOME", str(workdir / "state"))
    return workdir
