"""The figures per layer, in depth order: a value per layer against depth (init, chosen epochs,
final; ± std over seeds) and layer × layer similarity matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latentgeo.figures.base import (
    ANNOTATE_MAX_CELLS,
    DPI,
    PAGE_WIDTH,
    axis_label,
    balanced_columns,
    legend_below,
    log_axis,
    new_figure,
    note_in_axes,
    sequence_colors,
    styled,
    wants_log,
    wrap,
)
from latentgeo.figures.compared import SPLIT_STYLE

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
