"""Test-set metrics from predictions alone, so a report can be rebuilt without the model.

The training code hands over NumPy arrays (class probabilities or regression outputs in
original units); everything here is plain scikit-learn and returns JSON-ready dicts.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import classification_report, confusion_matrix, log_loss, r2_score, roc_auc_score

TASKS = ("classification", "regression")


def evaluate_predictions(
    task: str, y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str] | None
) -> dict[str, Any]:
    """Compute the test metrics of one run.

    For classification `y_true` holds integer labels (n,) and `y_pred` probabilities (n, C);
    a single probability column (n,) or (n, 1) is read as P(class 1) of a sigmoid output.
    For regression both are (n,) or (n, k) in original units, and `class_names`, if given,
    names the k targets.
    """
    if task == "classification":
        return classification_metrics(y_true, y_pred, class_names)
    if task == "regression":
        return regression_metrics(y_true, y_pred, class_names)
    raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str] | None
) -> dict[str, Any]:
    """Accuracy, per-class scores, confusion matrix, ROC-AUC and log loss from probabilities."""
    proba = as_probabilities(y_pred)
    n_classes = proba.shape[1]
    labels = as_labels(y_true, n_classes)
    if labels.shape[0] != proba.shape[0]:
        raise ValueError(
            "y_true and y_pred must have the same number of samples. "
            f"Received: y_true {labels.shape[0]}, y_pred {proba.shape[0]}"
        )
    _require_samples(labels.shape[0])
    names = resolve_names(class_names, n_classes, default_prefix="", what="class_names")
    predicted = proba.argmax(axis=1)
    scores = per_class_scores(labels, predicted, names)
    auc, auc_reason, auc_per_class = roc_auc(labels, proba, names)
    result: dict[str, Any] = {
        "task": "classification",
        "n": int(labels.shape[0]),
        "n_classes": n_classes,
        "class_names": names,
        "accuracy": _finite(np.mean(predicted == labels)),
        **scores,
        "confusion_matrix": confusion(labels, predicted, names),
        "roc_auc": auc,
        "roc_auc_per_class": auc_per_class,
        "log_loss": _finite(log_loss(labels, proba, labels=list(range(n_classes)))),
    }
    if auc_reason is not None:
        result["roc_auc_reason"] = auc_reason
    result["headline"] = {"metric": "accuracy", "value": result["accuracy"], "higher_is_better": True}
    return result


def as_probabilities(y_pred: np.ndarray) -> np.ndarray:
    """Return (n, C) float64 probabilities whose rows sum to one.

    Rows are renormalised because float16 softmax outputs (mixed precision) miss 1.0 by more
    than scikit-learn tolerates, which would otherwise make ROC-AUC and log loss raise.
    """
    proba = np.asarray(y_pred, dtype=np.float64)
    if proba.ndim == 1 or (proba.ndim == 2 and proba.shape[1] == 1):
        positive = proba.reshape(-1)
        proba = np.column_stack([1.0 - positive, positive])
    if proba.ndim != 2:
        raise ValueError(f"y_pred must be probabilities of shape (n, classes). Received: shape={proba.shape}")
    bad = int(np.count_nonzero(~np.isfinite(proba)))
    if bad:
        raise ValueError(f"y_pred must be finite. Received: {bad} NaN or infinite values")
    if proba.size and proba.min() < 0:
        raise ValueError(
            f"y_pred must hold probabilities (softmax outputs), not logits. Received: min={proba.min():.4g}"
        )
    sums = proba.sum(axis=1, keepdims=True)
    uniform = np.full_like(proba, 1.0 / max(proba.shape[1], 1))
    return np.where(sums > 0, proba / np.where(sums > 0, sums, 1.0), uniform)


def as_labels(y_true: np.ndarray, n_classes: int) -> np.ndarray:
    """Return integer labels (n,); one-hot rows and an (n, 1) column are accepted too."""
    labels = np.asarray(y_true)
    if labels.ndim == 2 and labels.shape[1] == n_classes and n_classes > 1:
        labels = labels.argmax(axis=1)
    elif labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ValueError(f"y_true must be integer labels of shape (n,). Received: shape={labels.shape}")
    if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError(f"y_true must hold integer class labels. Received: {labels[:5].tolist()}...")
    labels = labels.astype(np.int64)
    out_of_range = sorted({int(v) for v in labels[(labels < 0) | (labels >= n_classes)]})
    if out_of_range:
        raise ValueError(
            f"y_true labels must lie in [0, {n_classes}) to match y_pred's {n_classes} columns. "
            f"Received: {out_of_range[:10]}"
        )
    return labels


def resolve_names(names: list[str] | None, count: int, default_prefix: str, what: str) -> list[str]:
    """Use the given names or number them; a wrong count or duplicates would mislabel tables."""
    if names is None:
        return [f"{default_prefix}{i}" for i in range(count)]
    resolved = [str(name) for name in names]
    if len(resolved) != count:
        raise ValueError(f"{what} must have {count} entries to match the predictions. Received: {resolved}")
    duplicates = sorted({name for name in resolved if resolved.count(name) > 1})
    if duplicates:
        raise ValueError(f"{what} must be unique. Received duplicates: {duplicates}")
    return resolved


def per_class_scores(labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class plus macro and weighted averages.

    Labels are passed explicitly so a class missing from the test split still gets its row.
    """
    report = classification_report(
        labels,
        predicted,
        labels=list(range(len(names))),
        target_names=names,
        output_dict=True,
        zero_division=0,
    )
    return {
        "per_class": {name: _score_row(report[name]) for name in names},
        "macro_avg": _score_row(report["macro avg"]),
        "weighted_avg": _score_row(report["weighted avg"]),
    }


def _score_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "precision": _finite(row["precision"]),
        "recall": _finite(row["recall"]),
        "f1-score": _finite(row["f1-score"]),
        "support": int(row["support"]),
    }


def confusion(labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Counts (rows: true class, columns: predicted) and the same rows normalised to recall."""
    counts = confusion_matrix(labels, predicted, labels=list(range(len(names))))
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)
    return {
        "labels": names,
        "counts": counts.astype(int).tolist(),
        "normalized": np.round(normalized, 6).tolist(),
    }


def roc_auc(
    labels: np.ndarray, proba: np.ndarray, names: list[str]
) -> tuple[float | None, str | None, dict[str, float | None]]:
    """Macro one-vs-rest ROC-AUC (binary: AUC of class 1), or None with the reason why.

    AUC is undefined for a class with no positive example, so instead of raising (as
    scikit-learn does) the report says which classes the test split lacks.
    """
    per_class = {
        names[c]: _finite(roc_auc_score(labels == c, proba[:, c]))
        for c in range(len(names))
        if 0 < np.count_nonzero(labels == c) < labels.size
    }
    absent = [names[c] for c in range(len(names)) if not np.any(labels == c)]
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        return None, f"ROC-AUC is undefined: class(es) absent from the test labels: {shown}", per_class
    if len(names) == 2:
        return _finite(roc_auc_score(labels, proba[:, 1])), None, per_class
    macro = roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=list(range(len(names))))
    return _finite(macro), None, per_class


def regression_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, target_names: list[str] | None
) -> dict[str, Any]:
    """MAE, RMSE and R² over all targets, and per target when there are several.

    The overall RMSE is the root of the mean squared error over every value, and the overall
    R² is the unweighted mean of the per-target R² (scikit-learn's "uniform_average").
    """
    truth = _as_matrix(y_true, "y_true")
    pred = _as_matrix(y_pred, "y_pred")
    if truth.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape. Received: y_true {truth.shape}, y_pred {pred.shape}"
        )
    _require_samples(truth.shape[0])
    n_targets = truth.shape[1]
    names = resolve_names(
        target_names if target_names is not None else (["target"] if n_targets == 1 else None),
        n_targets,
        default_prefix="target_",
        what="target names",
    )
    result: dict[str, Any] = {
        "task": "regression",
        "n": int(truth.shape[0]),
        "n_targets": n_targets,
        "target_names": names,
        **_regression_scores(truth, pred),
    }
    if n_targets > 1:
        result["per_target"] = {
            name: _regression_scores(truth[:, [i]], pred[:, [i]]) for i, name in enumerate(names)
        }
    result["headline"] = {"metric": "mae", "value": result["mae"], "higher_is_better": False}
    return result


def _as_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """Regression arrays as (n, k) float64; (n,) becomes one target."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"{what} must have shape (n,) or (n, targets). Received: shape={array.shape}")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{what} must be finite. Received: {bad} NaN or infinite values")
    return array


def _regression_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """R² needs two samples; with fewer it is reported as None rather than NaN."""
    error = pred - truth
    r2: float | None = None
    if truth.shape[0] >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            r2 = _finite(r2_score(truth, pred, multioutput="uniform_average"))
    return {
        "mae": _finite(np.mean(np.abs(error))),
        "rmse": _finite(math.sqrt(float(np.mean(error**2)))),
        "r2": r2,
    }


def _require_samples(n: int) -> None:
    """An empty test split is a data problem upstream; metrics of nothing would mislead."""
    if n == 0:
        raise ValueError("y_true must hold at least one test sample. Received: 0 samples")


def _finite(value: Any) -> float | None:
    """A plain float for JSON, or None where the metric is NaN (strict JSON has no NaN)."""
    number = float(value)
    return number if math.isfinite(number) else None
