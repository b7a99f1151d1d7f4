"""BE's selection rule over a sweep: every run, the best LR per (variant, repeat), mean ± std
over repeats (``aggregate(runs)`` -> ``AggregateResult``; ``python -m latentgeo.aggregate``
writes and prints it, the report draws it). Reads the run dirs through ``latentgeo.records``
only; wandb is never needed. Definitions:

- **run**: a sub-directory of the sweep dir holding ``config.yaml`` or ``status.json`` (Hydra's
  ``<sweep_dir>/<job_num>/``). A run dir given directly is a sweep of one.
- **variant**: the flattened config keys whose values differ across the sweep's runs, minus the
  LR key, the seed key and bookkeeping keys (see ``defines_no_variant``), minus keys that are a
  one-to-one alias of the LR or the seed (e.g. ``schedule.max_lr: ${optimizer.lr}``).
  ``--group-by`` replaces the variant keys.
- **repeat**: the seed (``trainer.seed``).
- **selection** (BE §1.6, ``find_best_results.py``): for every (variant, repeat) the ok run with
  the highest selection metric (default final ``test/accuracy``) among its LRs; ties go to the
  smaller LR, then to the earlier job. Runs that are not ok (failed, running, no status) are
  listed but never selected.
- **aggregate**: for every numeric summary metric, mean and *population* std (``ddof=0``, what
  BE's ``np.std`` plots show) over the selected runs of a variant; ``n`` counts the repeats with
  a finite value (``null``/NaN values are left out, not counted as 0).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from latentgeo.config import OPTION_KEYS, is_bookkeeping
from latentgeo.records import RunDir, find_runs
from latentgeo.results_cache import warm

LR_KEY = "optimizer.lr"
SEED_KEY = "trainer.seed"
DEFAULT_SELECT = "test/accuracy"

# Keys that never define a variant: the run's bookkeeping (``config.BOOKKEEPING``: how it is
# resumed, displayed, logged, which device), its readable name (it may embed the LR / seed),
# Hydra's own keys and where things are read or written.
DISPLAY_KEYS = ("name",)
NON_VARIANT_PREFIXES = ("hydra.",)
NON_VARIANT_WORDS = ("dir", "path", "root")  # any key component containing one of these

MISSING = "<missing>"  # value of a key that a run's config lacks
STATES_OK = "ok"

TABLE_COLUMNS = ("test/accuracy", "train/accuracy", "best/test/accuracy", "convergence_epoch")
# the latent-geometry scores aggregate.csv carries beside TABLE_COLUMNS (when the runs have them)
SCORE_COLUMNS = ("test/binarity/score", "test/same_encoding_fraction",
                 "test/mahalanobis/auroc_exact", "test/perturbation/score")


def defines_no_variant(key: str) -> bool:
    """True for a flattened config key that is never part of a variant: bookkeeping
    (``config.is_bookkeeping``), the display name, Hydra's keys, paths."""
    if is_bookkeeping(key) or key in DISPLAY_KEYS or key.startswith(NON_VARIANT_PREFIXES):
        return True
    return any(word in part for part in key.lower().split(".") for word in NON_VARIANT_WORDS)


@dataclass
class Selection:
    """The run chosen for one (variant, repeat)."""

    variant: str
    seed: Any
    run: str
    lr: Any
    value: float
    candidates: int  # usable runs (LRs) compared
    missing_lrs: list[Any]  # sweep LRs without a usable run for this (variant, repeat)


@dataclass
class VariantResult:
    label: str
    variant: dict[str, Any]
    runs: list[str]
    excluded_runs: dict[str, str]  # run -> "state: reason", for runs that cannot be selected
    seeds: list[Any]
    missing_seeds: list[Any]  # repeats with no usable run at all
    selected: list[Selection]
    metrics: dict[str, dict[str, Any]]  # name -> {"mean", "std", "n", "values"}


@dataclass
class AggregateResult:
    sweep_dir: str
    select: str
    variant_keys: list[str]
    lr_key: str
    seed_key: str
    excluded_keys: dict[str, str]  # differing keys not used as variant keys -> why
    runs: list[RunDir]
    run_variant: dict[str, str]  # run name -> variant label
    variants: list[VariantResult]
    warnings: list[str] = field(default_factory=list)
    std: str = "population (ddof=0), as numpy.std in BE's plots"
    table: pd.DataFrame | None = field(default=None, repr=False, compare=False)  # run_table

    def selected_runs(self) -> set[str]:
        return {s.run for v in self.variants for s in v.selected}


# ----------------------------------------------------------------------------- reading


def lr_of(run: RunDir, lr_key: str = LR_KEY) -> Any:
    return run.flat_config().get(lr_key)


def seed_of(run: RunDir, seed_key: str = SEED_KEY) -> Any:
    return run.flat_config().get(seed_key)


def sweep_runs(sweep_dir: str | Path, cached: bool = True) -> list[RunDir]:
    """Every run of a sweep dir (or the run dir itself), in job order, whatever its state;
    ``cached``: unchanged runs' records from the cache (``results_cache.warm``)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {sweep_dir} does not exist")
    runs = find_runs(sweep_dir)
    if cached:
        warm(runs, sweep_dir)
    return runs


def canonical(value: Any) -> str:
    """A hashable, order-stable text for config values (lists, None, floats)."""
    if value is None or isinstance(value, (str, int)) or (
            isinstance(value, float) and value == value and value != 0):  # -0.0 == 0.0, NaN
        return _canonical_scalar(value)
    return json.dumps(value, sort_keys=True, default=str)


@functools.lru_cache(maxsize=65536, typed=True)  # a sweep's configs repeat most values
def _canonical_scalar(value: Any) -> str:
    return json.dumps(value)


def finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def selection_value(run: RunDir, metric: str) -> float | None:
    """The run's finite selection value, or None when the run cannot be selected."""
    if run.state != STATES_OK or run.summary() is None or not run.flat_config():
        return None  # without a config the run has no variant, LR or seed
    return finite_number(run.summary().get(metric))


def exclusion_reason(run: RunDir, select: str) -> str | None:
    """Why a run cannot be selected (None when it can): its reason, epoch or missing metric."""
    if selection_value(run, select) is not None:
        return None
    if run.reason:
        return run.reason
    if run.state == STATES_OK:
        return f"no finite {select} in summary.json"
    return f"at epoch {run.epoch}" if run.epoch is not None else "no reason given"


def value_order(value: Any) -> tuple[int, float | str]:
    """Sort key for LRs and seeds: numbers numerically, anything else after them by its text."""
    number = finite_number(value)
    return (0, number) if number is not None else (1, canonical(value))


def mean_std(values: Iterable[Any]) -> dict[str, Any]:
    """Mean and population std (ddof=0) of the finite values; None for both when there are none."""
    finite = pd.Series([finite_number(v) for v in values], dtype=float).dropna()
    if finite.empty:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std(ddof=0)), "n": len(finite)}


# ----------------------------------------------------------------------------- grouping


def _is_alias(texts: pd.DataFrame, key: str, of_key: str) -> bool:
    """True when ``key`` and ``of_key`` determine each other across the runs (a renamed copy)."""
    if of_key not in texts or key not in texts:
        return False
    pairs = len(texts[[key, of_key]].drop_duplicates())
    return pairs == texts[key].nunique() == texts[of_key].nunique() > 1


def _set_by_option(texts: pd.DataFrame, key: str) -> str | None:
    """The ``<group>.name`` key that fixes ``key`` when ``key`` is one a group's options set
    (``config.OPTION_KEYS``: ``model.widths`` is the MLP's and null for the others) and each
    option of the sweep has one value of it; else None."""
    group, _, leaf = key.partition(".")
    name_key = f"{group}.name"
    if leaf not in OPTION_KEYS.get(group, ()) or name_key not in texts:
        return None
    return name_key if texts.groupby(name_key)[key].nunique().max() == 1 else None


def variant_keys(
    runs: Sequence[RunDir], lr_key: str = LR_KEY, seed_key: str = SEED_KEY
) -> tuple[list[str], dict[str, str]]:
    """Config keys that differ across the runs and define variants, and the differing keys left
    out with the reason (lr, seed, bookkeeping, alias of lr/seed, set by an option)."""
    texts = pd.DataFrame([{k: canonical(v) for k, v in run.flat_config().items()}
                          for run in runs if run.flat_config()], dtype=object)
    texts = texts.fillna(canonical(MISSING))  # a key some configs lack
    keys: list[str] = []
    excluded: dict[str, str] = {}
    for key in sorted(texts.columns[texts.nunique() > 1]):
        if key == lr_key:
            excluded[key] = "learning rate (selected per repeat)"
        elif key == seed_key:
            excluded[key] = "seed (the repeat)"
        elif defines_no_variant(key):
            excluded[key] = "bookkeeping"
        elif _is_alias(texts, key, lr_key):
            excluded[key] = f"follows {lr_key} one-to-one"
        elif _is_alias(texts, key, seed_key):
            excluded[key] = f"follows {seed_key} one-to-one"
        elif (name_key := _set_by_option(texts, key)) is not None:
            excluded[key] = f"set by {name_key}'s option"
        else:
            keys.append(key)
    return keys, excluded


def variant_label(config: dict[str, Any], keys: Sequence[str]) -> str:
    """``head.name=bin_enc,head.dropout_penultimate=true``; ``all`` when there are no keys."""
    if not keys:
        return "all"
    values = (config.get(key, MISSING) for key in keys)
    return ",".join(f"{key}={v if isinstance(v, str) else canonical(v)}"
                    for key, v in zip(keys, values))


RUN_FIELDS = ["run", "run_dir", "state", "reason", "epoch", "variant", "seed", "lr",
              "select_value", "excluded_reason", "has_config"]


def run_table(runs: Sequence[RunDir], select: str = DEFAULT_SELECT, keys: Sequence[str] = (),
              lr_key: str = LR_KEY, seed_key: str = SEED_KEY) -> pd.DataFrame:
    """One row per run in job order, as plain Python values (``RUN_FIELDS``): its state,
    variant, seed, LR, selection value (None when it cannot be selected) and why not."""
    return pd.DataFrame([{
        "run": run.name, "run_dir": str(run.dir), "state": run.state, "reason": run.reason,
        "epoch": run.epoch, "variant": variant_label(run.flat_config(), keys),
        "seed": seed_of(run, seed_key), "lr": lr_of(run, lr_key),
        "select_value": selection_value(run, select),
        "excluded_reason": exclusion_reason(run, select), "has_config": bool(run.flat_config()),
    } for run in runs], columns=RUN_FIELDS, dtype=object)


def result_table(result: AggregateResult) -> pd.DataFrame:
    if result.table is None:
        result.table = run_table(result.runs, result.select, result.variant_keys,
                                 result.lr_key, result.seed_key)
    return result.table


def _select(table: pd.DataFrame) -> list[Selection]:
    """BE's rule on a ``run_table``: per (variant, seed) the usable run with the highest value;
    ties → smaller LR (``value_order``), then the earlier job. In the order of first jobs."""
    table = table.assign(seed_text=table.seed.map(canonical), lr_text=table.lr.map(canonical),
                         value=table.select_value.astype(float), job=range(len(table)))
    lrs = sorted(table.lr_text[table.has_config.astype(bool)].unique(),
                 key=lambda text: value_order(json.loads(text)))
    table["lr_rank"] = table.lr_text.map({text: rank for rank, text in enumerate(lrs)})
    group = ["variant", "seed_text"]
    table["first_job"] = table.groupby(group).job.transform("min")
    usable = table[table.value.notna()]
    tried = usable.groupby(group).lr_text
    lrs_tried, candidates = tried.agg(set), tried.size()
    best = (usable.sort_values(["value", "lr_rank", "job"], ascending=[False, True, True])
            .drop_duplicates(group).sort_values("first_job"))
    return [Selection(
        variant=row.variant, seed=row.seed, run=row.run, lr=row.lr, value=float(row.value),
        candidates=int(candidates[row.variant, row.seed_text]),
        missing_lrs=[json.loads(lr) for lr in lrs
                     if lr not in lrs_tried[row.variant, row.seed_text]],
    ) for row in best.itertuples()]


def _variant_metrics(selections: Sequence[Selection], by_name: dict[str, RunDir]
                     ) -> dict[str, dict[str, dict[str, Any]]]:
    """variant -> summary metric -> mean, population std and n over the selected runs, and their
    values (None where a run has no finite value). Lists and strings are not averaged."""
    long = pd.DataFrame([
        (s.variant, pick, key, finite_number(value)) for pick, s in enumerate(selections)
        for key, value in (by_name[s.run].summary() or {}).items()
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    ], columns=["variant", "pick", "metric", "value"]).astype({"value": float})
    values = long.pivot(index="pick", columns="metric", values="value")  # pick: a selection
    grouped = values.groupby(pd.Series([s.variant for s in selections]), sort=False)
    mean, std, n = grouped.mean(), grouped.std(ddof=0), grouped.count()
    return {variant: {metric: {
        "mean": finite_number(mean.at[variant, metric]),
        "std": finite_number(std.at[variant, metric]),
        "n": int(n.at[variant, metric]), "values": [finite_number(v) for v in rows[metric]],
    } for metric in sorted(set(long.metric[long.variant == variant]))}
        for variant, rows in grouped}


def aggregate(
    runs: Sequence[RunDir],
    select: str = DEFAULT_SELECT,
    group_by: Sequence[str] | None = None,
    lr_key: str = LR_KEY,
    seed_key: str = SEED_KEY,
    sweep_dir: str | Path = "",
) -> AggregateResult:
    """Group runs into variants, select the best LR per repeat, average every summary metric."""
    runs = list(runs)
    keys, excluded = variant_keys(runs, lr_key, seed_key)
    if group_by:
        known = {key for run in runs for key in run.flat_config()}
        unknown = [key for key in group_by if key not in known]
        if unknown:
            close = sorted(k for k in known if any(u.split(".")[-1] in k for u in unknown))
            raise KeyError(f"--group-by {unknown} not in any run's config.yaml; "
                           f"similar keys: {close[:10] or 'none'}")
        excluded = {**{k: "not in --group-by (pooled)" for k in keys if k not in group_by},
                    **{k: why for k, why in excluded.items() if k not in group_by}}
        keys = list(group_by)
    warnings = [f"{key} differs across runs but {why}, so it is not a variant key "
                "(--group-by overrides)"
                for key, why in excluded.items() if why.startswith("follows")]
    table = run_table(runs, select, keys, lr_key, seed_key)
    if table.select_value.isna().all():
        available = sorted({k for r in runs if r.summary() for k in r.summary()})
        raise KeyError(f"--select {select!r}: no ok run has a finite value for it in summary.json; "
                       f"summary keys: {available[:30] or 'none (no ok run with summary.json)'}")
    if select.startswith(("test/", "best/test/")):
        has_val = any(finite_number((r.summary() or {}).get("val/accuracy")) is not None
                      for r in runs)
        hint = ("these runs have a validation split: use --select val/accuracy"
                if has_val else "no run has val/accuracy (no validation split to select on)")
        warnings.append(f"selecting the LR on {select} (BE's rule) uses the test set for model "
                        f"selection, so the reported test numbers are optimistic; {hint}")

    selections = _select(table)
    by_name = {run.name: run for run in runs}
    metrics = _variant_metrics(selections, by_name)
    variants = []
    for label, members in table.groupby("variant", sort=False):  # first-appearance (job) order
        chosen = [s for s in selections if s.variant == label]
        configured = members[members.has_config.astype(bool)]
        seeds = list(dict(zip(configured.seed.map(canonical), configured.seed)).values())
        chosen_seeds = {canonical(s.seed) for s in chosen}
        unusable = members[members.select_value.isna()]
        variants.append(VariantResult(
            label=label, variant={k: by_name[members.run.iloc[0]].flat_config().get(k, MISSING)
                                  for k in keys},
            runs=list(members.run), excluded_runs=dict(zip(
                unusable.run, unusable.state + ": " + unusable.excluded_reason)),
            seeds=seeds, missing_seeds=[s for s in seeds if canonical(s) not in chosen_seeds],
            selected=chosen, metrics=metrics.get(label, {}),
        ))
        if len(unusable):
            warnings.append(f"variant {label}: {len(unusable)} of {len(members)} runs excluded "
                            f"from selection ({', '.join(sorted(set(unusable.state)))})")
    return AggregateResult(
        sweep_dir=str(sweep_dir), select=select, variant_keys=keys, lr_key=lr_key,
        seed_key=seed_key, excluded_keys=excluded, runs=runs,
        run_variant=dict(zip(table.run, table.variant)), variants=variants, warnings=warnings,
        table=table,
    )
