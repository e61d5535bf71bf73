"""Report plots as PNG bytes, drawn without pyplot so no GUI backend or global figure state is touched.

Each function returns None when its inputs are missing or empty, so a report of a run that
logged fewer metrics simply has fewer plots. Figures are created from `matplotlib.figure.Figure`
directly, which renders through Agg and is safe to call from the training process.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, roc_curve

from harness.evaluate.metrics import as_labels, as_probabilities

STYLE = "seaborn-v0_8-whitegrid"
DPI = 100
ANNOTATE_MAX_CLASSES = 20
TICK_LABELS_MAX_CLASSES = 40
ROC_MAX_CURVES = 10
SCATTER_MAX_POINTS = 5000
REGRESSION_MAX_TARGETS = 4
LEGEND_MAX_RUNS = 12


def render_png(draw: Callable[[Figure], bool], size: tuple[float, float]) -> bytes | None:
    """Draw into a fresh figure under the report style; `draw` returns False when there is nothing to show."""
    with matplotlib.style.context(STYLE):
        figure = Figure(figsize=size, dpi=DPI, layout="constrained")
        if not draw(figure):
            return None
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def short(label: str, limit: int = 24) -> str:
    """Truncate long class or run names so tick labels and legends stay legible.

    `$` is escaped because matplotlib would otherwise read `$...$` in a name as mathtext.
    """
    label = label if len(label) <= limit else label[: limit - 1] + "…"
    return label.replace("$", r"\$")


History = Sequence[Mapping[str, float]]


def learning_curves_png(history: History, metric: str, best_epoch: int | None = None) -> bytes | None:
    """Loss and `metric` per epoch, train against validation, with the best epoch marked."""
    keys = [key for key in ("loss", metric) if any(key in row or f"val_{key}" in row for row in history)]
    if not keys:
        return None

    def draw(figure: Figure) -> bool:
        for ax, key in zip(figure.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
            for prefix, label in (("", "train"), ("val_", "validation")):
                _plot_series(ax, history, prefix + key, label)
            if best_epoch is not None:
                ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
            ax.set(xlabel="epoch", ylabel=key, title=key)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend()
        return True

    return render_png(draw, (5.0 * len(keys), 3.6))


def _plot_series(ax: Axes, history: History, key: str, label: str) -> None:
    epochs = [row["epoch"] for row in history if key in row and "epoch" in row]
    values = [row[key] for row in history if key in row and "epoch" in row]
    if epochs:
        ax.plot(epochs, values, marker="o" if len(epochs) <= 30 else None, markersize=3, label=label)


def confusion_matrix_png(normalized: Sequence[Sequence[float]], names: Sequence[str]) -> bytes | None:
    """Row-normalised confusion matrix; cells are annotated only while they stay readable."""
    matrix = np.asarray(normalized, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0 or matrix.shape[0] != matrix.shape[1]:
        return None
    count = matrix.shape[0]
    side = float(min(4.0 + 0.4 * count, 14.0))

    def draw(figure: Figure) -> bool:
        ax = figure.subplots()
        image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        figure.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class")
        if count <= ANNOTATE_MAX_CLASSES:
            _annotate_cells(ax, matrix)
        if count <= TICK_LABELS_MAX_CLASSES and len(names) == count:
            labels = [short(str(name), 18) for name in names]
            ax.set_xticks(range(count), labels, rotation=45, ha="right")
            ax.set_yticks(range(count), labels)
        ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (normalised by true class)")
        ax.grid(False)
        return True

    return render_png(draw, (side + 1.5, side))


def _annotate_cells(ax: Axes, matrix: np.ndarray) -> None:
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > 0.5 else "black",
        )


def roc_curves_png(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> bytes | None:
    """One-vs-rest ROC curves: the positive class when binary, one per class up to ten,
    and the micro-average beyond that, where a hundred overlaid curves would say nothing."""
    proba = as_probabilities(y_pred)
    labels = as_labels(y_true, proba.shape[1])
    curves = _roc_inputs(labels, proba, list(names))
    if not curves:
        return None

    def draw(figure: Figure) -> bool:
        ax = figure.subplots()
        for label, positives, scores in curves:
            fpr, tpr, _ = roc_curve(positives, scores)
            ax.plot(fpr, tpr, label=f"{short(label)} (AUC {auc(fpr, tpr):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title="ROC (one-vs-rest)",
            xlim=(0, 1),
            ylim=(0, 1.01),
        )
        ax.legend(loc="lower right", fontsize=8)
        return True

    return render_png(draw, (5.5, 4.8))


def _roc_inputs(
    labels: np.ndarray, proba: np.ndarray, names: list[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, binary truth, score) per curve; classes without both outcomes have no curve."""
    count = proba.shape[1]
    if len(names) != count:
        names = [str(i) for i in range(count)]
    if count > ROC_MAX_CURVES:
        onehot = np.eye(count, dtype=bool)[labels]
        return [(f"micro-average over {count} classes", onehot.ravel(), proba.ravel())]
    classes = [1] if count == 2 else range(count)
    return [
        (names[c], labels == c, proba[:, c])
        for c in classes
        if 0 < np.count_nonzero(labels == c) < labels.size
    ]


def predicted_vs_true_png(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> bytes | None:
    """Scatter of predictions against truth per target, with the identity line to judge bias."""
    return _regression_panels(y_true, y_pred, names, _draw_predicted_vs_true)


def residuals_png(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> bytes | None:
    """Residuals (true - predicted) against predictions per target, to spot non-constant error."""
    return _regression_panels(y_true, y_pred, names, _draw_residuals)


PanelDrawer = Callable[[Axes, np.ndarray, np.ndarray, str], None]


def _regression_panels(
    y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], draw_one: PanelDrawer
) -> bytes | None:
    truth, pred = _as_2d(y_true), _as_2d(y_pred)
    if truth.shape != pred.shape or truth.size == 0:
        return None
    targets = min(truth.shape[1], REGRESSION_MAX_TARGETS)
    labels = list(names) if len(names) == truth.shape[1] else [f"target_{i}" for i in range(truth.shape[1])]
    rows = _sample_rows(truth.shape[0])

    def draw(figure: Figure) -> bool:
        for i, ax in enumerate(figure.subplots(1, targets, squeeze=False)[0]):
            draw_one(ax, truth[rows, i], pred[rows, i], short(labels[i]))
        if truth.shape[1] > targets:
            figure.suptitle(f"first {targets} of {truth.shape[1]} targets", fontsize=9)
        return True

    return render_png(draw, (4.5 * targets, 4.0))


def _draw_predicted_vs_true(ax: Axes, truth: np.ndarray, pred: np.ndarray, name: str) -> None:
    low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
    ax.scatter(truth, pred, s=8, alpha=0.5)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=f"Predicted vs true: {name}")


def _draw_residuals(ax: Axes, truth: np.ndarray, pred: np.ndarray, name: str) -> None:
    ax.scatter(pred, truth - pred, s=8, alpha=0.5)
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel=f"predicted {name}", ylabel="residual (true - predicted)", title=f"Residuals: {name}")


def _as_2d(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def _sample_rows(count: int) -> np.ndarray:
    """A fixed random subset keeps scatter plots fast and the same across rebuilds."""
    if count <= SCATTER_MAX_POINTS:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, SCATTER_MAX_POINTS, replace=False))


def headline_bars_png(groups: Mapping[str, Sequence[tuple[str, float]]]) -> bytes | None:
    """Horizontal bars of the headline test metric per run, one panel per metric name,
    because runs of different tasks (accuracy vs MAE) must not share an axis."""
    panels = {metric: list(values) for metric, values in groups.items() if values}
    if not panels:
        return None
    heights = [max(len(values), 1) for values in panels.values()]

    def draw(figure: Figure) -> bool:
        axes = figure.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, (metric, values) in zip(axes, panels.items(), strict=True):
            labels = [short(label, 32) for label, _ in values]
            bars = ax.barh(range(len(values)), [value for _, value in values], color="#4c72b0")
            ax.set_yticks(range(len(values)), labels)
            ax.invert_yaxis()
            ax.bar_label(bars, fmt="%.4f", padding=3, fontsize=8)
            ax.set(xlabel=f"test {metric}", title=f"Test {metric}")
            ax.margins(x=0.15)
        return True

    return render_png(draw, (7.0, 1.2 + 0.35 * sum(heights) + 0.6 * len(panels)))


def validation_curves_png(histories: Mapping[str, History], keys: Sequence[str]) -> bytes | None:
    """Validation curves of every run overlaid, one panel per logged validation metric."""
    present = [key for key in keys if any(key in row for rows in histories.values() for row in rows)]
    if not present:
        return None

    def draw(figure: Figure) -> bool:
        for ax, key in zip(figure.subplots(1, len(present), squeeze=False)[0], present, strict=True):
            for label, rows in histories.items():
                _plot_series(ax, rows, key, short(label, 32))
            ax.set(xlabel="epoch", ylabel=key, title=key)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if len(histories) <= LEGEND_MAX_RUNS:
                ax.legend(fontsize=8)
        return True

    return render_png(draw, (5.0 * len(present), 3.8))


def safe_plot(name: str, make: Callable[[], bytes | None], problems: list[str]) -> bytes | None:
    """Run one plot; a failure is recorded in `problems` instead of losing the whole report."""
    try:
        return make()
    except Exception as err:  # noqa: BLE001 - a plot must never cost the report
        problems.append(f"{name} plot skipped: {type(err).__name__}: {err}")
        return None
