"""Shared fixtures. TensorFlow is quietened and every test runs in its own working folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow sets environment variables when first imported; import it before the leak check runs.
import tensorflow  # noqa: E402, F401

# submitit configures logging when first imported, which closes pytest's capture handlers when that
# happens inside a test: load it before any test runs, whichever tests are selected.
import harness.slurm.submit  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

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
