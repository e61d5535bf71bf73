"""Preflight version checks: every rank must run the same Python, TensorFlow, Keras and Horovod."""

from __future__ import annotations

import pytest

from harness.distribute.preflight import check_versions
from harness.errors import LaunchError


def info(rank: int, host: str, **versions: str) -> dict:
    return {"rank": rank, "host": host, "versions": {"python": "3.11.7", "tensorflow": "2.21.0", **versions}}


def test_matching_versions_pass() -> None:
    check_versions([info(0, "n1", keras="3.15.1"), info(1, "n2", keras="3.15.1")])


def test_version_mismatch_names_rank_host_and_versions() -> None:
    with pytest.raises(LaunchError) as err:
        check_versions([info(0, "n1", keras="3.15.1"), info(1, "n2", keras="3.15.1"), info(2, "gpu-b7", keras="3.9.0")])
    text = str(err.value)
    assert "rank 2 on gpu-b7" in text and "keras 3.9.0 (rank 0 has 3.15.1)" in text
    assert "rank 1" not in text


def test_a_package_missing_on_one_rank_is_a_mismatch() -> None:
    with pytest.raises(LaunchError, match="horovod missing"):
        check_versions([info(0, "n1", horovod="0.28.1"), info(1, "n2")])
