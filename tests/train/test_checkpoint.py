"""Checkpoint files: saving, the latest/best/previous pointers, pruning, and a mismatch on load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from harness.errors import RunDirError
from harness.train import checkpoint
from harness.train.checkpoint import LoopState


def test_checkpoint_round_trip_and_pruning(tmp_path: Path) -> None:
    variables = [tf.Variable(np.arange(6.0).reshape(2, 3)), tf.Variable(np.ones(4))]
    opt = [tf.Variable(3)]
    first = checkpoint.save(
        tmp_path, variables, opt, LoopState(epoch=1, global_step=5, best_value=0.5), best=True
    )
    variables[0].assign(np.zeros((2, 3)))
    second = checkpoint.save(tmp_path, variables, opt, LoopState(epoch=2, global_step=10), best=False)
    third = checkpoint.save(tmp_path, variables, opt, LoopState(epoch=3, global_step=15), best=False)
    assert checkpoint.resolve(tmp_path, "previous") == second  # kept to fall back to
    fourth = checkpoint.save(tmp_path, variables, opt, LoopState(epoch=4, global_step=20), best=False)
    assert checkpoint.resolve(tmp_path, "best") == first
    assert checkpoint.resolve(tmp_path, "latest") == fourth
    assert checkpoint.resolve(tmp_path, "previous") == third
    assert not second.exists(), "a checkpoint no pointer names is deleted"
    assert not list(tmp_path.glob(".step-*")), "no temporary folder is left behind"
    state = checkpoint.load(first, variables, opt)
    assert state.epoch == 1 and state.best_value == 0.5
    np.testing.assert_array_equal(variables[0].numpy(), np.arange(6.0).reshape(2, 3))


def test_checkpoint_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    folder = checkpoint.save(tmp_path, [tf.Variable(np.ones(3))], [], LoopState(), best=False)
    with pytest.raises(RunDirError, match="shape"):
        checkpoint.load(folder, [tf.Variable(np.ones(4))], [])
    with pytest.raises(RunDirError, match="was the config changed"):
        checkpoint.load(folder, [tf.Variable(np.ones(3)), tf.Variable(1.0)], [])

