"""Figures shared by the runs' own PNGs (``reinit.png``, ``alpha.png``, ``lr_find.png``) and the
HTML report (a run's and a sweep's report draw with the same functions). Object-oriented
matplotlib on the Agg canvas: no pyplot state, no display, safe in the training process and in
worker processes.

Every function takes plain numbers (lists, numpy arrays, small dataclasses) and returns a
``Figure``; reading run dirs and choosing what to show is the report's job. House rules, which
``tests/test_figures.py`` checks: every axis has a label (name and unit), one legend per figure
placed outside the panels (a colour key where colour means something), titles that fit, and
values that are missing are said in the panel where they would be.

Component layer: matplotlib, numpy and ``latentgeo.records`` (atomic writes) only.
"""

from __future__ import annotations

import functools
import io
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from latentgeo.records import atomic_write_bytes

REPORT_DPI = 100  # figures of report.html
DPI = 120
PAGE_WIDTH = 13.6  # inches: 1360 px at REPORT_DPI, the report's 1400 px page less its margins
ANNOTATE_MAX_CELLS = 150  # write the value into each cell only while they stay legible
MAX_SCATTER_POINTS = 3000  # per panel: a seeded subsample beyond this (SVGs stay small)
STYLE = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 8, "figure.titlesize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.color": "0.92", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "svg.fonttype": "none",  # SVG text stays text: editable, searchable, small
    "svg.hashsalt": "latentgeo",  # the same figure gives the same SVG
}
F = TypeVar("F", bound=Callable[..., Any])


def styled(function: F) -> F:
    """Draw inside ``STYLE`` (font sizes, spines, grid); rcParams are restored afterwards."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- saving


def save_png(fig: Figure, path: Path, dpi: int | None = DPI) -> None:
    """PNG into memory, then one atomic write (a figure is never half written)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buffer.getvalue())


def save_figure(fig: Figure, path: Path, formats: Sequence[str] = ("png", "svg"),
                dpi: int = REPORT_DPI) -> list[Path]:
    """``path`` with each suffix of ``formats`` (PNG for the page, SVG or PDF for a paper),
    each written atomically; returns the paths in ``formats`` order."""
    written = []
    engine = fig.get_layout_engine()
    with matplotlib.rc_context(STYLE):
        for index, fmt in enumerate(formats):
            target = Path(path).with_suffix(f".{fmt}")
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt in ("svg", "pdf") else None  # reproducible files
            fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
            atomic_write_bytes(target, buffer.getvalue())
            written.append(target)
            if index == 0:  # the layout is in inches: the first format's serves the others
                fig.set_layout_engine("none")
    fig.set_layout_engine(engine)
    return written


# ----------------------------------------------------------------------------- layout


def new_figure(panels: int, width: float = 4.2, height: float = 3.2,
               columns: int | None = None) -> tuple[Figure, list[Any]]:
    """``panels`` axes on a grid of ``columns`` (default ≤ 3), each ``width`` × ``height``
    inches, shrunk to fit ``PAGE_WIDTH``; constrained layout, so titles and labels fit."""
    columns = max(1, min(columns or min(panels, 3), panels))
    rows = math.ceil(panels / columns)
    scale = min(1.0, PAGE_WIDTH / (width * columns))
    fig = Figure(figsize=(width * columns * scale, height * rows * max(scale, 0.8)),
                 dpi=REPORT_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    axes = [fig.add_subplot(rows, columns, i + 1) for i in range(panels)]
    return fig, axes


def colors(count: int) -> list[Any]:
    """Categorical colours (tab10) up to 10, else evenly spaced viridis."""
    cmap = colormaps["tab10" if count <= 10 else "viridis"]
    if count <= 10:
        return [cmap(i) for i in range(count)]
    return [cmap(i / max(count - 1, 1)) for i in range(count)]


def sequence_colors(count: int) -> list[Any]:
    """Ordered colours (init dark → final light), for epochs and depths."""
    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(count - 1, 1)) for i in range(count)]


def legend_below(fig: Figure, handles: Sequence[Any], labels: Sequence[str] | None = None,
                 title: str | None = None, columns: int | None = None) -> Any:
    """The figure's one legend, below the panels (it never covers data)."""
    labels = list(labels) if labels is not None else [h.get_label() for h in handles]
    # as many columns as fit the figure's width: an entry is its handle plus its text
    entry = 0.45 + 0.075 * max((len(label) for label in labels), default=1)
    fits = max(1, int(fig.get_size_inches()[0] / entry))
    columns = max(1, min(columns or 6, len(labels), fits))
    return fig.legend(list(handles), labels, loc="outside lower center", ncols=columns,
                      frameon=False, title=title)


def log_axis(ax: Any, axis: str = "y") -> None:
    """A log scale labelled with plain numbers (0.02, 0.05, 0.1), no minor-tick labels."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    target.set_minor_formatter(NullFormatter())


def wants_log(values: Sequence[float]) -> bool:
    """A log axis pays for positive values spanning a decade or more (else it shows no tick)."""
    return bool(values) and min(values) > 0 and max(values) >= 10 * min(values)


def balanced_columns(panels: int, most: int = 4) -> int:
    """Columns for ``panels`` panels with at most ``most`` per row and rows as full as can be
    (5 → 3 + 2, not 4 + 1)."""
    rows = math.ceil(panels / most)
    return max(1, math.ceil(panels / rows))


def wrap(text: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def note_in_axes(ax: Any, text: str, y: float = 0.5, width: int = 34, **kwargs: Any) -> Any:
    """A grey italic sentence at the centre of the panel (at axes fraction ``y``): why there is
    nothing to draw here."""
    options = {"ha": "center", "va": "center", "fontsize": 8, "color": "0.35",
               "style": "italic", "transform": ax.transAxes, "wrap": False, **kwargs}
    return ax.text(0.5, y, wrap(text, width), **options)


def _subsample(count: int, limit: int = MAX_SCATTER_POINTS, seed: int = 0) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


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


# ----------------------------------------------------------------------------- depth profiles


@dataclass
class DepthSeries:
    label: str  # the colour key, e.g. "epoch 0 (init)"
    mean: Sequence[float]  # one value per layer
    std: Sequence[float] | None = None
    extra: float | None = None  # the value of the extra column (e.g. the whole net)
    extra_std: float | None = None
    style: str = ""  # the line-style key, e.g. a split


@dataclass
class DepthPanel:
    title: str
    ylabel: str
    layers: list[str]
    series: list[DepthSeries]
    log: bool = False
    extra: str = ""  # the name of one extra column after the layers, e.g. "whole net"
    note: str = ""
    reference: float | None = None  # a horizontal reference line (e.g. 0)
    band: tuple[float, float] | None = None  # a shaded range (e.g. WeightWatcher's 2 ≤ α ≤ 6)
    band_label: str = ""


@styled
def depth_figure(panels: Sequence[DepthPanel], key_title: str = "epoch",
                 columns: int = 2) -> Figure:
    """A value per layer against depth (input → output), one line per epoch in ordered colours
    (init dark, final light), line style per ``DepthSeries.style`` (a split), ± std error
    bars where given (over seeds), the lines of a panel dodged sideways so that the bars stay
    apart; an optional extra column (the whole net) after a dotted separator. One key below
    the panels for colours and line styles."""
    keys = list(dict.fromkeys(s.label for p in panels for s in p.series))
    colour_of = dict(zip(keys, sequence_colors(len(keys)), strict=False))
    styles = list(dict.fromkeys(s.style for p in panels for s in p.series if s.style))
    most = max((len(p.layers) for p in panels), default=1)
    longest = max((len(name) for p in panels for name in p.layers), default=4)
    rotate = max((sum(len(n) + 2 for n in p.layers) for p in panels), default=0) > 48
    columns = balanced_columns(len(panels), columns if most > 6 else 3)
    fig, axes = new_figure(len(panels), width=max(4.0, 0.32 * most + 1.6),
                           height=3.0 + (min(0.055 * longest, 1.6) if rotate else 0.2),
                           columns=columns)
    for ax, panel in zip(axes, panels, strict=False):
        x = np.arange(len(panel.layers), dtype=float)
        count = len(panel.series)
        for index, series in enumerate(panel.series):
            color = colour_of[series.label]
            shift = 0.07 * (index - (count - 1) / 2) if count > 1 else 0.0
            std = None if series.std is None else np.asarray(series.std, dtype=float)
            ax.errorbar(x + shift, np.asarray(series.mean, dtype=float), yerr=std, color=color,
                        linestyle=SPLIT_STYLE.get(series.style, "-"), marker="o",
                        markersize=3.5, linewidth=1.4, capsize=2 if std is not None else 0)
            if panel.extra and series.extra is not None:
                ax.errorbar([len(x) + 0.5 + shift], [series.extra],
                            yerr=None if series.extra_std is None else [series.extra_std],
                            color=color, marker="D", markersize=5, capsize=2)
        ticks, names = list(x), list(panel.layers)
        if panel.extra:
            ax.axvline(len(x) - 0.25, color="0.6", linestyle=":", linewidth=1)
            ticks.append(len(x) + 0.5)
            names.append(panel.extra)
        if panel.reference is not None:
            ax.axhline(panel.reference, color="0.5", linewidth=0.8)
        if panel.band is not None:
            ax.axhspan(*panel.band, color="tab:green", alpha=0.12, linewidth=0)
            ax.text(0.01, panel.band[1], f" {panel.band_label}", transform=ax.get_yaxis_transform(),
                    va="bottom", ha="left", fontsize=7, color="tab:green")
        ax.set_xticks(ticks, names, rotation=60 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor",
                      fontsize=7 if len(names) > 10 else 8)
        ax.grid(axis="x", visible=False)
        finite = [v for s in panel.series for v in s.mean if v is not None and math.isfinite(v)]
        log = panel.log and wants_log(finite)
        if log:
            log_axis(ax)
        if panel.note:
            note_in_axes(ax, panel.note)
        ax.set_title(wrap(panel.title, 60))
        ax.set_xlabel("layer (input → output)")
        ax.set_ylabel(wrap(panel.ylabel + (" (log scale)" if log else ""), 34))
    handles = [Line2D([], [], color=colour_of[k], marker="o", linewidth=2, label=k) for k in keys]
    if len(styles) > 1:
        handles += [Line2D([], [], color="0.2", linestyle=SPLIT_STYLE.get(s, "-"), label=s)
                    for s in styles]
    legend_below(fig, handles, title=key_title, columns=min(len(handles), 8))
    return fig


@dataclass
class MatrixPanel:
    title: str
    labels: list[str]  # rows = columns, in depth order
    matrix: np.ndarray  # [L, L], NaN where unknown


@styled
def similarity_figure(panels: Sequence[MatrixPanel], colorbar: str) -> Figure:
    """Layer × layer similarities in [0, 1] (CKA), one heatmap per panel, values written in the
    cells while they stay legible; one colour bar."""
    most = max((len(p.labels) for p in panels), default=1)
    side = min(PAGE_WIDTH / max(len(panels), 1), max(3.2, 0.32 * most + 1.8))
    fig = Figure(figsize=(min(PAGE_WIDTH, side * len(panels) + 1.0), side + 0.6), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, panel in zip(axes, panels, strict=True):
        ax.grid(False)
        ax.set_facecolor("0.85")
        image = ax.imshow(np.ma.masked_invalid(panel.matrix), cmap="viridis", vmin=0.0,
                          vmax=1.0, aspect="equal")
        labels = [axis_label(label) for label in panel.labels]
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right",
                      rotation_mode="anchor", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        if panel.matrix.size <= ANNOTATE_MAX_CELLS:
            for (row, column), value in np.ndenumerate(panel.matrix):
                if math.isfinite(value):
                    ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if value > 0.6 else "white")
        ax.set_title(wrap(panel.title, 40))
    if image is not None:
        fig.colorbar(image, ax=list(axes), label=colorbar, shrink=0.8)
    return fig


# ----------------------------------------------------------------------------- the code itself


def class_colours(count: int) -> list[Any] | None:
    """Distinct colours per class up to 20 classes; None beyond (then a continuous map)."""
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return None


@dataclass
class Split:
    """Features of one split: ``x`` [N, D], integer ``labels`` [N]."""

    name: str
    x: np.ndarray
    labels: np.ndarray


def _class_key(fig: Figure, classes: Sequence[Any], class_names: Sequence[str] | None) -> None:
    """The one legend of a class-coloured figure (or a note that classes are not coloured)."""
    palette = class_colours(len(classes))
    names = [str(c) for c in (class_names or classes)]
    if palette is None:
        fig.text(0.5, 0.0, f"{len(classes)} classes: not coloured individually",
                 ha="center", va="bottom", fontsize=8, color="0.35")
        return
    handles = [Patch(color=palette[i], label=names[i]) for i in range(len(classes))]
    legend_below(fig, handles, title="class", columns=min(len(handles), 10))


@styled
def code_histogram_figure(splits: Sequence[Split], nodes: Sequence[int],
                          class_names: Sequence[str] | None = None,
                          value_name: str = "x_pen") -> Figure:
    """Per penultimate node (column) and split (row), the histogram of its values stacked by
    class: a binary code shows two peaks, each made of whole classes. Bins are shared by the
    splits of a node."""
    classes = np.unique(np.concatenate([s.labels for s in splits]))
    palette = class_colours(len(classes))
    columns = min(len(nodes), 8)
    blocks = math.ceil(len(nodes) / columns)
    fig, axes = new_figure(len(splits) * blocks * columns, width=1.9, height=1.75,
                           columns=columns)
    for block in range(blocks):
        for row, split in enumerate(splits):
            for column in range(columns):
                ax = axes[(block * len(splits) + row) * columns + column]
                index = block * columns + column
                if index >= len(nodes):
                    ax.set_visible(False)
                    continue
                node = nodes[index]
                values = np.concatenate([s.x[:, node] for s in splits])
                values = values[np.isfinite(values)]
                low, high = (float(values.min()), float(values.max())) if values.size else (0, 1)
                bins = np.linspace(low, high if high > low else low + 1.0, 31)
                column_values = split.x[:, node]
                if palette is None:
                    ax.hist(column_values, bins=bins, color="0.5")
                else:
                    per_class = [column_values[split.labels == c] for c in classes]
                    ax.hist(per_class, bins=bins, stacked=True, color=palette,
                            histtype="stepfilled", linewidth=0)
                ax.set_title(f"node {node} · {split.name}", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
                ax.set_xlabel(f"{value_name}[{node}]", fontsize=8)
                ax.set_ylabel("samples", fontsize=8)
    _class_key(fig, classes, class_names)
    return fig


def top_variance_nodes(x: np.ndarray, count: int) -> list[int]:
    """The ``count`` columns of ``x`` with the largest variance, largest first."""
    variance = np.nanvar(np.asarray(x, dtype=float), axis=0)
    return [int(i) for i in np.argsort(-variance, kind="stable")[:count]]


def pca(train: np.ndarray, components: int = 2, limit: int = 20000
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA fitted on ``train`` [N, D] (a seeded subsample of ``limit`` rows at most): returns
    (mean [D], axes [components, D], explained-variance ratio of every component)."""
    x = np.asarray(train, dtype=float)
    x = x[_subsample(len(x), limit)]
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = singular ** 2
    ratio = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    signs = np.sign(vt[:, np.argmax(np.abs(vt), axis=1)].diagonal())  # a stable orientation
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    return mean, vt[:components], ratio


def _scatter_classes(ax: Any, xy: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> None:
    keep = _subsample(len(xy))
    xy, labels = xy[keep], labels[keep]
    palette = class_colours(len(classes))
    if palette is None:
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="viridis", s=5, linewidths=0)
        return
    for colour, c in zip(palette, classes, strict=False):
        chosen = labels == c
        ax.scatter(xy[chosen, 0], xy[chosen, 1], color=colour, s=6, linewidths=0, alpha=0.75)


@styled
def code_scatter_figure(splits: Sequence[Split], dims: tuple[int, int],
                        class_names: Sequence[str] | None = None,
                        value_name: str = "x_pen") -> Figure:
    """The code in two dimensions: the two highest-variance nodes ``dims`` per split, coloured
    by class, and per class and node the fraction of test samples with x_pen > 0 (the code
    word: 0 or 1 in every cell for a binary encoding)."""
    classes = np.unique(np.concatenate([s.labels for s in splits]))
    fig, axes = new_figure(len(splits) + 1, width=4.2, height=3.7, columns=len(splits) + 1)
    for ax, split in zip(axes, splits, strict=False):
        _scatter_classes(ax, split.x[:, list(dims)], split.labels, classes)
        ax.axhline(0, color="0.6", linewidth=0.7)
        ax.axvline(0, color="0.6", linewidth=0.7)
        ax.set_xlabel(f"{value_name}[{dims[0]}] (highest variance)")
        ax.set_ylabel(f"{value_name}[{dims[1]}] (second highest)")
        ax.set_title(f"{split.name}: two highest-variance nodes")
    reference = splits[-1]
    ax = axes[-1]
    positive = np.stack([(reference.x[reference.labels == c] > 0).mean(axis=0)
                         if (reference.labels == c).any() else
                         np.full(reference.x.shape[1], np.nan) for c in classes])
    image = ax.imshow(positive, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    names = [str(c) for c in (class_names or classes)]
    ax.set_yticks(range(len(classes)), names if len(classes) <= 20 else [""] * len(classes))
    ax.set_xticks(range(positive.shape[1]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.grid(False)
    if positive.size <= ANNOTATE_MAX_CELLS:
        for (row, column), value in np.ndenumerate(positive):
            if math.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if value > 0.55 else "black")
    fig.colorbar(image, ax=ax, label=f"fraction with {value_name} > 0")
    ax.set_xlabel(f"{value_name} node")
    ax.set_ylabel("class")
    ax.set_title(f"code word per class ({reference.name})")
    _class_key(fig, classes, class_names)
    return fig


@styled
def pca_figure(splits: Sequence[Split], class_names: Sequence[str] | None = None,
               value_name: str = "features") -> Figure:
    """The features in their first two principal components (fitted on the first split,
    applied to all), coloured by class, and the explained-variance spectrum: for a head
    without a narrow penultimate layer, instead of one histogram per dimension."""
    classes = np.unique(np.concatenate([s.labels for s in splits]))
    mean, components, ratio = pca(splits[0].x)
    fig, axes = new_figure(len(splits) + 1, width=4.2, height=3.7, columns=len(splits) + 1)
    for ax, split in zip(axes, splits, strict=False):
        projected = (np.asarray(split.x, dtype=float) - mean) @ components.T
        if projected.shape[1] < 2:
            projected = np.c_[projected, np.zeros(len(projected))]
        _scatter_classes(ax, projected, split.labels, classes)
        ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f}% of variance)" if len(ratio) > 1
                      else "PC 2 (none)")
        ax.set_title(f"{split.name}: PCA of {value_name}")
    ax = axes[-1]
    shown = ratio[:min(len(ratio), 20)]
    ax.bar(np.arange(1, len(shown) + 1), shown, color="0.55", label="component")
    ax.plot(np.arange(1, len(shown) + 1), np.cumsum(shown), color="black", marker="o",
            markersize=3, label="cumulative")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"principal component (of {len(ratio)})")
    ax.set_ylabel("fraction of variance")
    ax.set_title(f"explained variance ({splits[0].name}):\nbars per component, line cumulative")
    _class_key(fig, classes, class_names)
    return fig


# ----------------------------------------------------------------------------- information plane


@styled
def information_plane_figure(
    planes: dict[str, dict[str, tuple[Sequence[int], Sequence[float], Sequence[float]]]]
) -> Figure | None:
    """DIB information plane (TH §2.6): V-minimality (x) vs V-sufficiency (y), one marker per
    block, per split ``planes[split][block] = (epochs, vmin, vsuff)``. Colour = epoch with a
    colour bar over the epochs measured; with a single epoch, no colour bar (it is named in
    the title)."""
    if not planes:
        return None
    epochs = sorted({e for blocks in planes.values() for ep, _, _ in blocks.values() for e in ep})
    markers = "osD^v<>phX*"
    blocks_all = list(dict.fromkeys(b for blocks in planes.values() for b in blocks))
    fig, axes = new_figure(len(planes), width=4.6, height=4.0)
    if len(epochs) > 1:
        cmap = ListedColormap(sequence_colors(len(epochs))) if len(epochs) <= 12 else \
            colormaps["viridis"]
        norm = (BoundaryNorm(np.arange(len(epochs) + 1) - 0.5, len(epochs))
                if len(epochs) <= 12 else Normalize(0, len(epochs) - 1))
    for ax, (split, blocks) in zip(axes, planes.items(), strict=False):
        for block, (block_epochs, vmin, vsuff) in blocks.items():
            marker = markers[blocks_all.index(block) % len(markers)]
            ax.plot(vmin, vsuff, color="0.75", linewidth=0.8, zorder=1)
            if len(epochs) > 1:
                ax.scatter(vmin, vsuff, c=[epochs.index(e) for e in block_epochs], cmap=cmap,
                           norm=norm, marker=marker, zorder=2, s=28)
            else:
                ax.scatter(vmin, vsuff, color="C0", marker=marker, zorder=2, s=28)
        ax.set_xlabel("V-minimality (bits)")
        ax.set_ylabel("V-sufficiency (bits)")
        ax.set_title(f"information plane ({split})" +
                     (f", epoch {epochs[0]}" if len(epochs) == 1 else ""))
    if len(epochs) > 1:
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes,
                           label="epoch")
        if len(epochs) <= 12:
            bar.set_ticks(range(len(epochs)), labels=[str(e) for e in epochs])
    handles = [Line2D([], [], color="0.3", marker=markers[i % len(markers)], linestyle="",
                      label=block) for i, block in enumerate(blocks_all)]
    legend_below(fig, handles, title="block", columns=min(len(handles), 8))
    return fig


# ----------------------------------------------------------------------------- re-initialisation


def relative_drop(baseline: float | None, accuracy: float | None) -> float:
    """(baseline − accuracy) / baseline (HP §3.4); NaN when either is missing or baseline is 0."""
    if baseline is None or accuracy is None or not baseline > 0:
        return math.nan
    return (baseline - accuracy) / baseline


def source_order(name: str) -> tuple[int, int, str]:
    """Rows in training order: init, epoch_XXXX by epoch, other checkpoints, rand last
    (reinit.json is written with sorted keys, so its own order is alphabetical)."""
    if name == "init":
        return (0, 0, name)
    match = re.fullmatch(r"epoch_(\d+)", name)
    if match:
        return (1, int(match.group(1)), name)
    return (3, 0, name) if name == "rand" else (2, 0, name)


def reinit_drop_matrix(result: dict[str, Any]) -> tuple[list[str], list[str], np.ndarray]:
    """``(sources, layers, drop)`` of a ``reinit.json`` structure: ``drop[s, l]`` is the relative
    top-1 drop when layer ``l`` is re-initialised from source ``s``; rows in ``source_order``,
    columns in ``result["layers"]`` order."""
    layers = list(result["layers"])
    sources = sorted(result["sources"], key=source_order)
    baseline = result["baseline"]["top1"]
    drop = np.full((len(sources), len(layers)), np.nan)
    for row, source in enumerate(sources):
        accuracies = list(result["sources"][source])
        if len(accuracies) != len(layers):
            raise ValueError(f"reinit result: source {source!r} has {len(accuracies)} values "
                             f"for {len(layers)} layers")
        for column, accuracy in enumerate(accuracies):
            drop[row, column] = relative_drop(baseline, accuracy)
    return sources, layers, drop


def axis_label(layer: str) -> str:
    """A layer name without the ``backbone.blocks.`` / ``backbone.`` prefix every conv shares."""
    return layer.removeprefix("backbone.blocks.").removeprefix("backbone.")


@styled
def reinit_heatmap_figure(result: dict[str, Any]) -> Figure:
    """Heatmap of the relative top-1 drop, rows = init sources, columns = re-initialised layers
    (HP's ``reinit_layers.py`` figure). Diverging colours with 0 white and symmetric limits:
    red = accuracy lost, blue = accuracy gained; a cell without a value is hatched."""
    sources, layers, drop = reinit_drop_matrix(result)
    finite = np.abs(drop[np.isfinite(drop)])
    limit = max(float(finite.max()) if finite.size else 0.0, 1e-3)
    labels = [axis_label(layer) for layer in layers]
    longest = max((len(label) for label in labels), default=1)
    fig = Figure(figsize=(min(PAGE_WIDTH, max(4.5, 0.42 * len(layers) + 3.0)),
                          max(2.8, 0.42 * len(sources) + 1.4 + 0.06 * longest)),
                 dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(False)
    ax.set_facecolor("0.85")  # missing cells
    image = ax.imshow(np.ma.masked_invalid(drop), cmap="RdBu_r", aspect="auto",
                      norm=Normalize(vmin=-limit, vmax=limit))
    ax.set_xticks(range(len(layers)), labels, rotation=60, ha="right",
                  rotation_mode="anchor", fontsize=7)
    ax.set_yticks(range(len(sources)), sources, fontsize=8)
    if drop.size <= ANNOTATE_MAX_CELLS:
        for (row, column), value in np.ndenumerate(drop):
            text = f"{value:.2f}" if math.isfinite(value) else "n/a"
            ax.text(column, row, text, ha="center", va="center", fontsize=6,
                    color="white" if math.isfinite(value) and abs(value) > 0.6 * limit
                    else "black")
    fig.colorbar(image, ax=ax, label="relative top-1 drop\n(baseline − top-1) / baseline")
    ax.set_xlabel("re-initialised layer (input → output)")
    ax.set_ylabel("weights taken from")
    baseline = result["baseline"]["top1"]
    baseline_text = f"{baseline:.4f}" if isinstance(baseline, (int, float)) else "unknown"
    ax.set_title(wrap(f"Layer re-initialisation: relative drop of test top-1 "
                      f"(baseline {baseline_text})", int(10 * fig.get_size_inches()[0])))
    return fig


def plot_reinit_heatmap(result: dict[str, Any], path: Path) -> Figure:
    """``reinit.png``: ``reinit_heatmap_figure``, the one the HTML report shows too. Writes
    ``path`` (PNG), returns the figure."""
    fig = reinit_heatmap_figure(result)
    save_png(fig, path)
    return fig


# ----------------------------------------------------------------------------- ReLU_α


def plot_alpha_trajectories(alpha_json: dict[str, Any], path: Path) -> Figure | None:
    """``alpha.png``: α of every ReLU_α site vs epoch, with a min–max band (channel
    granularity) or ± std, from ``alpha.json`` = ``{site: {"epochs", "mean", ["min", "max",
    "std"]}}``, with ``alpha_figure``, the one the HTML report shows too. Returns None (and
    writes nothing) when no site has data."""
    trajectories = alpha_sites(alpha_json)
    fig = alpha_figure(trajectories)
    if fig is None:
        return None
    save_png(fig, path)
    return fig


def alpha_sites(alpha_json: Any) -> dict[str, dict[str, Any]]:
    """The sites of an ``alpha.json`` structure that have data (ValueError when a site's
    means and epochs differ in length)."""
    trajectories: dict[str, dict[str, Any]] = {}
    for site, entry in (alpha_json or {}).items():
        if not isinstance(entry, dict) or not entry.get("epochs") or not entry.get("mean"):
            continue
        if len(entry["mean"]) != len(entry["epochs"]):
            raise ValueError(f"alpha.json: site {site!r} has {len(entry['mean'])} means for "
                             f"{len(entry['epochs'])} epochs")
        trajectories[site] = {key: entry[key] for key in ("epochs", "mean", "min", "max", "std")
                              if entry.get(key) is not None}
    return trajectories


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([math.nan if v is None else v for v in values], dtype=float)


@styled
def alpha_figure(trajectories: dict[str, dict[str, Any]]) -> Figure | None:
    """Learned α of ReLU_α, R_α(x) = x + α·ReLU(−x), per site vs epoch (band = min..max over
    units, else ± std), on α's own scale: α = 0 is the identity, α = 1 the ReLU. A second
    panel shows the change since the first epoch, where a small drift is visible."""
    if not trajectories:
        return None
    fig, axes = new_figure(2, width=5.4, height=3.6, columns=2)
    ax, change = axes
    site_colours = colors(len(trajectories))
    lows, highs = [0.0], [1.0]
    for color, (layer, entry) in zip(site_colours, trajectories.items(), strict=False):
        epochs = np.asarray(entry["epochs"], dtype=float)
        mean = _floats(entry["mean"])
        ax.plot(epochs, mean, color=color, label=layer)
        change.plot(epochs, mean - mean[0], color=color)
        lows.append(float(np.nanmin(mean)))
        highs.append(float(np.nanmax(mean)))
        if "min" in entry and "max" in entry:
            low, high = _floats(entry["min"]), _floats(entry["max"])
        elif "std" in entry:
            spread = _floats(entry["std"])
            low, high = mean - spread, mean + spread
        else:
            continue
        if low.shape == mean.shape == high.shape:
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
            lows.append(float(np.nanmin(low)))
            highs.append(float(np.nanmax(high)))
    low, high = min(lows), max(highs)
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    reference = ax.secondary_yaxis("right")
    reference.set_yticks([0, 1], ["identity", "ReLU"])
    reference.tick_params(labelsize=7, colors="0.35")
    for a in (ax, change):
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("α (0 = identity, 1 = ReLU)")
    ax.set_title("α per site, on α's scale")
    change.axhline(0, color="0.6", linewidth=0.8)
    change.set_ylabel("α − α at the first epoch")
    change.set_title("change since the first epoch (mean over units)")
    handles = [Line2D([], [], color=c, linewidth=2, label=layer)
               for c, layer in zip(site_colours, trajectories, strict=False)]
    legend_below(fig, handles, title="ReLU_α site", columns=min(len(handles), 4))
    return fig


# ----------------------------------------------------------------------------- LR range test


@styled
def lr_find_figure(result: dict[str, Any]) -> Figure:
    """Raw and smoothed loss against the LR (log axis), the suggestion marked."""
    fig = Figure(figsize=(6, 4), dpi=REPORT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(result["lrs"], result["losses"], color="0.75", lw=1, label="loss")
    ax.plot(result["lrs"], result["smoothed"], color="C0", lw=2, label="smoothed")
    index = result["suggestion_index"]
    if index is not None:
        ax.plot([result["lrs"][index]], [result["smoothed"][index]], "o", color="C3",
                label=f"suggestion {result['suggestion']:.3g}")
    finite = [v for v in result["smoothed"] if math.isfinite(v)]
    raw = [v for v in result["losses"] if math.isfinite(v)]
    if finite:  # clip the divergence at 4× the first loss so it does not flatten the rest
        low = min(finite + raw)
        high = max(finite[0], min(max(finite + raw), 4 * abs(finite[0])))
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (nats)")
    ax.set_title("LR range test" + (" (stopped: loss diverged)" if result["stopped_early"]
                                    else ""))
    legend_below(fig, ax.get_lines(), columns=3)
    return fig


def plot_lr_find(result: dict[str, Any], path: Path) -> None:
    """``lr_find.png``: ``lr_find_figure``, the one the HTML report shows too."""
    save_png(lr_find_figure(result), path)
