"""Plots of a sweep: objective against each parameter, the optimisation history, parallel
coordinates and scaling efficiency. Learning curves reuse the run comparison's plot."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from harness.evaluate.plots import render_png, short
from harness.sweep import ledger

Row = Mapping[str, Any]


def _numeric(values: Sequence[Any]) -> tuple[list[float], list[str] | None]:
    """Numbers as they are; anything else (lists, strings) as category positions with labels."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    labels = sorted({json.dumps(v) for v in values})
    return [float(labels.index(json.dumps(v))) for v in values], labels


def objective_vs_params_png(rows: Sequence[Row], keys: Sequence[str], metric: str, log_keys: set[str]) -> bytes | None:
    done = [r for r in rows if r.get("objective") is not None]
    if not done or not keys:
        return None

    def draw(figure: Figure) -> bool:
        axes = figure.subplots(1, len(keys), squeeze=False)[0]
        for ax, key in zip(axes, keys, strict=True):
            xs, labels = _numeric([r["params"].get(key) for r in done])
            colors = ["tab:blue" if r["state"] == ledger.COMPLETED else "tab:orange" for r in done]
            ax.scatter(xs, [r["objective"] for r in done], c=colors, s=24)
            if labels is not None:
                ax.set_xticks(range(len(labels)), [short(label, 16) for label in labels], rotation=30)
            elif key in log_keys:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short decade overlap
            ax.set(xlabel=short(key, 40), ylabel=metric)
        return True

    return render_png(draw, (4.0 * len(keys), 3.4))


def history_png(rows: Sequence[Row], metric: str, direction: str) -> bytes | None:
    done = [r for r in rows if r["state"] == ledger.COMPLETED and r.get("objective") is not None]
    done.sort(key=lambda r: int(r["trial"]))
    if not done:
        return None

    def draw(figure: Figure) -> bool:
        ax = figure.subplots()
        trials = [r["trial"] for r in done]
        values = [float(r["objective"]) for r in done]
        pick = max if direction == "max" else min
        best = [pick(values[: index + 1]) for index in range(len(values))]
        ax.scatter(trials, values, s=20, label="trial")
        ax.step(trials, best, where="post", color="tab:red", label="best so far")
        ax.set(xlabel="trial", ylabel=metric, title="Optimisation history")
        ax.legend(fontsize=8)
        return True

    return render_png(draw, (6.0, 3.6))


def parallel_coordinates_png(
    rows: Sequence[Row], keys: Sequence[str], metric: str, log_keys: Collection[str] = ()
) -> bytes | None:
    done = [r for r in rows if r["state"] == ledger.COMPLETED and r.get("objective") is not None]
    if len(done) < 2 or not keys:
        return None
    columns = [*keys, metric]
    scaled: list[list[float]] = []
    for key in columns:
        raw = [r["objective"] if key == metric else r["params"].get(key) for r in done]
        values, _ = _numeric(raw)
        if key in log_keys:  # a log-uniform parameter spreads over decades: scale its logarithm
            values = [math.log10(v) if v > 0 else 0.0 for v in values]
        low, high = min(values), max(values)
        scaled.append([(v - low) / (high - low) if high > low else 0.5 for v in values])
    objective = scaled[-1]

    def draw(figure: Figure) -> bool:
        ax = figure.subplots()
        for index in range(len(done)):
            line = [column[index] for column in scaled]
            ax.plot(range(len(columns)), line, alpha=0.7, color=_viridis(objective[index]))
        ax.set_xticks(range(len(columns)), [short(c.rsplit(".", 1)[-1], 18) for c in columns])
        ax.set(ylabel="scaled value (0 = lowest, 1 = highest)", title="Parallel coordinates (colour: objective)")
        return True

    return render_png(draw, (1.8 * len(columns) + 2, 3.8))


def _viridis(fraction: float) -> tuple[float, float, float, float]:
    import matplotlib

    colormap = matplotlib.colormaps["viridis"]
    color: tuple[float, float, float, float] = colormap(fraction if math.isfinite(fraction) else 0.0)
    return color


def scaling_png(rows: Sequence[Row]) -> bytes | None:
    if len(rows) < 2:
        return None

    def draw(figure: Figure) -> bool:
        left, right = figure.subplots(1, 2)
        labels = [short(r["config"], 28) for r in rows]
        left.bar(labels, [r["samples_per_s_per_replica"] for r in rows])
        left.set(ylabel="samples/s per replica", title="Throughput per replica")
        right.bar(labels, [r["efficiency"] for r in rows], color="tab:green")
        right.axhline(1.0, color="gray", linestyle="--")
        right.set(ylabel="scaling efficiency", title="Efficiency vs the smallest configuration")
        for ax in (left, right):
            ax.tick_params(axis="x", rotation=30)
        return True

    return render_png(draw, (10.0, 3.8))
