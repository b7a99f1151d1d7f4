"""The figures that compare variants (mean ± std over seeds): final scores, misclassification
ROC, curves over epochs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from latentgeo.figures.base import (
    balanced_columns,
    colors,
    legend_below,
    log_axis,
    new_figure,
    note_in_axes,
    styled,
    wants_log,
    wrap,
)

# ----------------------------------------------------------------------------- scores per variant


@dataclass
class ScoreRow:
    """One variant's values of one score: a finite value per seed (``seeds`` names them) and,
    when some or all seeds have none, ``note`` says why."""

    label: str
    values: list[float]
    seeds: list[Any] = field(default_factory=list)
    note: str = ""


@dataclass
class ScorePanel:
    title: str
    xlabel: str
    rows: list[ScoreRow]
    limits: tuple[float, float] | None = None  # the score's range, when it has one


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (ddof = 0, as the aggregate table) of finite values."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not finite.size:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std())


@styled
def scores_figure(panels: Sequence[ScorePanel], variant_axis: str = "variant",
                  colours: Sequence[Any] | None = None) -> Figure:
    """BE's table as a figure: one panel per score, variants on the (shared) y axis, a dot at
    the mean over seeds with a ± population-std error bar, every seed as a small cross, and
    the mean ± std written beside it. A variant without a value gets its ``note`` written on
    its row instead."""
    labels = list(dict.fromkeys(row.label for panel in panels for row in panel.rows))
    colours = list(colours) if colours else colors(len(labels))
    colour_of = dict(zip(labels, colours, strict=False))
    position = {label: len(labels) - 1 - i for i, label in enumerate(labels)}  # first on top
    columns = balanced_columns(len(panels), 5)
    repeated = any(len(row.values) > 1 for panel in panels for row in panel.rows)
    fig, axes = new_figure(len(panels), width=2.9, height=0.55 * len(labels) + 1.9,
                           columns=columns)
    fig.get_layout_engine().set(wspace=0.06)  # tick labels of neighbours stay apart
    for index, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        lows, highs, annotations = [], [], []
        for row in panel.rows:
            y = position[row.label]
            finite = [v for v in row.values if v is not None and math.isfinite(v)]
            if finite:
                mean, std = mean_std(finite)
                if repeated:
                    ax.errorbar([mean], [y], xerr=[std], fmt="o", color=colour_of[row.label],
                                markersize=6, capsize=4, elinewidth=1.5, zorder=3)
                    ax.plot(finite, [y] * len(finite), "x", color="0.25", markersize=4,
                            zorder=4)
                else:
                    ax.plot([mean], [y], "o", color=colour_of[row.label], markersize=6)
                annotations.append((mean, y, f"{mean:.3g}" if len(finite) == 1 else
                                    f"{mean:.3g} ± {std:.2g} (n={len(finite)})"))
                lows.append(min(finite + [mean - std]))
                highs.append(max(finite + [mean + std]))
            if row.note:  # written on the row, below the dot when there is one
                transform = blended_transform_factory(ax.transAxes, ax.transData)
                ax.text(0.5, y - (0.3 if finite else 0.0), wrap(row.note, 40),
                        transform=transform, ha="center", va="center", fontsize=7,
                        color="0.35", style="italic")
        if lows:
            low, high = min(lows), max(highs)
            pad = 0.15 * (high - low) if high > low else 0.05 * max(abs(low), 1e-3)
            low, high = low - pad, high + pad
            if panel.limits:  # stay inside the score's range where it has one
                low, high = max(low, panel.limits[0]), min(high, panel.limits[1])
                if not high > low:
                    low, high = panel.limits
            ax.set_xlim(low, high)
        else:
            ax.set_xticks([])
        low, high = ax.get_xlim()
        for mean, y, text in annotations:  # aligned so that the text stays in the panel
            where = (mean - low) / (high - low) if high > low else 0.5
            ha = "left" if where < 0.3 else "right" if where > 0.7 else "center"
            ax.annotate(text, (mean, y), xytext=(0, 7), textcoords="offset points", ha=ha,
                        fontsize=7, color="0.2")
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.set_yticks(range(len(labels)), [""] * len(labels))
        if index % columns == 0:
            ax.set_yticks(range(len(labels)), [wrap(label, 22) for label in reversed(labels)])
            ax.set_ylabel(variant_axis)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(axis="y", visible=False)
        ax.set_title(wrap(panel.title, 30))
        ax.set_xlabel(wrap(panel.xlabel, 30))
    if repeated:
        handles = [Line2D([], [], marker="o", color="0.3", linestyle="-", markersize=6,
                          label="mean ± population std over seeds"),
                   Line2D([], [], marker="x", color="0.25", linestyle="", markersize=5,
                          label="one seed")]
        legend_below(fig, handles)
    return fig


# ----------------------------------------------------------------------------- ROC


def roc_points(correct: Sequence[float], wrong: Sequence[float]
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC of detecting misclassified samples by their score (larger = flagged first):
    positives = ``wrong``, negatives = ``correct``. Returns (FPR, TPR, AUC): the curve through
    every distinct threshold from (0, 0) to (1, 1) (tied scores move both rates at once, a
    diagonal step) and its trapezoidal area, which is P(s_wrong > s_correct) + ½ P(tie), the
    number ``sklearn.metrics.roc_auc_score`` and ``auroc_exact`` give. NaN AUC and empty
    curves when either set is empty."""
    correct = np.asarray(correct, dtype=float).ravel()
    wrong = np.asarray(wrong, dtype=float).ravel()
    if not correct.size or not wrong.size:
        return np.zeros(0), np.zeros(0), math.nan
    scores = np.concatenate([wrong, correct])
    positive = np.concatenate([np.ones(wrong.size), np.zeros(correct.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tpr = np.r_[0.0, np.cumsum(positive)[last_of_value] / wrong.size]
    fpr = np.r_[0.0, np.cumsum(1 - positive)[last_of_value] / correct.size]
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, area


@dataclass
class RocCurve:
    label: str  # e.g. "seed 0"
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


@dataclass
class RocPanel:
    title: str
    curves: list[RocCurve]
    note: str = ""  # why a curve is missing (e.g. no misclassified test sample)


LINE_STYLES = ("-", "--", ":", "-.")


@styled
def roc_figure(panels: Sequence[RocPanel], colours: Sequence[Any] | None = None) -> Figure:
    """One square panel per variant: the misclassification ROC of each seed (line style =
    seed, colour = variant), the chance diagonal, each seed's AUC written in the empty lower
    right, and the panel's ``note`` where a curve could not be drawn."""
    colours = list(colours) if colours else colors(len(panels))
    columns = balanced_columns(len(panels), 4)
    fig, axes = new_figure(len(panels), width=3.3, height=3.6, columns=columns)  # ≈ square
    seed_labels = list(dict.fromkeys(c.label for p in panels for c in p.curves))
    style_of = {label: LINE_STYLES[i % len(LINE_STYLES)] for i, label in enumerate(seed_labels)}
    for index, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=(0, (2, 2)), linewidth=1)
        lines = []
        for curve in panel.curves:
            ax.plot(curve.fpr, curve.tpr, color=colours[index % len(colours)],
                    linestyle=style_of[curve.label], linewidth=1.6, drawstyle="default")
            lines.append(f"{curve.label}: AUC {curve.auc:.3f}")
        if lines:
            ax.text(0.97, 0.04, "\n".join(lines), transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=7.5, color="0.15")
        if panel.note:
            note_in_axes(ax, panel.note, y=0.75 if panel.curves else 0.5, width=32)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_title(wrap(panel.title, 34))
        ax.set_xlabel("false-positive rate\n(correct samples flagged)")
        ax.set_ylabel("true-positive rate\n(misclassified samples flagged)")
    handles = [Line2D([], [], color="0.3", linestyle=style_of[label], label=label)
               for label in seed_labels]
    handles.append(Line2D([], [], color="0.6", linestyle=(0, (2, 2)), label="chance"))
    legend_below(fig, handles)
    return fig


# ----------------------------------------------------------------------------- curves


@dataclass
class Line:
    label: str  # the legend entry of its colour (a variant)
    style: str  # the legend entry of its line style (a split), "" for none
    epochs: Sequence[int]
    mean: Sequence[float]
    std: Sequence[float | None] | None = None
    color: Any = None


@dataclass
class CurvePanel:
    title: str
    ylabel: str
    lines: list[Line]
    log: bool = False
    limits: tuple[float, float] | None = None


SPLIT_STYLE = {"train": "--", "val": ":", "test": "-", "": "-"}


@styled
def curves_figure(panels: Sequence[CurvePanel], title: str = "",
                  colours: dict[str, Any] | None = None, columns: int = 4,
                  xlabel: str = "epoch") -> Figure:
    """Metrics over epochs, one panel each: colour = ``Line.label`` (a variant), line style =
    ``Line.style`` (a split), a band of ± std where one is given (over seeds). One legend
    below the panels holds both keys."""
    labels = list(dict.fromkeys(line.label for p in panels for line in p.lines))
    colours = colours or dict(zip(labels, colors(len(labels)), strict=False))
    styles = list(dict.fromkeys(line.style for p in panels for line in p.lines if line.style))
    columns = balanced_columns(len(panels), columns)
    fig, axes = new_figure(len(panels), width=3.4, height=2.7, columns=columns)
    for ax, panel in zip(axes, panels, strict=False):
        for line in panel.lines:
            epochs = np.asarray(line.epochs, dtype=float)
            mean = np.asarray(line.mean, dtype=float)
            color = line.color if line.color is not None else colours[line.label]
            ax.plot(epochs, mean, color=color, linestyle=SPLIT_STYLE.get(line.style, "-"),
                    marker="o" if len(epochs) < 4 else None, markersize=3, linewidth=1.4)
            if line.std is not None and any(s is not None for s in line.std):
                spread = np.asarray([0.0 if s is None else s for s in line.std], dtype=float)
                ax.fill_between(epochs, mean - spread, mean + spread, color=color, alpha=0.18,
                                linewidth=0)
        finite = [v for line in panel.lines for v in line.mean if math.isfinite(v)]
        log = panel.log and wants_log(finite)
        if log:
            log_axis(ax)
        if panel.limits:
            ax.set_ylim(*panel.limits)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(wrap(panel.title, 40))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(wrap(panel.ylabel + (" (log scale)" if log else ""), 30))
    handles = [Line2D([], [], color=colours[label], linewidth=2.5, label=label)
               for label in labels]
    if len(styles) > 1 or (styles and len(labels) == 1):
        handles += [Line2D([], [], color="0.2", linestyle=SPLIT_STYLE.get(s, "-"), label=s)
                    for s in styles]
    legend_below(fig, handles, columns=min(len(handles), 8))
    if title:
        fig.suptitle(title)
    return fig
