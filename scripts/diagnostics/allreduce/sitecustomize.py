"""Diagnostic for scripts/bench_scaling.py's `multiworker_2_noreduce` and `multiworker_2_scalar`
contenders, not a mode to train in.

With this directory on PYTHONPATH and HARNESS_DIAGNOSTIC_ALLREDUCE set, every `harness` worker a
launcher starts (HARNESS_RANK set) replaces the gradient all-reduce of Keras's TensorFlow
optimizers; each worker then applies its own gradients, so the models drift apart, while
everything else of a multiworker run stays (the strategy, its gRPC server and collective
executor, the launcher, the watchdog, the epoch-end sums):

- `none`: no collective in the step at all; against `multiworker_2`, what the all-reduce costs.
- `scalar`: one all-reduce of a single number per step instead of the gradients: the workers
  still wait for each other every step, but move no gradient bytes; so it separates waiting
  for the slower worker (and the collective's fixed cost) from moving 2 MB.
"""

import os

MODE = os.environ.get("HARNESS_DIAGNOSTIC_ALLREDUCE")

if MODE in ("none", "scalar") and os.environ.get("HARNESS_RANK"):  # a worker the launcher pinned
    import tensorflow as tf
    from keras.src.backend.tensorflow.optimizer import TFOptimizer

    def _local(self, grads_and_vars):
        return list(grads_and_vars)

    def _scalar_only(self, grads_and_vars):
        pairs = list(grads_and_vars)
        token = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.zeros([]))
        return [(None if g is None else g + tf.cast(token, g.dtype), v) for g, v in pairs]

    TFOptimizer._all_reduce_sum_gradients = _local if MODE == "none" else _scalar_only
