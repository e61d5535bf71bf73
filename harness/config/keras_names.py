"""Keras loss and optimizer names, known without importing Keras.

The config is checked in processes that never import TensorFlow (`--workers N`, `harness
submit`), so the names live here as plain tables; a test compares them with the installed Keras,
so a Keras release that adds or renames one is noticed. What a loss expects is recorded with its
name, so a loss that cannot fit the task is refused with the reason before any data is read.
"""

from __future__ import annotations

from typing import Literal

LossKind = Literal["class_index", "one_hot", "regression", "unsupported"]

# Canonical name (the Keras function's name) -> what the loss compares.
# class_index: integer labels against class scores; one_hot: a (n, classes) target against the
# class scores (the harness one-hot encodes its integer labels); regression: values against values.
LOSSES: dict[str, LossKind] = {
    "sparse_categorical_crossentropy": "class_index",
    "categorical_crossentropy": "one_hot",
    "categorical_focal_crossentropy": "one_hot",
    "binary_crossentropy": "one_hot",
    "binary_focal_crossentropy": "one_hot",
    "categorical_hinge": "one_hot",
    "hinge": "one_hot",
    "squared_hinge": "one_hot",
    "kl_divergence": "one_hot",
    "dice": "one_hot",
    "tversky": "one_hot",
    "mean_squared_error": "regression",
    "mean_absolute_error": "regression",
    "mean_absolute_percentage_error": "regression",
    "mean_squared_logarithmic_error": "regression",
    "huber": "regression",
    "log_cosh": "regression",
    "cosine_similarity": "regression",
    "poisson": "regression",
    "ctc": "unsupported",
    "circle": "unsupported",
}

UNSUPPORTED_WHY = {
    "ctc": "it scores label sequences (speech, handwriting), and the harness trains one label or value per example",
    "circle": "it trains embeddings for metric learning from pairs within a batch, not class scores or values",
}

# Every other spelling Keras accepts -> the canonical name.
LOSS_ALIASES: dict[str, str] = {
    "mse": "mean_squared_error",
    "MSE": "mean_squared_error",
    "mae": "mean_absolute_error",
    "MAE": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "MAPE": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "MSLE": "mean_squared_logarithmic_error",
    "bce": "binary_crossentropy",
    "BCE": "binary_crossentropy",
    "kld": "kl_divergence",
    "KLD": "kl_divergence",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "CategoricalFocalCrossentropy": "categorical_focal_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy",
    "BinaryFocalCrossentropy": "binary_focal_crossentropy",
    "CategoricalHinge": "categorical_hinge",
    "Hinge": "hinge",
    "SquaredHinge": "squared_hinge",
    "KLDivergence": "kl_divergence",
    "Dice": "dice",
    "Tversky": "tversky",
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error",
    "Huber": "huber",
    "LogCosh": "log_cosh",
    "CosineSimilarity": "cosine_similarity",
    "Poisson": "poisson",
    "CTC": "ctc",
    "Circle": "circle",
}

# Losses with a `from_logits` argument: they can take unnormalised scores.
FROM_LOGITS_LOSSES = frozenset(
    {
        "sparse_categorical_crossentropy",
        "categorical_crossentropy",
        "categorical_focal_crossentropy",
        "binary_crossentropy",
        "binary_focal_crossentropy",
    }
)

# Name in the config -> class in keras.optimizers. Wrappers (LossScaleOptimizer, MultiOptimizer)
# are left out: they wrap another optimizer rather than being one.
OPTIMIZERS: dict[str, str] = {
    "adadelta": "Adadelta",
    "adafactor": "Adafactor",
    "adagrad": "Adagrad",
    "adam": "Adam",
    "adamax": "Adamax",
    "adamw": "AdamW",
    "ftrl": "Ftrl",
    "lamb": "Lamb",
    "lion": "Lion",
    "muon": "Muon",
    "nadam": "Nadam",
    "rmsprop": "RMSprop",
    "schedulefreeadamw": "ScheduleFreeAdamW",
    "sgd": "SGD",
}

AUTO = "auto"


def canonical_loss(name: str) -> str | None:
    """The canonical Keras name of a loss spelling, or None when Keras has no such loss."""
    if name in LOSSES:
        return name
    return LOSS_ALIASES.get(name)


def loss_names() -> list[str]:
    """Every loss spelling the config accepts, canonical names first."""
    return [AUTO, *LOSSES, *LOSS_ALIASES]
