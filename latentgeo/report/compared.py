"""The figures comparing every variant (mean ± population std over seeds): the final-epoch
scores, the misclassification ROC, and curves over epochs (training, schedules, encoding).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from latentgeo import figures
from latentgeo.metrics.mahalanobis import misclassification_distances
from latentgeo.report.reading import (
    SCORES,
    SPLITS,
    Made,
    Variant,
    _seed_note,
    is_sample_count,
    is_time_series,
    load_penultimate,
    missing_reason,
)

# what a metric (the part after "<split>/") is, for titles and axis labels (name and unit)
METRIC_TEXT: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "fraction correct"),
    "loss": ("loss (bin_enc: CE + γ·mean x_pen²)", "loss (nats)"),
    "binarity/score": ("binarity score", "GMM log-likelihood (nats)"),
    "binarity/stds": ("GMM component σ (mean)", "σ (z-scored units)"),
    "binarity/peaks_distance_mean": ("peaks distance |μ₁ − μ₂| / σ", "mean over nodes (σ units)"),
    "binarity/peaks_distance_std": ("peaks distance: spread over nodes",
                                    "std over nodes (σ units)"),
    "same_encoding_fraction": ("same-encoding fraction", "fraction with the class's code"),
    "collapse/within_class_variation": ("within-class variation tr(Σ_W Σ_B⁺)/K",
                                        "dimensionless"),
    "collapse/within_class_variation_weighted": ("within-class variation / P",
                                                 "dimensionless"),
    "collapse/sigma_w": ("σ_W: mean entry of Σ_W", "x_pen units²"),
    "collapse/equiangular": ("equiangularity: std of cos(μ_i, μ_j)", "dimensionless"),
    "collapse/maxangle": ("max-angle: mean |cos + 1/(K−1)|", "dimensionless"),
    "collapse/equinorm": ("equinorm: std / mean of ‖μ_c‖", "dimensionless"),
    "collapse/relative_norm_std": ("std / mean of ‖μ_i − μ_j‖", "dimensionless"),
    "lr": ("learning rate", "learning rate"),
    "gamma": ("γ, weight of mean x_pen² in the loss", "γ"),
}
ENCODING_METRICS = ("binarity/score", "binarity/peaks_distance_mean", "binarity/stds",
                    "binarity/peaks_distance_std", "same_encoding_fraction")


def scores_made(variants: Sequence[Variant], variant_axis: str) -> tuple[Made | None, str]:
    """Final-epoch scores per variant (BE's table as a figure)."""
    panels, unmeasured = [], []
    for key, title, xlabel, limits, _ in SCORES:
        rows = []
        for variant in variants:
            values, seeds, reasons = [], [], []
            for run, seed in zip(variant.runs, variant.seeds, strict=False):
                reason = missing_reason(run, key)
                if reason is None:
                    values.append(float(run.summary()[key]))
                    seeds.append(seed)
                else:
                    reasons.append((seed, reason))
            rows.append(figures.ScoreRow(variant.label, values, seeds,
                                         _seed_note(reasons, len(variant.runs))))
        if not any(row.values for row in rows):
            unmeasured.append(title)
            if all("not recorded" in row.note for row in rows):
                continue
        panels.append(figures.ScorePanel(title, xlabel, rows, limits))
    if not any(row.values for panel in panels for row in panel.rows):
        return None, ""
    fig = figures.scores_figure(panels, variant_axis, [v.colour for v in variants])
    caption = ("Final epoch; dot = mean over seeds, bar = ± population std, × = one seed. "
               "AUROC = auroc_exact (P(d_wrong > d_correct), not BE's 101-point estimate).")
    if unmeasured:
        caption += f" No value in any run: {', '.join(unmeasured)}."
    return Made("scores", "scores", "Final-epoch scores per variant", fig, caption), ""


def roc_panels(variants: Sequence[Variant]) -> list[figures.RocPanel]:
    """Per variant, the misclassification ROC of each seed from its penultimate.npz (BE's
    distances, ``misclassification_distances``), or why there is none."""
    panels = []
    for variant in variants:
        curves_, notes = [], []
        for run, seed in zip(variant.runs, variant.seeds, strict=False):
            data = load_penultimate(run)
            if not data or "train" not in data or "test" not in data or any(
                    part not in data[s] for s in ("train", "test") for part in ("labels", "preds")):
                notes.append(f"seed {seed}: no train and test features in penultimate.npz "
                             "(metrics.penultimate.when=last stores them)")
                continue
            tensors = {s: {k: torch.from_numpy(np.ascontiguousarray(v))
                           for k, v in data[s].items()} for s in ("train", "test")}
            distances = misclassification_distances(
                tensors["train"]["x"], tensors["train"]["labels"], tensors["train"]["preds"],
                tensors["test"]["x"], tensors["test"]["labels"], tensors["test"]["preds"])
            correct, wrong = distances["correct_test"], distances["wrong_test"]
            if distances["num_classes_used"] == 0:
                notes.append(f"seed {seed}: ROC undefined: no class has more than 2 correctly "
                             "classified train samples")
            elif not np.size(wrong):
                notes.append(f"seed {seed}: ROC undefined: no class has more than 2 "
                             "misclassified test samples")
            elif not np.size(correct):
                notes.append(f"seed {seed}: ROC undefined: no class has more than 2 correctly "
                             "classified test samples")
            else:
                fpr, tpr, auc = figures.roc_points(correct, wrong)
                curves_.append(figures.RocCurve(f"seed {seed}", fpr, tpr, auc))
        panels.append(figures.RocPanel(variant.label, curves_, "; ".join(notes)))
    return panels


def roc_made(variants: Sequence[Variant]) -> Made | None:
    """Misclassification ROC per variant from the stored penultimate features."""
    panels = roc_panels(variants)
    if not any(p.curves for p in panels) and all("penultimate.npz" in p.note for p in panels):
        return None
    fig = figures.roc_figure(panels, [v.colour for v in variants])
    return Made("roc", "roc", "Misclassification ROC (Mahalanobis distance to the predicted "
                "class)", fig,
                "BE's procedure on the final penultimate features: class Gaussians fitted on "
                "correctly classified train samples; a test sample is flagged when its "
                "distance to its predicted class exceeds the threshold. Classes with ≤ 2 "
                "samples in a group are left out, as BE.")


def _panel_lines(variants: Sequence[Variant], rest: str, with_split: bool = True
                 ) -> list[figures.Line]:
    lines = []
    for variant in variants:
        mean = variant.mean
        for split in (SPLITS if with_split else ("",)):
            key = f"{split}/{rest}" if split else rest
            curve = mean.get(key)
            if not curve or not is_time_series(curve):
                continue
            epochs = sorted(curve)
            lines.append(figures.Line(variant.label, split, epochs,
                                      [curve[e][0] for e in epochs],
                                      [curve[e][1] for e in epochs], variant.colour))
    return lines


def _merge_identical(lines: list[figures.Line], count: int) -> list[figures.Line]:
    """When every variant has the same line (a shared LR schedule), one grey line
    ``all variants`` instead of several that hide each other."""
    if count < 2 or len(lines) != count or len({line.style for line in lines}) != 1:
        return lines
    first = lines[0]
    if all(list(line.epochs) == list(first.epochs) and np.allclose(
            np.asarray(line.mean, dtype=float), np.asarray(first.mean, dtype=float),
            equal_nan=True) for line in lines[1:]):
        return [figures.Line("all variants", first.style, first.epochs, first.mean, None,
                             "0.3")]
    return lines


def curve_made(variants: Sequence[Variant], figure_id: str, title: str,
               metrics: Sequence[str], caption: str = "", with_split: bool = True,
               log: Sequence[str] = (),
               text: dict[str, tuple[str, str]] | None = None) -> Made | None:
    """One panel per metric name; its title and axis label from ``text``, else METRIC_TEXT,
    else the name itself."""
    panels = []
    for rest in metrics:
        lines = _panel_lines(variants, rest, with_split)
        if not with_split:
            lines = _merge_identical(lines, len(variants))
        if lines:
            name, ylabel = (text or {}).get(rest) or METRIC_TEXT.get(rest, (rest, rest))
            limits = (0.0, 1.02) if rest in ("accuracy", "same_encoding_fraction") else None
            panels.append(figures.CurvePanel(name, ylabel, lines, rest in log, limits))
    if not panels:
        return None
    colours = {v.label: v.colour for v in variants} | {"all variants": "0.3"}
    fig = figures.curves_figure(panels, colours=colours)
    multi = any(len(v.runs) > 1 for v in variants)
    caption = (caption + (" Band = ± population std over seeds." if multi else "")).strip()
    return Made(figure_id, figure_id, title, fig, caption)


def _keys_matching(variants: Sequence[Variant], pattern: re.Pattern[str]) -> list[str]:
    """The metric names matching ``pattern`` in any run of the variants, counts left out."""
    return list(dict.fromkeys(k for v in variants for c in v.curves for k in c
                              if pattern.match(k) and not is_sample_count(k)))
