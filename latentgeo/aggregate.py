"""Sweep table: list every run, pick the best LR per (variant, repeat), mean ± std over repeats.

    python -m latentgeo.aggregate SWEEP_DIR [--select test/accuracy|val/accuracy]
                                            [--group-by KEY ...]

Reads the run dirs through ``latentgeo.records`` only; wandb is never needed. Definitions:

- **run**: a sub-directory of the sweep dir holding ``config.yaml`` or ``status.json`` (Hydra's
  ``<sweep_dir>/<job_num>/``). A run dir given directly is a sweep of one.
- **variant**: the flattened config keys whose values differ across the sweep's runs, minus the
  LR key, the seed key and bookkeeping keys (see ``is_bookkeeping_key``), minus keys that are a
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

Writes ``aggregate.csv`` (per variant: keys, counts, selected LRs, mean/std/n of the chosen
metrics), ``aggregate.json`` (everything) and ``latentgeo.results``'s ``runs.csv`` and
``history.csv`` (not with ``--no-history``) beside the sweep (or into ``--out``). Runs are read
through ``latentgeo.results_cache``: unchanged runs come from the cache, and the same command
over unchanged runs, arguments and outputs prints again what it printed (stdout, then stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from latentgeo.config import BOOKKEEPING, is_bookkeeping
from latentgeo.records import (
    DISK_FULL,
    RunDir,
    atomic_write_text,
    find_runs,
    jsonable,
    write_problem,
)
from latentgeo.results import cached_history, history_csv, runs_frame
from latentgeo.results_cache import Tee, command_key, remember, replay, warm
from latentgeo.tracking import log_table, sweep_wandb_settings

LR_KEY = "optimizer.lr"
SEED_KEY = "trainer.seed"
DEFAULT_SELECT = "test/accuracy"

# Keys that never define a variant: the run's bookkeeping (``config.BOOKKEEPING``: how it is
# resumed, displayed, logged, which device), its readable name (it may embed the LR / seed),
# Hydra's own keys and where things are read or written.
DISPLAY_KEYS = ("name",)
BOOKKEEPING_PREFIXES = ("hydra.",)
BOOKKEEPING_WORDS = ("dir", "path", "root")  # any key component containing one of these

MISSING = "<missing>"  # value of a key that a run's config lacks
STATES_OK = "ok"

TABLE_COLUMNS = ("test/accuracy", "train/accuracy", "best/test/accuracy", "convergence_epoch")
# the latent-geometry scores aggregate.csv carries beside TABLE_COLUMNS (when the runs have them)
SCORE_COLUMNS = ("test/binarity/score", "test/same_encoding_fraction",
                 "test/mahalanobis/auroc_exact", "test/perturbation/score")


def is_bookkeeping_key(key: str) -> bool:
    """True for flattened config keys that are bookkeeping, never part of a variant."""
    if is_bookkeeping(key) or key in DISPLAY_KEYS or key.startswith(BOOKKEEPING_PREFIXES):
        return True
    return any(word in part for part in key.lower().split(".") for word in BOOKKEEPING_WORDS)


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


def load_runs(sweep_dir: str | Path, cached: bool = True) -> list[RunDir]:
    """Every run of a sweep dir (or the run dir itself), in job order, whatever its state;
    ``cached``: unchanged runs' records from the cache (``results_cache.warm``)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {sweep_dir} does not exist")
    runs = find_runs(sweep_dir)
    if cached:
        warm(runs, sweep_dir)
    return runs


def _canonical(value: Any) -> str:
    """A hashable, order-stable text for config values (lists, None, floats)."""
    if value is None or isinstance(value, (str, int)) or (
            isinstance(value, float) and value == value and value != 0):  # -0.0 == 0.0, NaN
        return _canonical_scalar(value)
    return json.dumps(value, sort_keys=True, default=str)


@functools.lru_cache(maxsize=65536, typed=True)  # a sweep's configs repeat most values
def _canonical_scalar(value: Any) -> str:
    return json.dumps(value)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def selection_value(run: RunDir, metric: str) -> float | None:
    """The run's finite selection value, or None when the run cannot be selected."""
    if run.state != STATES_OK or run.summary() is None or not run.flat_config():
        return None  # without a config the run has no variant, LR or seed
    return _finite(run.summary().get(metric))


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
    number = _finite(value)
    return (0, number) if number is not None else (1, _canonical(value))


def mean_std(values: Iterable[Any]) -> dict[str, Any]:
    """Mean and population std (ddof=0) of the finite values; None for both when there are none."""
    finite = pd.Series([_finite(v) for v in values], dtype=float).dropna()
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


def variant_keys(
    runs: Sequence[RunDir], lr_key: str = LR_KEY, seed_key: str = SEED_KEY
) -> tuple[list[str], dict[str, str]]:
    """Config keys that differ across the runs and define variants, and the differing keys left
    out with the reason (lr, seed, bookkeeping, alias of lr/seed)."""
    texts = pd.DataFrame([{k: _canonical(v) for k, v in run.flat_config().items()}
                          for run in runs if run.flat_config()], dtype=object)
    texts = texts.fillna(_canonical(MISSING))  # a key some configs lack
    keys: list[str] = []
    excluded: dict[str, str] = {}
    for key in sorted(texts.columns[texts.nunique() > 1]):
        if key == lr_key:
            excluded[key] = "learning rate (selected per repeat)"
        elif key == seed_key:
            excluded[key] = "seed (the repeat)"
        elif is_bookkeeping_key(key):
            excluded[key] = "bookkeeping"
        elif _is_alias(texts, key, lr_key):
            excluded[key] = f"follows {lr_key} one-to-one"
        elif _is_alias(texts, key, seed_key):
            excluded[key] = f"follows {seed_key} one-to-one"
        else:
            keys.append(key)
    return keys, excluded


def variant_label(config: dict[str, Any], keys: Sequence[str]) -> str:
    """``head.name=bin_enc,head.dropout_penultimate=true``; ``all`` when there are no keys."""
    if not keys:
        return "all"
    values = (config.get(key, MISSING) for key in keys)
    return ",".join(f"{key}={v if isinstance(v, str) else _canonical(v)}"
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


def _table(result: AggregateResult) -> pd.DataFrame:
    if result.table is None:
        result.table = run_table(result.runs, result.select, result.variant_keys,
                                 result.lr_key, result.seed_key)
    return result.table


def _select(table: pd.DataFrame) -> list[Selection]:
    """BE's rule on a ``run_table``: per (variant, seed) the usable run with the highest value;
    ties → smaller LR (``value_order``), then the earlier job. In the order of first jobs."""
    table = table.assign(seed_text=table.seed.map(_canonical), lr_text=table.lr.map(_canonical),
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
        (s.variant, pick, key, _finite(value)) for pick, s in enumerate(selections)
        for key, value in (by_name[s.run].summary() or {}).items()
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    ], columns=["variant", "pick", "metric", "value"]).astype({"value": float})
    values = long.pivot(index="pick", columns="metric", values="value")  # pick: a selection
    grouped = values.groupby(pd.Series([s.variant for s in selections]), sort=False)
    mean, std, n = grouped.mean(), grouped.std(ddof=0), grouped.count()
    return {variant: {metric: {
        "mean": _finite(mean.at[variant, metric]), "std": _finite(std.at[variant, metric]),
        "n": int(n.at[variant, metric]), "values": [_finite(v) for v in rows[metric]],
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
        has_val = any(_finite((r.summary() or {}).get("val/accuracy")) is not None for r in runs)
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
        seeds = list(dict(zip(configured.seed.map(_canonical), configured.seed)).values())
        chosen_seeds = {_canonical(s.seed) for s in chosen}
        unusable = members[members.select_value.isna()]
        variants.append(VariantResult(
            label=label, variant={k: by_name[members.run.iloc[0]].flat_config().get(k, MISSING)
                                  for k in keys},
            runs=list(members.run), excluded_runs=dict(zip(
                unusable.run, unusable.state + ": " + unusable.excluded_reason)),
            seeds=seeds, missing_seeds=[s for s in seeds if _canonical(s) not in chosen_seeds],
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


# ----------------------------------------------------------------------------- output


def metric_names(result: AggregateResult) -> list[str]:
    """All aggregated metric names, the selection metric first."""
    names = sorted({name for v in result.variants for name in v.metrics})
    return sorted(names, key=lambda name: name != result.select)


def to_json(result: AggregateResult) -> dict[str, Any]:
    table = _table(result)
    runs = table.drop(columns="has_config").assign(
        selected=table.run.isin(result.selected_runs())).to_dict("records")
    variants = [{
        "label": v.label, "variant": v.variant, "runs": v.runs, "n_runs": len(v.runs),
        "excluded_runs": v.excluded_runs, "n_excluded": len(v.excluded_runs), "seeds": v.seeds,
        "missing_seeds": v.missing_seeds, "n_repeats": len(v.selected),
        "selected": [s.__dict__ for s in v.selected], "metrics": v.metrics,
    } for v in result.variants]
    return jsonable({
        "sweep_dir": result.sweep_dir, "select": result.select, "std": result.std,
        "lr_key": result.lr_key, "seed_key": result.seed_key,
        "variant_keys": result.variant_keys, "excluded_keys": result.excluded_keys,
        "warnings": result.warnings, "runs": runs, "variants": variants,
    })


def table_frame(result: AggregateResult) -> pd.DataFrame:
    """aggregate.csv: one row per variant with its keys, counts, the selected LR per seed, then
    ``<metric>:mean``, ``<metric>:std`` (population), ``<metric>:n`` of the selection metric,
    TABLE_COLUMNS and SCORE_COLUMNS (those the runs have)."""
    present = set(metric_names(result))
    names = [n for n in dict.fromkeys([result.select, *TABLE_COLUMNS, *SCORE_COLUMNS])
             if n in present]
    empty = {"mean": None, "std": None, "n": 0}
    rows = [{
        "variant": v.label, **v.variant, "n_repeats": len(v.selected), "n_runs": len(v.runs),
        "n_excluded": len(v.excluded_runs),
        "missing_seeds": ";".join(str(s) for s in v.missing_seeds),
        "selected": ";".join(f"seed={s.seed}:lr={s.lr}:run={s.run}" for s in v.selected),
        **{f"{name}:{stat}": v.metrics.get(name, empty)[stat]
           for name in names for stat in ("mean", "std", "n")},
    } for v in result.variants]
    return pd.DataFrame(rows, dtype=object)


HISTORY_CHUNK = 20  # runs per piece of history.csv: memory stays bounded at any sweep size


def write_history_csv(runs: Sequence[RunDir], root: str | Path, path: Path) -> None:
    """history.csv (``results.load_history``'s rows), written a few runs at a time from the
    columnar cache, then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            for start in range(0, max(len(runs), 1), HISTORY_CHUNK):
                chunk = cached_history(runs[start:start + HISTORY_CHUNK], root)
                f.write(history_csv(chunk, header=start == 0))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_outputs(result: AggregateResult, out_dir: str | Path, history: bool = True
                  ) -> tuple[Path, Path]:
    """Write aggregate.csv, aggregate.json, runs.csv and (``history``) history.csv into
    ``out_dir``; return the paths of the first two."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"aggregate.csv": table_frame(result), "runs.csv": runs_frame(result.runs)}
    for name, table in tables.items():
        atomic_write_text(out_dir / name, table.to_csv(index=False))
    if history:
        write_history_csv(result.runs, result.sweep_dir or out_dir, out_dir / "history.csv")
    atomic_write_text(out_dir / "aggregate.json",
                      json.dumps(to_json(result), indent=2, allow_nan=False) + "\n")
    return out_dir / "aggregate.csv", out_dir / "aggregate.json"


def format_number(value: Any) -> str:
    number = _finite(value)
    if number is None or isinstance(value, int):
        return "-" if value is None else str(value)
    return f"{number:.4g}"


def format_stats(stats: dict[str, Any] | None) -> str:
    if not stats or stats["n"] == 0:
        return "-"
    return f"{format_number(stats['mean'])} ± {format_number(stats['std'])} (n={stats['n']})"


def _text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def format_runs(result: AggregateResult) -> str:
    """Every run, selected ones marked ``*``, with its state and the reason it is not usable."""
    selected = result.selected_runs()
    rows = [[("* " if r.run in selected else "  ") + r.run, r.state, r.variant,
             format_number(r.seed), format_number(r.lr), format_number(r.select_value),
             r.excluded_reason or r.reason or ""] for r in _table(result).itertuples()]
    return _text_table(["run", "state", "variant", "seed", "lr", result.select, "reason"], rows)


def format_table(result: AggregateResult, columns: Sequence[str] | None = None) -> str:
    """Per variant: repeats, unusable runs, selected LRs and mean ± std of chosen metrics."""
    present = set(metric_names(result))
    wanted = [n for n in dict.fromkeys([result.select, *(columns or TABLE_COLUMNS)])
              if n in present]
    rows = [[v.label, f"{len(v.selected)} of {len(v.seeds)}",
             f"{len(v.excluded_runs)} of {len(v.runs)}",
             " ".join(f"{format_number(s.seed)}:{format_number(s.lr)}" for s in v.selected)
             or "-", *[format_stats(v.metrics.get(name)) for name in wanted]]
            for v in result.variants]
    return _text_table(["variant", "repeats", "excluded runs", "best lr (seed:lr)", *wanted],
                       rows)


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.aggregate",
        description=(
            "List every run of a sweep with its state, pick the best LR per (variant, seed) by "
            "the selection metric (BE's rule), and report mean ± population std over seeds of "
            "every summary metric. Writes aggregate.csv, aggregate.json, runs.csv (one row per "
            "run) and history.csv (one row per recorded number)."
        ),
        epilog=(
            "variant = config keys that differ across runs, except the LR and seed keys and "
            f"bookkeeping keys ({', '.join(BOOKKEEPING)}, {', '.join(DISPLAY_KEYS)}, "
            f"{', '.join(p + '*' for p in BOOKKEEPING_PREFIXES)}, any key containing "
            f"{'/'.join(BOOKKEEPING_WORDS)})."
        ),
    )
    parser.add_argument("sweep_dir", type=Path, help="sweep dir (one run dir per job) or a run dir")
    parser.add_argument("--select", default=DEFAULT_SELECT, metavar="METRIC",
                        help="summary key to maximise when picking the LR: test/accuracy "
                             "(default, BE's rule, optimistic) or val/accuracy")
    parser.add_argument("--group-by", nargs="+", metavar="KEY",
                        help="config keys defining a variant (default: the keys that differ)")
    parser.add_argument("--lr-key", default=LR_KEY, help=f"LR config key (default {LR_KEY})")
    parser.add_argument("--seed-key", default=SEED_KEY,
                        help=f"repeat config key (default {SEED_KEY})")
    parser.add_argument("--columns", nargs="+", metavar="METRIC",
                        help="metrics to print (default: "
                             f"{' '.join(TABLE_COLUMNS)}); aggregate.json holds all of them")
    parser.add_argument("--out", type=Path, help="where to write the files (default: SWEEP_DIR)")
    parser.add_argument("--no-history", action="store_true",
                        help="skip history.csv (every number of every run: the slow part of a "
                             "large sweep; results.load_history reads any part of it)")
    parser.add_argument("--no-wandb", action="store_true",
                        help="never log the table to wandb, even for online runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = load_runs(args.sweep_dir, cached=False)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no run dirs (with config.yaml or status.json) in {args.sweep_dir}",
              file=sys.stderr)
        return 2
    # nothing changed since the same command wrote its files: say again what it said
    out_dir = Path(args.out or args.sweep_dir).resolve()
    key = command_key(runs, {**{k: str(v) for k, v in vars(args).items()}, "out": str(out_dir)})
    said = replay("aggregate", args.sweep_dir, key)
    if said is not None:
        sys.stdout.write(said[0])
        sys.stderr.write(said[1])
        return 0
    warm(runs, args.sweep_dir)
    stdout, stderr = Tee(sys.stdout), Tee(sys.stderr)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code, logged = _aggregate_main(args, runs)
    if code == 0 and not logged:  # a wandb table is logged again each time, as before
        remember("aggregate", args.sweep_dir, key,
                 [out_dir / name for name in OUTPUTS if name != "history.csv"
                  or not args.no_history], stdout.kept.getvalue(), stderr.kept.getvalue())
    return code


OUTPUTS = ("aggregate.csv", "aggregate.json", "runs.csv", "history.csv")


def _aggregate_main(args: argparse.Namespace, runs: list[RunDir]) -> tuple[int, bool]:
    """The command after reading: (exit status, whether a table went to wandb)."""
    try:
        result = aggregate(runs, select=args.select, group_by=args.group_by, lr_key=args.lr_key,
                           seed_key=args.seed_key, sweep_dir=args.sweep_dir)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2, False
    try:
        csv_path, json_path = write_outputs(result, args.out or args.sweep_dir,
                                            history=not args.no_history)
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"error: {write_problem(error, Path(args.out or args.sweep_dir))}", file=sys.stderr)
        return 1, False

    states = pd.Series([run.state for run in runs]).value_counts().sort_index()
    counts = ", ".join(f"{n} {state}" for state, n in states.items())
    print(f"{len(runs)} runs ({counts}); variant keys: {', '.join(result.variant_keys) or 'none'}")
    print(format_runs(result))
    print()
    print(f"best LR per seed by {args.select}; mean ± std (population) over seeds")
    print(format_table(result, args.columns))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {csv_path}, {json_path}, runs.csv"
          + ("" if args.no_history else " and history.csv"))

    settings = None if args.no_wandb else sweep_wandb_settings(
        [run.flat_config() for run in runs], args.sweep_dir)
    if settings is not None and log_table(
            "aggregate", table_frame(result).fillna("").astype(str), settings,
            {"select": result.select, "variant_keys": result.variant_keys}):
        print(f"logged the table to wandb group {settings['group']}")
        return 0, True
    return 0, False


if __name__ == "__main__":
    raise SystemExit(main())
