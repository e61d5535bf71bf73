"""A warning for mixed precision where it only slows training down.

bfloat16 and float16 pay off on GPUs (and TPUs) with hardware for them; on most CPUs TensorFlow
emulates or converts them, and a run measured 4.4x slower than float32. The warning comes before
the model is built, so a user sees it before waiting for the first epoch.
"""

from __future__ import annotations

import warnings


class PrecisionWarning(UserWarning):
    """training.precision asks for mixed precision on a process without a GPU."""


def warn_if_slow_precision(precision: str, gpus: int | None = None, enabled: bool = True) -> bool:
    """Warn when `precision` is mixed but this process sees no GPU; returns whether it warned.

    `gpus` is the number of GPUs this process uses (None: ask TensorFlow); `enabled` lets only
    the chief warn, so a multi-process run prints it once.
    """
    if not enabled or precision == "float32":
        return False
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_logical_devices("GPU"))
    if gpus:
        return False
    kind = "bfloat16" if precision == "mixed_bfloat16" else "float16"
    warnings.warn(
        PrecisionWarning(
            f"training.precision={precision} on a machine without a GPU: {kind} math is typically several "
            "times slower on CPU than float32 (it is emulated or converted on most CPUs). "
            "Use training.precision=float32 unless the run is meant for a GPU."
        ),
        stacklevel=2,
    )
    return True
