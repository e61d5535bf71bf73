"""Models: registered builders (mlp, cnn, resnet), keras.applications, import paths, .keras files.

Registered and applications models come out with the harness's task head (softmax probabilities
or a linear regression output, see `default_loss`), as Functional models so they save and reload
as `.keras`. A user's builder returns its own model, possibly compiled and possibly ending in
logits: `compiled_setup` and `has_logits_head` tell training and evaluation which.
"""

from __future__ import annotations

from harness.models.base import TASKS, ModelBuilder, Task, default_loss
from harness.models.build import CompiledSetup, build_model, compiled_setup, describe_model, has_logits_head
from harness.models.builtin import MODELS

__all__ = [
    "MODELS",
    "TASKS",
    "CompiledSetup",
    "ModelBuilder",
    "Task",
    "build_model",
    "compiled_setup",
    "default_loss",
    "describe_model",
    "has_logits_head",
]
