"""Collapse and the geometry against depth: BE's collapse curves, TH's per-block NC1, HP's
hyperplanes, and the "Field geometry" section (neural collapse NC1–NC4 and CDNV, effective rank
and intrinsic dimension, linear CKA, weight spectra).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from latentgeo import figures, selection
from latentgeo.metrics.features import PENULTIMATE
from latentgeo.report.compared import _keys_matching, curve_made
from latentgeo.report.reading import SPLITS, Made, Variant, choose_epochs


def collapse_made(variants: Sequence[Variant]) -> Made | None:
    keys = _keys_matching(variants, re.compile(r"^(train|val|test)/collapse/"))
    rests = list(dict.fromkeys(key.partition("/")[2] for key in keys))
    return curve_made(variants, "collapse", "Collapse of the penultimate layer over epochs (BE)",
                      rests, "BE's collapse metrics of x_pen, classes = predictions.",
                      log=("collapse/within_class_variation",
                           "collapse/within_class_variation_weighted"))


def _depth_series(variant: Variant, keys: Sequence[str], epochs: Sequence[int],
                  extra_key: str | None = None) -> list[figures.DepthSeries]:
    """Per chosen epoch, the value of each key: mean ± std over the variant's runs."""
    series = []
    for epoch in epochs:
        means, stds = [], []
        for key in [*keys, *([extra_key] if extra_key else [])]:
            values = [c[key][epoch][0] for c in variant.curves if epoch in c.get(key, {})]
            stats = selection.mean_std(values)
            means.append(math.nan if stats["mean"] is None else stats["mean"])
            stds.append(math.nan if stats["std"] is None else stats["std"])
        label = f"epoch {epoch}" + (" (init)" if epoch == 0 else "")
        multi = len(variant.runs) > 1
        extra = means.pop() if extra_key else None
        extra_std = stds.pop() if extra_key else None
        series.append(figures.DepthSeries(label, means, stds if multi else None,
                                          extra, extra_std if multi else None))
    return series


def _final_label(series: list[figures.DepthSeries], final: int) -> None:
    for s in series:
        if s.label == f"epoch {final}":
            s.label += " (final)"


def depth_made(variants: Sequence[Variant], figure_id: str, title: str, key: str, ylabel: str,
               caption: str, log: bool = False, band: tuple[float, float] | None = None,
               band_label: str = "", split_free: bool = False) -> Made | None:
    """One panel per variant: the value of ``<split>/<key>`` (``key`` holds ``{layer}``; no
    split with ``split_free``) against depth, at chosen epochs (init, a few, the last), one
    line style per split, ± std over seeds."""
    before, after = key.split("{layer}")
    prefix = "" if split_free else r"(train|val|test)/"
    pattern = re.compile(rf"^{prefix}{re.escape(before)}(.+){re.escape(after)}$")
    panels = []
    for variant in variants:
        keys = _keys_matching([variant], pattern)
        layers = list(dict.fromkeys(pattern.match(k).group(pattern.groups)  # type: ignore
                                    for k in keys))
        layers.sort(key=lambda layer: layer == PENULTIMATE)  # x_pen after the blocks
        epochs = sorted({e for c in variant.curves for k in keys for e in c.get(k, {})})
        if not keys or not epochs:
            continue
        chosen = choose_epochs(epochs)
        series = []
        for split in ([""] if split_free else SPLITS):
            split_keys = [f"{split}/{key.format(layer=layer)}".lstrip("/") for layer in layers]
            if not any(k in c for c in variant.curves for k in split_keys):
                continue
            split_series = _depth_series(variant, split_keys, chosen)
            for s in split_series:
                s.style = split
            _final_label(split_series, chosen[-1])
            series += split_series
        panels.append(figures.DepthPanel(variant.label, ylabel, layers, series, log=log,
                                         band=band, band_label=band_label))
    if not panels:
        return None
    fig = figures.depth_figure(panels, key_title="epoch; split", columns=3)
    multi = any(len(v.runs) > 1 for v in variants)
    return Made(figure_id, figure_id, title, fig,
                caption + (" Error bars = ± population std over seeds." if multi else ""))


def nc1_made(variants: Sequence[Variant]) -> Made | None:
    """TH's per-block NC1 against depth at chosen epochs."""
    return depth_made(variants, "nc1", "Neural collapse (NC1) per block against depth",
                      "nc1/{layer}", "NC1 = tr(Σ_W Σ_B⁺)", "TH's NC1 of each hooked block's "
                      "output, by true labels; lower = more collapsed. Solid: test, dashed: "
                      "train.", log=True)


# the field's collapse measures (rhubarbwu/neural-collapse), their panel text and scale
FIELD_COLLAPSE = {
    "nc1": ("NC1 = tr(Σ_W Σ_B⁺)/K", "within / between class", True),
    "nc1_trace_ratio": ("NC1 trace ratio tr Σ_W / tr Σ_B", "ratio", True),
    "nc2_etf_error": ("NC2: distance to a simplex ETF", "normalised Gram error", True),
    "nc2_equinorm": ("NC2: equinorm (CV of class-mean norms)", "coefficient of variation", True),
    "nc2_equiangularity": ("NC2: equiangularity (std of cosines)", "std", True),
    "nc3_self_duality": ("NC3: self-duality of W and class means", "ETF error of W·Mᵀ", True),
    "nc4_ncc_agreement": ("NC4: agreement with nearest class centre", "fraction", False),
    "cdnv": ("CDNV (Galanti et al.)", "mean over class pairs", True),
}


def field_collapse_made(variants: Sequence[Variant]) -> Made | None:
    rests = [f"neural_collapse/{PENULTIMATE}/{q}" for q in FIELD_COLLAPSE]
    text = {rest: (name, unit)
            for rest, (name, unit, _) in zip(rests, FIELD_COLLAPSE.values(), strict=True)}
    return curve_made(variants, "neural_collapse", "Neural collapse NC1–NC4 and CDNV over epochs",
                      rests, "Of x_pen with true labels (rhubarbwu/neural-collapse's "
                      "definitions): each falls towards 0 as collapse proceeds, NC4 rises to 1. "
                      "Solid: test, dashed: train.",
                      log=[r for r, (_, _, log) in zip(rests, FIELD_COLLAPSE.values(),
                                                       strict=True) if log], text=text)


def rank_made(variants: Sequence[Variant]) -> list[Made | None]:
    """Effective rank and intrinsic dimension: of x_pen over epochs, per layer over depth."""
    text = {"effective_rank/{layer}/erank": "effective rank exp H(σ/Σσ)",
            "effective_rank/{layer}/rankme": "RankMe",
            "intrinsic_dimension/{layer}/twonn": "intrinsic dimension (TwoNN)",
            "intrinsic_dimension/{layer}/mle": "intrinsic dimension (MLE, k = 20)"}
    rests = [key.format(layer=PENULTIMATE) for key in text]
    made: list[Made | None] = [curve_made(
        variants, "rank", "Effective rank and intrinsic dimension of x_pen over epochs", rests,
        "Roy & Vetterli's effective rank and RankMe (reptrix) of the centred features; TwoNN "
        "and the Levina–Bickel MLE (scikit-dimension) on a fixed subsample. Collapse drives the "
        "rank of x_pen towards K − 1. Solid: test, dashed: train.",
        text={rest: (f"{name} of x_pen", name)
              for rest, name in zip(rests, text.values(), strict=True)})]
    for key, name in text.items():
        family, _, quantity = key.partition("/{layer}/")
        made.append(depth_made(variants, f"{family}_{quantity}_depth",
                               f"{name} per layer against depth", key, name,
                               "Per block (metrics.<family>.blocks) and x_pen (penultimate)."))
    return made


def cka_made(variants: Sequence[Variant]) -> list[Made | None]:
    """Linear CKA: layer × layer at the last evaluation (the representative run, test split
    or the first recorded), and each layer's CKA to its initialisation against depth."""
    panels = []
    pattern = re.compile(r"^(train|val|test)/cka/(.+)/(.+)$")
    for variant in variants:
        curves = variant.curves[0] if variant.curves else {}
        pairs = [pattern.match(k) for k in curves if pattern.match(k)]
        splits = [s for s in ("test", "val", "train") if any(m.group(1) == s for m in pairs)]
        if not splits:
            continue
        split = splits[0]
        found = {(m.group(2), m.group(3)): curves[m.group(0)] for m in pairs
                 if m.group(1) == split and m.group(3) != "init"}
        layers = list(dict.fromkeys(name for pair in found for name in pair))
        last = max(e for curve in found.values() for e in curve)
        matrix = np.eye(len(layers))
        for (a, b), curve in found.items():
            value = curve.get(last, (math.nan,))[0]
            i, j = layers.index(a), layers.index(b)
            matrix[i, j] = matrix[j, i] = value
        panels.append(figures.MatrixPanel(f"{variant.label}: {split}, epoch {last}", layers,
                                          matrix))
    heatmap = None if not panels else Made(
        "cka", "cka", "Linear CKA between layers", figures.similarity_figure(
            panels, "linear CKA (Kornblith et al. 2019)"),
        "CKA of every pair of block outputs and x_pen on a fixed sample of the split "
        "(metrics.cka); 1 = the same representation up to rotation and scale.")
    to_init = depth_made(variants, "cka_init", "CKA of each layer to itself at initialisation",
                         "cka/{layer}/init", "CKA(trained, init)",
                         "How far each layer's representation moved from the initial weights' "
                         "(1 = unchanged). Solid: test, dashed: train.")
    return [heatmap, to_init]


def spectra_made(variants: Sequence[Variant]) -> Made | None:
    return depth_made(variants, "weight_spectra", "Power-law exponent α of each layer's weights",
                      "weight_spectra/{layer}/alpha", "α (WeightWatcher)",
                      "The ESD of WᵀW fitted with a power law (Clauset x_min; WeightWatcher "
                      "0.7.7's fit); shaded: 2 ≤ α ≤ 6, what WeightWatcher calls well trained.",
                      band=(2.0, 6.0), band_label="2 ≤ α ≤ 6", split_free=True)


def hyperplanes_made(variants: Sequence[Variant]) -> Made | None:
    """HP's projection statistics per layer against depth at init, chosen epochs, final."""
    pattern = re.compile(r"^hyperplanes/(.+)/(mean|mass)$")
    panels = []
    for variant in variants:
        config = variant.representative.flat_config()
        normalized = config.get("metrics.hyperplanes.normalize", True) is not False
        for stat in ("mean", "mass"):
            keys = [k for k in _keys_matching([variant], pattern)
                    if k.endswith(f"/{stat}") and k != f"hyperplanes/net/{stat}"]
            epochs = sorted({e for c in variant.curves for k in keys for e in c.get(k, {})})
            if not keys or not epochs:
                continue
            chosen = choose_epochs(epochs)
            net = f"hyperplanes/net/{stat}"
            has_net = any(net in c for c in variant.curves)
            series = _depth_series(variant, keys, chosen, net if has_net else None)
            _final_label(series, chosen[-1])
            layers = [figures.axis_label(k[len("hyperplanes/"):-len(stat) - 1]) for k in keys]
            ylabel = ("mean cos∠(w, 1) over the layer's filters" if normalized
                      else "mean ⟨w, 1⟩ over the layer's filters") if stat == "mean" else \
                "fraction of filters with projection ≤ 0"
            name = "mean projection" if stat == "mean" else "mass at or below 0"
            title = f"{variant.label} · {name}" if len(variants) > 1 else name
            panels.append(figures.DepthPanel(title, ylabel, layers, series,
                                             extra="whole net" if has_net else "",
                                             reference=0.0 if stat == "mean" else 0.5))
    if not panels:
        return None
    fig = figures.depth_figure(panels, key_title="epoch (0 = init)", columns=2)
    return Made("hyperplanes", "hyperplanes", "Hyperplane orientation per layer against depth",
                fig, "Projection of the all-ones vector onto each filter's normal (HP §3.1); "
                "'whole net' pools every filter of the network. Grey line: 0 (mean) and 0.5 "
                "(mass), what a symmetric arrangement gives.")
