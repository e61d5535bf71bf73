"""Diagnostic for scripts/bench_scaling.py's `multiworker_2_noreduce` contender, not a mode to train in.

With this directory on PYTHONPATH, every `harness` worker a launcher starts (HARNESS_RANK set)
skips the gradient all-reduce of Keras's TensorFlow optimizers: each worker applies its own
gradients, so the models drift apart, but everything else of a multiworker run stays (the
strategy, its gRPC server and collective executor, the launcher, the watchdog, the epoch-end
sums). Against `multiworker_2` it shows what the all-reduce costs; against the control (two
independent runs) what the rest of a multi-process run costs.
"""

import os

if os.environ.get("HARNESS_RANK"):  # a worker, pinned by the launcher before it started
    from keras.src.backend.tensorflow.optimizer import TFOptimizer

    TFOptimizer._all_reduce_sum_gradients = lambda self, grads_and_vars: list(grads_and_vars)
