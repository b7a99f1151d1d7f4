"""What the report compares and reads: the variants of a sweep (or the run of a run report)
with their selected runs, each run's curves from its history (mean ± std over runs), its
penultimate features, and why a final score has no value. ``Made`` is what each figure
function returns: a figure and how it is filed.
"""

from __future__ import annotations

import functools
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentgeo import figures, selection
from latentgeo.families.latent import BINARY_CODE_HEADS
from latentgeo.records import RunDir
from latentgeo.results_cache import history_table

SPLITS = ("train", "val", "test")
DEPTH_EPOCHS = 4  # epochs drawn in the depth profiles: first (init), evenly spaced, final

# epoch -> (mean, std); std is None for a single run
Curve = dict[int, tuple[float, float | None]]

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


def is_sample_count(key: str) -> bool:
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
