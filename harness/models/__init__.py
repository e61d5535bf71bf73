"""Models: registered builders (mlp, cnn, resnet), keras.applications, import paths, .keras files.

Every model comes out with the task head the loss expects (see `default_loss`), as a Functional
model so it saves and reloads as `.keras`.
"""

from __future__ import annotations

from harness.models.base import TASKS, ModelBuilder, Task, default_loss
from harness.models.build import build_model, describe_model
from harness.models.builtin import MODELS

__all__ = ["MODELS", "TASKS", "ModelBuilder", "Task", "build_model", "default_loss", "describe_model"]
