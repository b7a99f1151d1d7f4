"""The run-level figures of a variant, from its representative run (not averaged across runs):
the code itself (per-node histograms and the code word, or a PCA), re-initialisation, ReLU_α
trajectories, the DIB information plane, the LR range test.
"""

from __future__ import annotations

import math
import re

from latentgeo import figures
from latentgeo.families.weights import alpha_trajectories
from latentgeo.report.reading import Curve, Made, Variant, load_penultimate

MAX_CODE_NODES = 16  # penultimate layers up to this width get per-node histograms, else a PCA


def code_made(variant: Variant, suffix: str) -> tuple[list[Made], str]:
    """The code itself, from the representative run's penultimate.npz."""
    run = variant.representative
    data = load_penultimate(run)
    if not data and run.artifact("penultimate").is_file():
        return [], (f"{run.artifact('penultimate').name} is unreadable (damaged, or holds no "
                    "features); it is left as it is.")
    if not data:
        return [], ("No penultimate features: rerun with metrics.penultimate.when=last to "
                    "store them.")
    splits = [figures.SplitCodes(s, d["x"], d["labels"]) for s, d in data.items() if "labels" in d]
    if not splits:
        return [], "penultimate.npz has no labels."
    width = splits[0].x.shape[1]
    head = run.flat_config().get("head.name", "")
    if width > MAX_CODE_NODES:
        fig = figures.pca_figure(splits, value_name=f"the {width}-dimensional features")
        return [Made("code", f"code_pca{suffix}", f"{variant.label}: the features in "
                     "principal components", fig,
                     f"{width} dimensions (head {head}): too many for one panel each; PCA "
                     f"fitted on {splits[0].name}, coloured by true class.")], ""
    nodes = list(range(width))
    hist = figures.code_histogram_figure(splits, nodes)
    dims = tuple(figures.top_variance_nodes(splits[0].x, 2)) if width >= 2 else (0, 0)
    scatter = figures.code_scatter_figure(splits, dims)  # type: ignore[arg-type]
    return [Made("code", f"code_hist{suffix}", f"{variant.label}: x_pen per node, by class",
                 hist, f"{width} penultimate nodes at the final epoch, histograms stacked by "
                 "true class; bins shared by train and test."),
            Made("code", f"code_2d{suffix}", f"{variant.label}: the code in two dimensions",
                 scatter, "Left: the two nodes with the largest train variance, coloured by "
                 "true class. Right: per class, the fraction of samples with x_pen > 0 "
                 "(0 or 1 everywhere = one binary code word per class).")], ""


def information_plane_made(variant: Variant, suffix: str) -> Made | None:
    pattern = re.compile(r"^dib/(vmin|vsuff)/(.+)/([^/]+)$")
    metrics = variant.curves[0]
    found: dict[str, dict[str, dict[str, Curve]]] = {}
    for key, curve in metrics.items():
        match = pattern.match(key)
        if match:
            term, block, split = match.groups()
            found.setdefault(split, {}).setdefault(block, {})[term] = curve
    planes: dict[str, dict[str, tuple[list[int], list[float], list[float]]]] = {}
    for split, blocks in found.items():
        for block, terms in blocks.items():
            if "vmin" not in terms or "vsuff" not in terms:
                continue
            epochs = [e for e in sorted(terms["vmin"]) if e in terms["vsuff"]
                      and math.isfinite(terms["vmin"][e][0])
                      and math.isfinite(terms["vsuff"][e][0])]
            if epochs:
                planes.setdefault(split, {})[block] = (
                    epochs, [terms["vmin"][e][0] for e in epochs],
                    [terms["vsuff"][e][0] for e in epochs])
    fig = figures.information_plane_figure(planes)
    if fig is None:
        return None
    return Made("information_plane", f"information_plane{suffix}",
                f"{variant.label}: DIB information plane", fig,
                "V-minimality (x) against V-sufficiency (y), one marker shape per block.")


def run_level_made(variant: Variant, suffix: str) -> tuple[list[Made], list[str]]:
    """The representative run's own figures (not averaged across runs)."""
    run = variant.representative
    made, notes = code_made(variant, suffix)
    notes_list = [notes] if notes else []
    reinit = run.read_artifact("reinit")
    if isinstance(reinit, dict) and reinit.get("layers") and reinit.get("sources"):
        try:
            fig = figures.reinit_heatmap_figure(reinit)
            made.append(Made("reinit", f"reinit{suffix}", f"{variant.label}: layer "
                             "re-initialisation robustness", fig,
                             "Each column: one layer's weights replaced by those of the row's "
                             "source (init = the run's initial weights, rand = a fresh draw), "
                             "the rest kept; red = test accuracy lost."))
        except (KeyError, TypeError, ValueError) as error:
            notes_list.append(f"reinit.json unreadable: {error}")
    try:
        trajectories = figures.alpha_sites(run.read_artifact("alpha")
                                           or alpha_trajectories(run.events()))
    except ValueError as error:
        trajectories = {}
        notes_list.append(str(error))
    fig = figures.alpha_figure(trajectories)
    if fig is not None:
        made.append(Made("alpha", f"alpha{suffix}", f"{variant.label}: ReLU_α trajectories",
                         fig, "Band: min..max over units (channel granularity) or ± std."))
    plane = information_plane_made(variant, suffix)
    if plane:
        made.append(plane)
    lr_find = run.read_artifact("lr_find")
    if isinstance(lr_find, dict) and lr_find.get("lrs"):
        try:
            made.append(Made("lr_find", f"lr_find{suffix}", f"{variant.label}: LR range test",
                             figures.lr_find_figure(lr_find)))
        except (KeyError, TypeError, IndexError) as error:
            notes_list.append(f"lr_find.json unreadable: {error}")
    return made, notes_list
