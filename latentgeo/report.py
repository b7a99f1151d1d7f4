"""Static HTML report of a run dir or a sweep dir: the figures a paper would show, as PNG (on
the page) and SVG (for the paper) beside it.

    python -m latentgeo.report RUN_DIR|SWEEP_DIR [--out report.html] [--select METRIC]

Writes ``report.html`` and ``report_files/<figure>.png|.svg`` (relative links, no scripts, no
network: it opens offline in any browser). A sweep's variants are compared in one figure per
family (mean ± population std over the selected run of each seed, as the aggregate table); a
single run is a sweep of one variant, drawn by the same functions (``latentgeo.figures``). Each
figure is drawn only when its data exist; a value that is missing is explained where it would
be (e.g. "AUROC undefined: no class has more than 2 misclassified test samples").

======================  ================================================================
figure (file)           data it needs (run dir)
======================  ================================================================
scores                  summary.json: test/accuracy, test/mahalanobis/auroc_exact,
                        test/perturbation/score, test/same_encoding_fraction,
                        test/binarity/score (final epoch)
roc                     penultimate.npz with train/test x_pen, labels, preds
                        (metrics.penultimate.when=last)
training                <split>/accuracy, <split>/loss over ≥ 2 epochs
schedule                lr, gamma (γ: heads with the compression loss only)
encoding                <split>/binarity/*, <split>/same_encoding_fraction over epochs
collapse                <split>/collapse/* (BE, grouped by predictions) over epochs
nc1                     <split>/nc1/<block> (metrics.nc1.when)
hyperplanes             hyperplanes/<layer>/mean|mass (epoch 0 = init), hyperplanes/net/*
code_hist_<v>, code_2d  penultimate.npz with ≤ 16 nodes: per-node histograms by class,
                        the two highest-variance nodes, the code word per class
code_pca_<v>            penultimate.npz with > 16 dimensions (no_pen): PCA by class
reinit_<v>              reinit.json (metrics.reinit.when=last, analysis.reinit)
alpha_<v>               alpha.json, else alpha/<site> in metrics.jsonl
information_plane_<v>   dib/vmin/<block>/<split> and dib/vsuff/<block>/<split>
lr_find_<v>             lr_find.json
======================  ================================================================

``<v>`` is the variant (its short label); a run report has no suffix. Run-level figures
(those with ``<v>``) show one representative run per variant: the selected run of the lowest
seed (not the best one, to avoid showing a cherry-picked repeat). Metrics computed once
(``when=last``) are final scores, never curves; bookkeeping counts (``num_*``) are not plotted.
"""

from __future__ import annotations

import argparse
import functools
import html
import math
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentgeo import aggregate as agg
from latentgeo import figures, selection
from latentgeo.families.latent import BINARY_CODE_HEADS
from latentgeo.families.weights import alpha_trajectories
from latentgeo.metrics.features import PENULTIMATE
from latentgeo.metrics.mahalanobis import misclassification_distances
from latentgeo.records import DISK_FULL, RunDir, is_run_dir, write_problem
from latentgeo.results_cache import history_table

SPLITS = ("train", "val", "test")
MAX_CODE_NODES = 16  # penultimate layers up to this width get per-node histograms, else a PCA
DEPTH_EPOCHS = 4  # epochs drawn in the depth profiles: first (init), evenly spaced, final
FORMATS = ("png", "svg")

# epoch -> (mean, std); std is None for a single run
Curve = dict[int, tuple[float, float | None]]

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

# final-epoch scores (BE's table): summary key, title, axis label, range, config key of its
# schedule
SCORES = (
    ("test/accuracy", "test accuracy", "fraction of test samples correct", (0.0, 1.0), ""),
    ("test/mahalanobis/auroc_exact", "misclassification AUROC (Mahalanobis)",
     "AUROC, misclassified vs correct (0.5 = chance)", (0.0, 1.0), "metrics.mahalanobis.when"),
    ("test/perturbation/score", "perturbation score (DeepFool)",
     "mean ‖r‖ / ‖x‖ to flip the prediction (relative)", (0.0, math.inf),
     "metrics.perturbation.when"),
    ("test/same_encoding_fraction", "same-encoding fraction (test)",
     "fraction of test samples with their class's commonest code", (0.0, 1.0),
     "metrics.same_encoding.when"),
    ("test/binarity/score", "binarity score (test)",
     "mean GMM log-likelihood per node (nats)", (-math.inf, math.inf), "metrics.binarity.when"),
)


@dataclass
class FigureEntry:
    """One figure of the report: its family id (see the module table), files and caption."""

    figure_id: str
    title: str
    files: list[str]  # relative to the page: PNG first
    caption: str = ""

    @property
    def filename(self) -> str:
        return self.files[0]


@dataclass
class Variant:
    """What the report compares: a variant of a sweep (or the run of a run report), with the
    selected run of each seed and the representative run."""

    label: str  # short, for figures
    full_label: str
    slug: str  # for file names ("" in a run report)
    runs: list[RunDir]
    seeds: list[Any]
    lrs: list[Any] = field(default_factory=list)
    colour: Any = None
    curves: list[dict[str, Curve]] = field(default_factory=list)

    @property
    def representative(self) -> RunDir:
        return self.runs[0]

    @functools.cached_property
    def mean(self) -> dict[str, Curve]:
        """Mean ± std over the runs, per metric and epoch."""
        return mean_curves(self.curves)


# ----------------------------------------------------------------------------- reading


def _scalar(value: Any) -> float | None:
    """Float for plotting: null → NaN; lists and strings → None (not a curve point)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def curves(events: Sequence[dict[str, Any]]) -> dict[str, Curve]:
    """Per metric name: epoch → value (the last event of that epoch wins), in first-seen order;
    null is NaN (a gap in the line); metrics without any finite value are left out."""
    result: dict[str, Curve] = {}
    for event in events:
        epoch = event.get("epoch")
        if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
            continue
        for key, value in event.items():
            if key in ("epoch", "step"):
                continue
            number = _scalar(value)
            if number is not None:
                result.setdefault(key, {})[int(epoch)] = (number, None)
    # a metric that is null at every epoch has no data: it must not make an empty panel
    return {key: curve for key, curve in result.items()
            if any(math.isfinite(value) for value, _ in curve.values())}


class RunCurves(Mapping):
    """One run's ``curves`` as arrays (a few MB for thousands of runs where dicts of tuples
    take GB); a metric's ``Curve`` dict is built when asked for."""

    def __init__(self, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.arrays = arrays  # metric -> (epochs, values), one value per epoch, sorted

    def __getitem__(self, name: str) -> Curve:
        epochs, values = self.arrays[name]
        return {e: (v, None) for e, v in zip(epochs.tolist(), values.tolist())}

    def __iter__(self):
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


def table_curves(table) -> RunCurves:
    """``curves`` of a run's history table (``results_cache.history_table``), where a null is
    a value not recorded: the line joins the epochs around it instead of leaving a gap."""
    if "epoch" not in table.column_names or not table.num_rows:
        return RunCurves({})
    epochs = table["epoch"].to_numpy(zero_copy_only=False).astype(float)
    arrays = {}
    for name in table.column_names[2:]:
        values = table[name].to_numpy(zero_copy_only=False)
        keep = ~np.isnan(values) & ~np.isnan(epochs)
        if not np.isfinite(values[keep]).any():
            continue
        kept_epochs, kept_values = epochs[keep].astype(np.int64), values[keep]
        # the last event of an epoch wins: unique over the reversed order keeps the last one
        unique, last = np.unique(kept_epochs[::-1], return_index=True)
        arrays[name] = (unique, kept_values[::-1][last])
    return RunCurves(arrays)


def _epoch_matrix(per_run: Sequence[dict[str, Curve]], name: str
                  ) -> tuple[list[int], np.ndarray]:
    """A metric's values as runs × epochs (NaN where a run has none), over the union of
    epochs."""
    if all(isinstance(run, RunCurves) for run in per_run):
        pieces = [run.arrays.get(name) for run in per_run]
        epochs = np.unique(np.concatenate([p[0] for p in pieces if p is not None]))
        values = np.full((len(per_run), len(epochs)), np.nan)
        for row, piece in enumerate(pieces):
            if piece is not None:
                values[row, np.searchsorted(epochs, piece[0])] = piece[1]
        return epochs.tolist(), values
    epochs = sorted({e for run in per_run for e in run.get(name, {})})
    column = {epoch: index for index, epoch in enumerate(epochs)}
    values = np.full((len(per_run), len(epochs)), np.nan)
    for row, run in enumerate(per_run):
        curve = run.get(name, {})
        values[row, [column[e] for e in curve]] = [point[0] for point in curve.values()]
    return epochs, values


def mean_curves(per_run: Sequence[dict[str, Curve]]) -> dict[str, Curve]:
    """Mean and population std across runs, per metric and epoch, over the finite values."""
    names = list(dict.fromkeys(name for run in per_run for name in run))
    result: dict[str, Curve] = {}
    for name in names:
        epochs, values = _epoch_matrix(per_run, name)
        values[~np.isfinite(values)] = np.nan
        count = np.sum(~np.isnan(values), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(values, axis=0) / count
            std = np.sqrt(np.nansum((values - mean) ** 2, axis=0) / count)
        many = len(per_run) > 1
        result[name] = {epoch: (float(mean[i]), float(std[i]) if many else None) if count[i]
                        else (math.nan, None) for i, epoch in enumerate(epochs)}
    return result


def is_bookkeeping_count(key: str) -> bool:
    """``num_classes_used``, ``num_train_fit``, …: how a metric was computed, not a result."""
    return key.rpartition("/")[2].startswith("num_")


def is_time_series(curve: Curve) -> bool:
    """A curve needs two epochs with a value; a metric computed once is a final score."""
    return sum(math.isfinite(value) for value, _ in curve.values()) >= 2


def choose_epochs(epochs: Sequence[int], count: int = DEPTH_EPOCHS) -> list[int]:
    """``count`` epochs of a sorted list: the first, the last and evenly spaced ones between."""
    epochs = sorted(set(epochs))
    if len(epochs) <= count:
        return epochs
    picks = np.linspace(0, len(epochs) - 1, count).round().astype(int)
    return [epochs[i] for i in dict.fromkeys(picks.tolist())]


def load_penultimate(run: RunDir) -> dict[str, dict[str, np.ndarray]] | None:
    """``penultimate.npz`` as ``{split: {"x", "labels", "preds"}}``; None when absent."""
    path = run.artifact("penultimate")
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            found: dict[str, dict[str, np.ndarray]] = {}
            for split in SPLITS:
                if f"{split}_x_pen" not in data.files:
                    continue
                x = np.asarray(data[f"{split}_x_pen"], dtype=float)
                found[split] = {"x": x.reshape(len(x), -1)}
                for part in ("labels", "preds"):
                    if f"{split}_{part}" in data.files:
                        found[split][part] = np.asarray(data[f"{split}_{part}"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a damaged file: unreadable
        return None
    return {s: d for s, d in found.items() if d["x"].size} or None


# ----------------------------------------------------------------------------- variants


def short_labels(variant_values: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[str]:
    """Readable variant names: the value alone when one key varies (``bin_enc``), else
    ``key=value`` pairs with the key's last component."""
    keys = list(dict.fromkeys(k for values in variant_values for k in values))
    if not keys:
        return list(labels)
    short = []
    for values, label in zip(variant_values, labels, strict=False):
        if len(keys) == 1:
            short.append(str(values.get(keys[0], label)))
        else:
            short.append(",".join(f"{k.rpartition('.')[2]}={values.get(k)}" for k in keys))
    return short if len(set(short)) == len(short) else list(labels)


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "variant"
    slug, index = base, 2
    while slug in taken:
        slug, index = f"{base}_{index}", index + 1
    taken.add(slug)
    return slug


def _finish(variants: list[Variant]) -> list[Variant]:
    for variant, colour in zip(variants, figures.colors(len(variants)), strict=False):
        variant.colour = colour
        # each run's events through the columnar cache of its folder (read once, then mapped)
        variant.curves = [table_curves(history_table(run, run.dir.parent))
                          for run in variant.runs]
    return variants


def sweep_variants(result: selection.AggregateResult, by_name: dict[str, RunDir]) -> list[Variant]:
    """The variants with a usable run, their selected runs in seed order."""
    usable = [v for v in result.variants if v.selected]
    labels = short_labels([v.variant for v in usable], [v.label for v in usable])
    taken: set[str] = set()
    variants = []
    for v, label in zip(usable, labels, strict=False):
        chosen = sorted(v.selected, key=lambda s: selection.value_order(s.seed))
        variants.append(Variant(label, v.label, _slug(label, taken),
                                [by_name[s.run] for s in chosen], [s.seed for s in chosen],
                                [s.lr for s in chosen]))
    return _finish(variants)


def run_variant(run: RunDir) -> Variant:
    config = run.flat_config()
    label = str(config.get("head.name") or run.name)
    return _finish([Variant(label, label, "", [run], [config.get(selection.SEED_KEY)],
                            [config.get(selection.LR_KEY)])])[0]


# ----------------------------------------------------------------------------- missing values


def missing_reason(run: RunDir, key: str) -> str | None:
    """Why ``key`` has no finite final value in ``run``'s summary.json (None when it has one)."""
    summary = run.summary() or {}
    value = summary.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return None
    config = run.flat_config()
    family = key.split("/")[1] if key.count("/") >= 1 else key
    if family == "mahalanobis":
        prefix = key.rpartition("/")[0]
        counts = {name: summary.get(f"{prefix}/{name}") for name in
                  ("num_classes_used", "num_correct_test", "num_wrong_test")}
        if counts["num_classes_used"] == 0:
            return ("AUROC undefined: no class has more than 2 correctly classified train "
                    "samples to fit its Gaussian")
        if counts["num_wrong_test"] == 0:
            return "AUROC undefined: no class has more than 2 misclassified test samples"
        if counts["num_correct_test"] == 0:
            return ("AUROC undefined: no class has more than 2 correctly classified test "
                    "samples")
    if family == "binarity" and config.get("head.name") not in (None, *BINARY_CODE_HEADS):
        return (f"not computed for head {config.get('head.name')}: binarity is defined for "
                f"the linear codes ({', '.join(BINARY_CODE_HEADS)})")
    when_key = next((when for name, *_, when in SCORES if name == key), "")
    if when_key and str(config.get(when_key)) == "off":
        return f"not measured ({when_key}=off)"
    if key in summary:
        return "undefined (NaN)"
    return "not recorded in summary.json"


def _seed_note(reasons: list[tuple[Any, str]], seeds: int) -> str:
    """One sentence for the reasons of the seeds without a value."""
    if not reasons:
        return ""
    texts = list(dict.fromkeys(reason for _, reason in reasons))
    if len(reasons) == seeds:
        return texts[0] if len(texts) == 1 else "; ".join(
            f"seed {seed}: {reason}" for seed, reason in reasons)
    return "; ".join(f"seed {seed}: {reason}" for seed, reason in reasons)


# ----------------------------------------------------------------------------- figures


@dataclass
class Made:
    """A figure and how it is filed."""

    figure_id: str
    name: str  # file stem
    title: str
    fig: Any
    caption: str = ""


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
               log: Sequence[str] = ()) -> Made | None:
    panels = []
    for rest in metrics:
        lines = _panel_lines(variants, rest, with_split)
        if not with_split:
            lines = _merge_identical(lines, len(variants))
        if lines:
            name, ylabel = METRIC_TEXT.get(rest, (rest, rest))
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
                              if pattern.match(k) and not is_bookkeeping_count(k)))


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
    for rest, (name, unit, _) in zip(rests, FIELD_COLLAPSE.values(), strict=True):
        METRIC_TEXT.setdefault(rest, (name, unit))
    return curve_made(variants, "neural_collapse", "Neural collapse NC1–NC4 and CDNV over epochs",
                      rests, "Of x_pen with true labels (rhubarbwu/neural-collapse's "
                      "definitions): each falls towards 0 as collapse proceeds, NC4 rises to 1. "
                      "Solid: test, dashed: train.",
                      log=[r for r, (_, _, log) in zip(rests, FIELD_COLLAPSE.values(),
                                                       strict=True) if log])


def rank_made(variants: Sequence[Variant]) -> list[Made | None]:
    """Effective rank and intrinsic dimension: of x_pen over epochs, per layer over depth."""
    text = {"effective_rank/{layer}/erank": "effective rank exp H(σ/Σσ)",
            "effective_rank/{layer}/rankme": "RankMe",
            "intrinsic_dimension/{layer}/twonn": "intrinsic dimension (TwoNN)",
            "intrinsic_dimension/{layer}/mle": "intrinsic dimension (MLE, k = 20)"}
    rests = [key.format(layer=PENULTIMATE) for key in text]
    for rest, name in zip(rests, text.values(), strict=True):
        METRIC_TEXT.setdefault(rest, (f"{name} of x_pen", name))
    made: list[Made | None] = [curve_made(
        variants, "rank", "Effective rank and intrinsic dimension of x_pen over epochs", rests,
        "Roy & Vetterli's effective rank and RankMe (reptrix) of the centred features; TwoNN "
        "and the Levina–Bickel MLE (scikit-dimension) on a fixed subsample. Collapse drives the "
        "rank of x_pen towards K − 1. Solid: test, dashed: train.")]
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
    splits = [figures.Split(s, d["x"], d["labels"]) for s, d in data.items() if "labels" in d]
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


def compared_made(variants: Sequence[Variant], variant_axis: str) -> list[Made]:
    """The figures comparing every variant (mean ± std over seeds)."""
    scores, _ = scores_made(variants, variant_axis)
    made = [
        scores,
        roc_made(variants),
        curve_made(variants, "training", "Accuracy and loss over epochs",
                   ["accuracy", "loss"], "Solid: test, dashed: train (eval mode, no "
                   "augmentation)."),
        curve_made(variants, "schedule", "Schedules", ["lr", "gamma"],
                   "γ exists only for heads with the compression loss (bin_enc).",
                   with_split=False, log=("lr", "gamma")),
        curve_made(variants, "encoding", "Binary encoding over epochs", ENCODING_METRICS,
                   f"BE's binarity metrics (heads {', '.join(BINARY_CODE_HEADS)} only) and the "
                   "same-encoding fraction, at every evaluation."),
        collapse_made(variants),
        nc1_made(variants),
        hyperplanes_made(variants),
        field_collapse_made(variants),
        *rank_made(variants),
        *cka_made(variants),
        spectra_made(variants),
    ]
    return [m for m in made if m is not None]


# ----------------------------------------------------------------------------- HTML


CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 20px;max-width:1400px;
 color:#222;line-height:1.4}
h1{font-size:1.6em;overflow-wrap:anywhere} h2{margin-top:1.8em;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto;max-width:100%;margin:0.6em 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;
 max-width:24em}
th{background:#f3f3f3;position:sticky;top:0} tr.bad td{background:#fde8e8}
tr.busy td{background:#fff6dd} tr.selected td:first-child{font-weight:bold}
figure{margin:1.2em 0;max-width:100%} figure img{max-width:100%;height:auto;
 border:1px solid #eee;display:block}
figcaption{font-size:13px;color:#555;max-width:70em} figcaption a{color:#357}
.warn{color:#a05000} .note{color:#555;font-style:italic}
code{background:#f6f6f6;overflow-wrap:anywhere} nav{font-size:14px}
nav a{margin-right:0.8em;white-space:nowrap}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]],
           row_classes: Sequence[str] | None = None) -> str:
    # headers break after "/" and "_" (test/<wbr>accuracy), never inside a word
    head = "".join("<th>" + re.sub(r"([/_])", r"\1<wbr>", _esc(h)) + "</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _write(made: Made, files_dir: Path) -> FigureEntry:
    paths = figures.save_figure(made.fig, files_dir / made.name, FORMATS)
    return FigureEntry(made.figure_id, made.title,
                       [f"{files_dir.name}/{p.name}" for p in paths], made.caption)


def _figures_html(entries: Sequence[FigureEntry]) -> str:
    parts = []
    for entry in entries:
        links = " · ".join(f'<a href="{_esc(f)}">{_esc(Path(f).suffix[1:].upper())}</a>'
                           for f in entry.files)
        caption = f"<b>{_esc(entry.title)}</b>" + (f". {_esc(entry.caption)}"
                                                     if entry.caption else "")
        parts.append(
            f'<figure id="fig-{_esc(Path(entry.filename).stem)}" '
            f'data-figure="{_esc(entry.figure_id)}">'
            f'<img src="{_esc(entry.filename)}" alt="{_esc(entry.title)}">'
            f"<figcaption>{caption} <span>[{links}]</span></figcaption></figure>")
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n<h1>{_esc(title)}</h1>\n{body}\n</body></html>\n")


RUN_FACTS = ("model.name", "head.name", "head.penultimate_nodes", "head.dropout_penultimate",
             "dataset.name", "optimizer.name", "optimizer.lr", "trainer.seed", "trainer.epochs")


def _run_facts(run: RunDir) -> str:
    rows = [["state", run.state], ["reason", run.reason or ""], ["epoch", run.epoch]]
    config = run.flat_config()
    rows += [[key, config[key]] for key in RUN_FACTS if key in config]
    summary = run.summary() or {}
    for key in ("test/accuracy", "train/accuracy", "val/accuracy", "best/test/accuracy",
                "best_epoch", "convergence_epoch", "epochs"):
        if key in summary:
            rows.append([key, agg.format_number(summary[key])])
    return _table(["", str(run.dir)], rows)


def _aggregate_html(result: selection.AggregateResult) -> str:
    names = agg.metric_names(result)
    main = [n for n in dict.fromkeys([result.select, *selection.TABLE_COLUMNS,
                                      "test/binarity/score", "test/same_encoding_fraction",
                                      "test/collapse/within_class_variation",
                                      "test/mahalanobis/auroc_exact", "test/perturbation/score"])
            if n in names]
    header = ["variant", "repeats", "excluded runs", "best lr (seeds that chose it)", *main]
    rows = [[v.label, f"{len(v.selected)} of {len(v.seeds)}",
             f"{len(v.excluded_runs)} of {len(v.runs)}", lr_choices(v.selected),
             *[agg.format_stats(v.metrics.get(n)) for n in main]] for v in result.variants]
    per_seed = [[v.label, " ".join(f"{s.seed}:{agg.format_number(s.lr)}" for s in v.selected)
                 or "-"] for v in result.variants]
    full_rows = [[name, *[agg.format_stats(v.metrics.get(name)) for v in result.variants]]
                 for name in names]
    warnings = "".join(f'<p class="warn">warning: {_esc(w)}</p>' for w in result.warnings)
    return (f"<p>Best LR per seed by <code>{_esc(result.select)}</code>; mean ± population "
            f"std over seeds (n = seeds with a finite value). Variant keys: "
            f"<code>{_esc(', '.join(result.variant_keys) or 'none')}</code>.</p>{warnings}"
            f"{_table(header, rows)}<details><summary>the best lr of each seed</summary>"
            f"{_table(['variant', 'seed:lr'], per_seed)}</details>"
            f"<details><summary>every summary metric</summary>"
            f"{_table(['metric', *[v.label for v in result.variants]], full_rows)}</details>")


LR_CHOICES_SHOWN = 3  # the commonest selected LRs a cell names; the rest are counted


def lr_choices(selected: Sequence[selection.Selection]) -> str:
    """``0.001 (38/50 seeds), 0.003 (12/50 seeds)``: the selected LRs, commonest first (ties:
    the smaller LR), whatever the number of seeds."""
    if not selected:
        return "-"
    counts = Counter(selection.canonical(s.lr) for s in selected)
    lrs = {selection.canonical(s.lr): s.lr for s in selected}
    order = sorted(counts, key=lambda text: (-counts[text], selection.value_order(lrs[text])))
    shown = [f"{agg.format_number(lrs[text])} ({counts[text]}/{len(selected)} seeds)"
             for text in order[:LR_CHOICES_SHOWN]]
    if len(order) > LR_CHOICES_SHOWN:
        shown.append(f"{len(order) - LR_CHOICES_SHOWN} other LRs")
    return ", ".join(shown)


RUNS_SHOWN = 20  # a longer run table folds into a <details> under a line of state counts


def _runs_html(runs: Sequence[RunDir], select: str,
               result: selection.AggregateResult | None = None) -> str:
    selected = result.selected_runs() if result else set()
    rows, classes = [], []
    for run in runs:
        value = selection.selection_value(run, select)
        variant = result.run_variant[run.name] if result else ""
        reason = selection.exclusion_reason(run, select) or ""
        rows.append([run.name + (" *" if run.name in selected else ""), run.state, variant,
                     selection.seed_of(run), selection.lr_of(run), agg.format_number(value),
                     reason])
        classes.append("selected" if run.name in selected else
                       "" if run.state == "ok" else "busy" if run.state == "running" else "bad")
    table = _table(["run (* selected)", "state", "variant", "seed", "lr", select, "reason"],
                   rows, classes)
    if len(runs) <= RUNS_SHOWN:
        return table
    counts = Counter(run.state for run in runs)
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return (f"<p>{len(runs)} runs: {_esc(states)}; {len(selected)} selected.</p>"
            f"<details><summary>every run, its state and why it was not selected</summary>"
            f"{table}</details>")


SECTIONS = (  # (heading, anchor, figure ids) of the compared figures, in page order
    ("Final-epoch scores", "scores", ("scores", "roc")),
    ("Training", "training", ("training", "schedule")),
    ("Binary encoding", "encoding", ("encoding",)),
    ("Collapse and NC1", "collapse", ("collapse", "nc1")),
    ("Hyperplanes", "hyperplanes", ("hyperplanes",)),
    ("Field geometry", "field", ("neural_collapse", "rank", "effective_rank_erank_depth",
                                 "effective_rank_rankme_depth", "intrinsic_dimension_twonn_depth",
                                 "intrinsic_dimension_mle_depth", "cka", "cka_init",
                                 "weight_spectra")),
)


def figures_body(variants: Sequence[Variant], files_dir: Path, variant_axis: str,
                 sweep: bool) -> tuple[str, list[tuple[str, str]]]:
    """The figure sections (compared figures, then each variant's own); returns the HTML and
    the (anchor, heading) list of the sections written."""
    compared = {m.figure_id: _write(m, files_dir) for m in compared_made(variants, variant_axis)}
    parts, nav = [], []
    for heading, anchor, ids in SECTIONS:
        entries = [compared[i] for i in ids if i in compared]
        empty = training_gap(variants) if anchor == "training" and not entries else None
        if entries or empty:  # Training stays, saying why it is empty
            nav.append((anchor, heading))
            note = f'<p class="warn">{_esc(empty)}</p>' if empty else ""
            parts.append(f'<h2 id="{anchor}">{_esc(heading)}</h2>{note}'
                         f"{_figures_html(entries)}")
    for variant in variants:
        made, notes = run_level_made(variant, f"_{variant.slug}" if variant.slug else "")
        entries = [_write(m, files_dir) for m in made]
        anchor = f"variant-{variant.slug}" if variant.slug else "run-figures"
        heading = (f"{variant.label}: the code and the run's own figures" if sweep
                   else "The code and the run's own figures")
        seed = variant.seeds[0] if variant.seeds else None
        lr = agg.format_number(variant.lrs[0]) if variant.lrs else "-"
        intro = (f"<p>Representative run <code>{_esc(variant.representative.name)}</code> "
                 f"(seed {_esc(seed)}, lr {_esc(lr)}): the selected run of the lowest "
                 "seed.</p>" if sweep else "")
        notes_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
        if entries or notes:
            nav.append((anchor, variant.label if sweep else "the code"))
            parts.append(f'<h2 id="{anchor}">{_esc(heading)}</h2>{intro}{notes_html}'
                         f"{_figures_html(entries)}")
    if not compared and not any("<figure" in p for p in parts):
        parts.append("<p>No figure: none of the data they need exist.</p>")
    return "\n".join(parts), nav


def training_gap(variants: Sequence[Variant]) -> str:
    """Why there are no training curves: each shown run's metrics.jsonl is missing, holds no
    readable event, or no accuracy or loss."""
    why = []
    for run in (run for variant in variants for run in variant.runs):
        if not run.artifact("metrics").is_file():
            why.append(f"{run.name}: no metrics.jsonl")
        elif not run.events():
            why.append(f"{run.name}: metrics.jsonl holds no readable event")
        else:
            why.append(f"{run.name}: metrics.jsonl has no accuracy or loss")
    return "No training curves: " + ("; ".join(why) if why else "no run to show") + "."


def _nav(items: Sequence[tuple[str, str]]) -> str:
    links = "".join(f'<a href="#{_esc(a)}">{_esc(h)}</a>' for a, h in items)
    return f"<nav>{links}</nav>" if links else ""


def run_report_body(run_dir: Path, files_dir: Path) -> str:
    run = RunDir(run_dir)
    variant = run_variant(run)
    body, nav = figures_body([variant], files_dir, "run", sweep=False)
    return f"{_nav([('run', 'run'), *nav])}<h2 id=\"run\">Run</h2>{_run_facts(run)}\n{body}"


def sweep_report_body(sweep_dir: Path, files_dir: Path, select: str) -> str:
    runs = selection.sweep_runs(sweep_dir)
    try:
        result = selection.aggregate(runs, select=select, sweep_dir=sweep_dir)
    except KeyError as error:  # nothing selectable yet (all running or failed): still list runs
        return (f'<p class="warn">No aggregate: {_esc(error.args[0])}</p>'
                f"<h2>Runs</h2>{_runs_html(runs, select)}")
    by_name = {run.name: run for run in runs}
    variants = sweep_variants(result, by_name)
    axis = ", ".join(result.variant_keys) or "variant"
    body, nav = figures_body(variants, files_dir, axis, sweep=True)
    unusable = "".join(f"<p class=\"warn\">{_esc(v.label)}: no usable run.</p>"
                       for v in result.variants if not v.selected)
    return (f"{_nav([('aggregate', 'aggregate'), ('runs', 'runs'), *nav])}"
            f'<h2 id="aggregate">Aggregate</h2>{_aggregate_html(result)}{unusable}'
            f'<h2 id="runs">Runs</h2>{_runs_html(runs, select, result)}\n{body}')


def build_report(path: str | Path, out: str | Path | None = None,
                 select: str = selection.DEFAULT_SELECT) -> Path:
    """Write the report of a run dir or sweep dir; return the HTML path (default
    ``<path>/report.html``, figures in ``report_files/`` beside it)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    out = Path(out) if out else path / "report.html"
    files_dir = out.parent / f"{out.stem}_files"
    files_dir.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:  # a figure whose data disappeared must not linger
        for stale in files_dir.glob(f"*.{fmt}"):
            stale.unlink()
    if is_run_dir(path):
        title, body = f"latentgeo run {path.resolve().name}", run_report_body(path, files_dir)
    else:
        title = f"latentgeo sweep {path.resolve().name}"
        body = sweep_report_body(path, files_dir, select)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(_page(title, body), encoding="utf-8")
    tmp.replace(out)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.report",
        description="Write a static report.html (figures as PNG and SVG in report_files/) for "
                    "a run dir or a sweep dir. Each figure appears only when its data exist.",
        epilog="figures and the data each needs:\n\n" + (__doc__ or "")[
            (__doc__ or "=").index("="):],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="a run dir or a sweep dir")
    parser.add_argument("--out", type=Path, help="HTML file to write (default PATH/report.html)")
    parser.add_argument("--select", default=selection.DEFAULT_SELECT, metavar="METRIC",
                        help="sweep only: summary key for the best-LR selection "
                             "(test/accuracy or val/accuracy)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = build_report(args.path, args.out, args.select)
    except (FileNotFoundError, KeyError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"error: {write_problem(error, Path(args.path))}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
