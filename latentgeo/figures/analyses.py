"""The figures of a run's own analyses, drawn for its files (``reinit.png``, ``alpha.png``,
``lr_find.png``) and for the report alike: the layer re-initialisation heatmap, the ReLU_α
trajectories, the LR range test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from latentgeo.figures.base import (
    ANNOTATE_MAX_CELLS,
    DPI,
    PAGE_WIDTH,
    REPORT_DPI,
    axis_label,
    colors,
    legend_below,
    new_figure,
    save_png,
    styled,
    wrap,
)
from latentgeo.metrics.reinit import relative_drop

# ----------------------------------------------------------------------------- re-initialisation


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
