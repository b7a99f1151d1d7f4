"""The code itself, from a run's penultimate features: per-node histograms stacked by class, the
two highest-variance nodes and the code word per class, a PCA for wide features; and the DIB
information plane of its blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from latentgeo.figures.base import (
    ANNOTATE_MAX_CELLS,
    legend_below,
    new_figure,
    sequence_colors,
    styled,
)

MAX_SCATTER_POINTS = 3000  # per panel: a seeded subsample beyond this (SVGs stay small)


def _subsample(count: int, limit: int = MAX_SCATTER_POINTS, seed: int = 0) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


# ----------------------------------------------------------------------------- the code itself


def class_colours(count: int) -> list[Any] | None:
    """Distinct colours per class up to 20 classes; None beyond (then a continuous map)."""
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return None


@dataclass
class SplitCodes:
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
def code_histogram_figure(splits: Sequence[SplitCodes], nodes: Sequence[int],
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
def code_scatter_figure(splits: Sequence[SplitCodes], dims: tuple[int, int],
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
def pca_figure(splits: Sequence[SplitCodes], class_names: Sequence[str] | None = None,
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
