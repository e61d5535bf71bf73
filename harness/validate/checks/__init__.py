"""The node-local checks; importing this package registers them, in the order they run.

Cheap health checks first (a node with a full disk or a broken GPU is known in seconds), then
benchmarks, then end-to-end training.
"""

from harness.validate.checks import basics, stack, gpu, bandwidth, compute, collective, e2e  # noqa: F401, I001
