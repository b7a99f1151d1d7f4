"""Figures of the post-hoc analyses: the re-init heatmap (``reinit.png``) and the ReLU_α
trajectories (``alpha.png``). Object-oriented matplotlib on the Agg canvas: no pyplot state,
no display, safe in the engine and in worker processes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from latentgeo.records import atomic_write_bytes

DPI = 120
ANNOTATE_MAX_CELLS = 150  # write the value into each cell only while they stay legible


def _save(fig: Figure, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())


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


def plot_reinit_heatmap(result: dict[str, Any], path: Path) -> Figure:
    """Heatmap of the relative top-1 drop, rows = init sources, columns = re-initialised layers
    (HP's ``reinit_layers.py`` figure). Diverging colours with 0 white and symmetric limits:
    red = accuracy lost, blue = accuracy gained. Writes ``path`` (PNG), returns the figure."""
    sources, layers, drop = reinit_drop_matrix(result)
    finite = np.abs(drop[np.isfinite(drop)])
    limit = max(float(finite.max()) if finite.size else 0.0, 1e-3)
    labels = [axis_label(layer) for layer in layers]
    longest = max((len(label) for label in labels), default=1)
    fig = Figure(figsize=(max(4.5, 0.42 * len(layers) + 3.0),
                          max(2.8, 0.42 * len(sources) + 1.4 + 0.06 * longest)),
                 dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(drop), cmap="RdBu_r", aspect="auto",
                      norm=Normalize(vmin=-limit, vmax=limit))
    ax.set_xticks(range(len(layers)), labels, rotation=60, ha="right",
                  rotation_mode="anchor", fontsize=7)
    ax.set_yticks(range(len(sources)), sources, fontsize=8)
    if drop.size <= ANNOTATE_MAX_CELLS:
        for (row, column), value in np.ndenumerate(drop):
            if math.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(value) > 0.6 * limit else "black")
    fig.colorbar(image, ax=ax, label="relative top-1 drop")
    ax.set_xlabel("re-initialised layer")
    ax.set_ylabel("init source")
    baseline = result["baseline"]["top1"]
    ax.set_title(f"Layer re-initialisation: (baseline − top-1) / baseline, "
                 f"baseline test top-1 {baseline:.4f}", fontsize=9)
    _save(fig, path)
    return fig


def plot_alpha_trajectories(alpha_json: dict[str, Any], path: Path) -> Figure | None:
    """``alpha.png``: α of every ReLU_α site vs epoch, with a min–max band (channel
    granularity) or ± std, from ``alpha.json`` = ``{site: {"epochs", "mean", ["min", "max",
    "std"]}}``. Draws with the report's figure (``latentgeo.report.alpha_figure``) so that the
    run's PNG and the HTML report show the same plot. Returns None (and writes nothing) when no
    site has data."""
    from latentgeo.report import alpha_figure

    trajectories: dict[str, dict[str, Any]] = {}
    for site, entry in alpha_json.items():
        if not isinstance(entry, dict) or not entry.get("epochs") or not entry.get("mean"):
            continue
        if len(entry["mean"]) != len(entry["epochs"]):
            raise ValueError(f"alpha.json: site {site!r} has {len(entry['mean'])} means for "
                             f"{len(entry['epochs'])} epochs")
        trajectories[site] = {key: entry[key] for key in ("epochs", "mean", "min", "max", "std")
                              if entry.get(key) is not None}
    fig = alpha_figure(trajectories)
    if fig is None:
        return None
    _save(fig, path)
    return fig
