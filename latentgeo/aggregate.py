"""Sweep table: list every run, pick the best LR per (variant, repeat), mean ± std over repeats.

    python -m latentgeo.aggregate SWEEP_DIR [--select test/accuracy|val/accuracy]
                                            [--group-by KEY ...]

Reads only the run-dir files (``status.json``, ``config.yaml``, ``summary.json``); wandb is never
needed. Definitions:

- **run**: a sub-directory of the sweep dir holding ``config.yaml`` or ``status.json`` (Hydra's
  ``<sweep_dir>/<job_num>/``). A run dir given directly is a sweep of one.
- **variant**: the flattened config keys whose values differ across the sweep's runs, minus the
  LR key, the seed key and bookkeeping keys (see ``is_bookkeeping_key``), minus keys that are a
  one-to-one alias of the LR or the seed (e.g. ``schedule.max_lr: ${optimizer.lr}``).
  ``--group-by`` replaces the variant keys.
- **repeat**: the seed (``trainer.seed``).
- **selection** (BE §1.6, ``find_best_results.py``): for every (variant, repeat) the ok run with
  the highest selection metric (default final ``test/accuracy``) among its LRs; ties go to the
  smaller LR. Runs that are not ok (failed, running, no status) are listed but never selected.
- **aggregate**: for every numeric summary metric, mean and *population* std (``ddof=0``, what
  BE's ``np.std`` plots show) over the selected runs of a variant; ``n`` counts the repeats with
  a finite value (``null``/NaN values are left out, not counted as 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

LR_KEY = "optimizer.lr"
SEED_KEY = "trainer.seed"
DEFAULT_SELECT = "test/accuracy"

# Keys that never define a variant: where things are written, how a run is displayed or resumed,
# which device it ran on. Explicit so that a reader can see why a differing key was ignored.
BOOKKEEPING_KEYS = frozenset({
    "name",  # readable run name, may embed the LR / seed
    "trainer.resume",
    "trainer.progress",
    "trainer.device",
    "trainer.num_threads",
})
BOOKKEEPING_PREFIXES = ("logger.", "hydra.")
BOOKKEEPING_WORDS = ("dir", "path", "root")  # any key component containing one of these

MISSING = "<missing>"  # value of a key that a run's config lacks
STATES_OK = "ok"

TABLE_COLUMNS = ("test/accuracy", "train/accuracy", "best/test/accuracy", "convergence_epoch")


def is_bookkeeping_key(key: str) -> bool:
    """True for flattened config keys that are bookkeeping, never part of a variant."""
    if key in BOOKKEEPING_KEYS or key.startswith(BOOKKEEPING_PREFIXES):
        return True
    return any(word in part for part in key.lower().split(".") for word in BOOKKEEPING_WORDS)


@dataclass
class RunRecord:
    """What aggregate needs from one run dir; ``config`` is flattened (``optimizer.lr``)."""

    name: str
    run_dir: Path
    state: str  # ok | failed | running | missing (no status.json) | unreadable
    reason: str | None
    epoch: int | None
    config: dict[str, Any]
    summary: dict[str, Any] | None  # None when summary.json is absent or unreadable

    @property
    def lr(self) -> Any:
        return self.config.get(LR_KEY)

    @property
    def seed(self) -> Any:
        return self.config.get(SEED_KEY)


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
    runs: list[RunRecord]
    run_variant: dict[str, str]  # run name -> variant label
    variants: list[VariantResult]
    warnings: list[str] = field(default_factory=list)
    std: str = "population (ddof=0), as numpy.std in BE's plots"

    def selected_runs(self) -> set[str]:
        return {s.run for v in self.variants for s in v.selected}


# ----------------------------------------------------------------------------- reading


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``{"a.b": value}``; lists stay values (made hashable by ``_canonical``)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"no {path.name}"
    except (OSError, ValueError) as error:
        return None, f"unreadable {path.name}: {error}"


def _read_config(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """config.yaml (resolved by the engine); Hydra's .hydra/config.yaml when the run died first."""
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if not path.exists():
            continue
        try:
            cfg = OmegaConf.load(path)
        except Exception as error:  # noqa: BLE001 - report, don't crash the whole table
            return {}, f"unreadable {path.name}: {error}"
        try:
            tree = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside Hydra: keep the raw text
            tree = OmegaConf.to_container(cfg, resolve=False)
        return flatten(tree), None
    return {}, "no config.yaml"


def load_run(run_dir: str | Path, name: str | None = None) -> RunRecord:
    """Read one run dir. Never raises for missing or broken files: the state says what is wrong."""
    run_dir = Path(run_dir)
    config, config_problem = _read_config(run_dir)
    status, status_problem = _read_json(run_dir / "status.json")
    if status_problem is not None or not isinstance(status, dict):
        state = "missing" if status_problem == "no status.json" else "unreadable"
        reason = status_problem or "status.json is not an object"
        epoch = None
    else:
        state = str(status.get("state") or "unreadable")
        reason = status.get("reason")
        epoch = status.get("epoch")
    summary, summary_problem = _read_json(run_dir / "summary.json")
    if not isinstance(summary, dict):
        summary = None
    if state == STATES_OK and summary is None:
        reason = summary_problem or "summary.json is not an object"
    if config_problem and state == STATES_OK:
        reason = config_problem
    return RunRecord(
        name=name or run_dir.name, run_dir=run_dir, state=state, reason=reason,
        epoch=epoch, config=config, summary=summary,
    )


def _is_run_dir(path: Path) -> bool:
    return (path / "status.json").exists() or (path / "config.yaml").exists()


def _job_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def find_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Run dirs of a sweep in job order (``0, 1, …, 10``); ``[sweep_dir]`` if it is a run dir."""
    sweep_dir = Path(sweep_dir)
    if _is_run_dir(sweep_dir):
        return [sweep_dir]
    children = [p for p in sweep_dir.iterdir() if p.is_dir() and _is_run_dir(p)]
    return sorted(children, key=_job_order)


def load_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """Every run of a sweep dir, in job order, whatever its state."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {sweep_dir} does not exist")
    return [load_run(run_dir, name=run_dir.name) for run_dir in find_run_dirs(sweep_dir)]


# ----------------------------------------------------------------------------- grouping


def _canonical(value: Any) -> str:
    """A hashable, order-stable text for config values (lists, None, floats)."""
    return json.dumps(value, sort_keys=True, default=str)


def _is_alias(runs: Sequence[RunRecord], key: str, of_key: str) -> bool:
    """True when ``key`` and ``of_key`` determine each other across the runs (a renamed copy)."""
    forward: dict[str, str] = {}
    backward: dict[str, str] = {}
    for run in runs:
        a = _canonical(run.config.get(key, MISSING))
        b = _canonical(run.config.get(of_key, MISSING))
        if forward.setdefault(a, b) != b or backward.setdefault(b, a) != a:
            return False
    return len(forward) > 1


def variant_keys(
    runs: Sequence[RunRecord], lr_key: str = LR_KEY, seed_key: str = SEED_KEY
) -> tuple[list[str], dict[str, str]]:
    """Config keys that differ across the runs and define variants, and the differing keys left
    out with the reason (lr, seed, bookkeeping, alias of lr/seed)."""
    with_config = [run for run in runs if run.config]
    all_keys = sorted({key for run in with_config for key in run.config})
    keys: list[str] = []
    excluded: dict[str, str] = {}
    for key in all_keys:
        values = {_canonical(run.config.get(key, MISSING)) for run in with_config}
        if len(values) < 2:
            continue
        if key == lr_key:
            excluded[key] = "learning rate (selected per repeat)"
        elif key == seed_key:
            excluded[key] = "seed (the repeat)"
        elif is_bookkeeping_key(key):
            excluded[key] = "bookkeeping"
        elif _is_alias(with_config, key, lr_key):
            excluded[key] = f"follows {lr_key} one-to-one"
        elif _is_alias(with_config, key, seed_key):
            excluded[key] = f"follows {seed_key} one-to-one"
        else:
            keys.append(key)
    return keys, excluded


def variant_label(config: dict[str, Any], keys: Sequence[str]) -> str:
    """``head.name=bin_enc,head.dropout_penultimate=true``; ``all`` when there are no keys."""
    if not keys:
        return "all"
    parts = []
    for key in keys:
        value = config.get(key, MISSING)
        text = value if isinstance(value, str) else _canonical(value)
        parts.append(f"{key}={text}")
    return ",".join(parts)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def selection_value(run: RunRecord, metric: str) -> float | None:
    """The run's finite selection value, or None when the run cannot be selected."""
    if run.state != STATES_OK or run.summary is None or not run.config:
        return None  # without a config the run has no variant, LR or seed
    return _finite(run.summary.get(metric))


def value_order(value: Any) -> tuple[int, float | str]:
    """Sort key for LRs and seeds: numbers numerically, anything else after them by its text."""
    number = _finite(value)
    return (0, number) if number is not None else (1, _canonical(value))


def select_best(
    runs: Sequence[RunRecord],
    metric: str = DEFAULT_SELECT,
    keys: Sequence[str] = (),
    lr_key: str = LR_KEY,
    seed_key: str = SEED_KEY,
) -> list[Selection]:
    """BE's rule: per (variant, seed) the ok run with the highest ``metric``; ties → smaller LR.

    ``keys`` are the variant keys. (Variant, seed) pairs without any usable run are absent.
    """
    sweep_lrs = sorted({_canonical(r.config.get(lr_key)) for r in runs if r.config},
                       key=lambda text: value_order(json.loads(text)))
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        group = (variant_label(run.config, keys), _canonical(run.config.get(seed_key)))
        groups.setdefault(group, []).append(run)
    selections = []
    for (label, _), members in groups.items():
        usable = [(selection_value(r, metric), r) for r in members]
        usable = [(value, r) for value, r in usable if value is not None]
        if not usable:
            continue
        value, best = min(usable, key=lambda item: (
            -item[0], value_order(item[1].config.get(lr_key)), _job_order(item[1].run_dir)))
        tried = {_canonical(r.config.get(lr_key)) for _, r in usable}
        selections.append(Selection(
            variant=label, seed=best.config.get(seed_key), run=best.name,
            lr=best.config.get(lr_key), value=value, candidates=len(usable),
            missing_lrs=[json.loads(lr) for lr in sweep_lrs if lr not in tried],
        ))
    return selections


def mean_std(values: Iterable[Any]) -> dict[str, Any]:
    """Mean and population std (ddof=0) of the finite values; None for both when there are none."""
    finite = [v for v in (_finite(x) for x in values) if v is not None]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(finite) / len(finite)
    variance = sum((v - mean) ** 2 for v in finite) / len(finite)
    return {"mean": mean, "std": math.sqrt(variance), "n": len(finite)}


def _summary_metrics(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Numeric (or null) summary keys; lists and strings are not averaged."""
    return sorted({
        key for summary in summaries for key, value in summary.items()
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    })


def aggregate(
    runs: Sequence[RunRecord],
    select: str = DEFAULT_SELECT,
    group_by: Sequence[str] | None = None,
    lr_key: str = LR_KEY,
    seed_key: str = SEED_KEY,
    sweep_dir: str | Path = "",
) -> AggregateResult:
    """Group runs into variants, select the best LR per repeat, average every summary metric."""
    runs = list(runs)
    if group_by:
        known = {key for run in runs for key in run.config}
        unknown = [key for key in group_by if key not in known]
        if unknown:
            close = sorted(k for k in known if any(u.split(".")[-1] in k for u in unknown))
            raise KeyError(f"--group-by {unknown} not in any run's config.yaml; "
                           f"similar keys: {close[:10] or 'none'}")
        keys = list(group_by)
        auto_keys, auto_excluded = variant_keys(runs, lr_key, seed_key)
        excluded = {k: "not in --group-by (pooled)" for k in auto_keys if k not in keys}
        excluded.update({k: v for k, v in auto_excluded.items() if k not in keys})
    else:
        keys, excluded = variant_keys(runs, lr_key, seed_key)

    warnings = [f"{key} differs across runs but {why}, so it is not a variant key "
                "(--group-by overrides)"
                for key, why in excluded.items() if why.startswith("follows")]
    if not any(selection_value(run, select) is not None for run in runs):
        available = sorted({k for r in runs if r.summary for k in r.summary})
        raise KeyError(f"--select {select!r}: no ok run has a finite value for it in summary.json; "
                       f"summary keys: {available[:30] or 'none (no ok run with summary.json)'}")
    if select.startswith(("test/", "best/test/")):
        has_val = any(_finite((r.summary or {}).get("val/accuracy")) is not None for r in runs)
        hint = ("these runs have a validation split: use --select val/accuracy"
                if has_val else "no run has val/accuracy (no validation split to select on)")
        warnings.append(f"selecting the LR on {select} (BE's rule) uses the test set for model "
                        f"selection, so the reported test numbers are optimistic; {hint}")

    selections = select_best(runs, select, keys, lr_key, seed_key)
    by_name = {run.name: run for run in runs}
    run_variant = {run.name: variant_label(run.config, keys) for run in runs}
    labels = list(dict.fromkeys(run_variant.values()))  # first-appearance (job) order
    variants = []
    for label in labels:
        members = [run for run in runs if run_variant[run.name] == label]
        chosen = [s for s in selections if s.variant == label]
        seeds = list({_canonical(r.seed): r.seed for r in members if r.config}.values())
        chosen_seeds = {_canonical(s.seed) for s in chosen}
        summaries = [by_name[s.run].summary or {} for s in chosen]
        metrics = {}
        for name in _summary_metrics(summaries):
            values = [summary.get(name) for summary in summaries]
            metrics[name] = {**mean_std(values), "values": [_finite(v) for v in values]}
        excluded_runs = {r.name: f"{r.state}: {exclusion_reason(r, select)}"
                         for r in members if selection_value(r, select) is None}
        variants.append(VariantResult(
            label=label, variant={k: members[0].config.get(k, MISSING) for k in keys},
            runs=[r.name for r in members], excluded_runs=excluded_runs,
            seeds=seeds, missing_seeds=[s for s in seeds if _canonical(s) not in chosen_seeds],
            selected=chosen, metrics=metrics,
        ))
        if excluded_runs:
            states = ", ".join(sorted({text.split(":")[0] for text in excluded_runs.values()}))
            warnings.append(f"variant {label}: {len(excluded_runs)} of {len(members)} runs "
                            f"excluded from selection ({states})")
    return AggregateResult(
        sweep_dir=str(sweep_dir), select=select, variant_keys=keys, lr_key=lr_key,
        seed_key=seed_key, excluded_keys=excluded, runs=runs, run_variant=run_variant,
        variants=variants, warnings=warnings,
    )


# ----------------------------------------------------------------------------- output


def _json_safe(value: Any) -> Any:
    """NaN/inf → None (JSON has no NaN), Paths → str, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def metric_names(result: AggregateResult) -> list[str]:
    """All aggregated metric names, the selection metric first."""
    names = sorted({name for v in result.variants for name in v.metrics})
    return sorted(names, key=lambda name: name != result.select)


def to_json(result: AggregateResult) -> dict[str, Any]:
    selected = result.selected_runs()
    runs = [{
        "run": r.name, "run_dir": str(r.run_dir), "state": r.state, "reason": r.reason,
        "epoch": r.epoch, "variant": result.run_variant[r.name], "seed": r.seed, "lr": r.lr,
        "select_value": selection_value(r, result.select), "selected": r.name in selected,
        "excluded_reason": exclusion_reason(r, result.select),
    } for r in result.runs]
    variants = [{
        "label": v.label, "variant": v.variant, "runs": v.runs, "n_runs": len(v.runs),
        "excluded_runs": v.excluded_runs, "n_excluded": len(v.excluded_runs), "seeds": v.seeds,
        "missing_seeds": v.missing_seeds, "n_repeats": len(v.selected),
        "selected": [s.__dict__ for s in v.selected], "metrics": v.metrics,
    } for v in result.variants]
    return _json_safe({
        "sweep_dir": result.sweep_dir, "select": result.select, "std": result.std,
        "lr_key": result.lr_key, "seed_key": result.seed_key,
        "variant_keys": result.variant_keys, "excluded_keys": result.excluded_keys,
        "warnings": result.warnings, "runs": runs, "variants": variants,
    })


def csv_rows(result: AggregateResult) -> tuple[list[str], list[list[Any]]]:
    """One row per variant: variant keys, counts, selected LR per seed, then for every metric
    ``<metric>:mean``, ``<metric>:std`` (population), ``<metric>:n``."""
    names = metric_names(result)
    header = ["variant", *result.variant_keys, "n_repeats", "n_runs", "n_excluded",
              "missing_seeds", "selected"]
    for name in names:
        header += [f"{name}:mean", f"{name}:std", f"{name}:n"]
    rows = []
    for v in result.variants:
        row: list[Any] = [v.label, *[v.variant[k] for k in result.variant_keys],
                          len(v.selected), len(v.runs), len(v.excluded_runs),
                          ";".join(str(s) for s in v.missing_seeds),
                          ";".join(f"seed={s.seed}:lr={s.lr}:run={s.run}" for s in v.selected)]
        for name in names:
            stats = v.metrics.get(name, {"mean": None, "std": None, "n": 0})
            row += [stats["mean"], stats["std"], stats["n"]]
        rows.append(["" if cell is None else cell for cell in row])
    return header, rows


def write_outputs(result: AggregateResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``aggregate.csv`` and ``aggregate.json`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "aggregate.csv", out_dir / "aggregate.json"
    header, rows = csv_rows(result)
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(csv_path)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_json(result), indent=2, allow_nan=False) + "\n")
    tmp.replace(json_path)
    return csv_path, json_path


def format_number(value: Any) -> str:
    number = _finite(value)
    if number is None or isinstance(value, int):
        return "-" if value is None else str(value)
    return f"{number:.4g}"


def format_stats(stats: dict[str, Any] | None) -> str:
    if not stats or stats["n"] == 0:
        return "-"
    return f"{format_number(stats['mean'])} ± {format_number(stats['std'])} (n={stats['n']})"


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=False)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
              for row in rows]
    return "\n".join(lines)


def exclusion_reason(run: RunRecord, select: str) -> str | None:
    """Why a run cannot be selected (None when it can): its reason, epoch or missing metric."""
    if selection_value(run, select) is not None:
        return None
    if run.reason:
        return run.reason
    if run.state == STATES_OK:
        return f"no finite {select} in summary.json"
    return f"at epoch {run.epoch}" if run.epoch is not None else "no reason given"


def format_runs(result: AggregateResult) -> str:
    """Every run, selected ones marked ``*``, with its state and the reason it is not usable."""
    selected = result.selected_runs()
    rows = []
    for run in result.runs:
        value = selection_value(run, result.select)
        rows.append([
            ("* " if run.name in selected else "  ") + run.name, run.state,
            result.run_variant[run.name], format_number(run.seed), format_number(run.lr),
            format_number(value), exclusion_reason(run, result.select) or "",
        ])
    header = ["run", "state", "variant", "seed", "lr", result.select, "reason"]
    return _text_table(header, rows)


def format_table(result: AggregateResult, columns: Sequence[str] | None = None) -> str:
    """Per variant: repeats, unusable runs, selected LRs and mean ± std of chosen metrics."""
    present = set(metric_names(result))
    wanted = list(dict.fromkeys([result.select, *(columns or TABLE_COLUMNS)]))
    wanted = [name for name in wanted if name in present]
    header = ["variant", "repeats", "excluded runs", "best lr (seed:lr)", *wanted]
    rows = []
    for v in result.variants:
        lrs = " ".join(f"{format_number(s.seed)}:{format_number(s.lr)}" for s in v.selected)
        repeats = f"{len(v.selected)} of {len(v.seeds)}"
        excluded = f"{len(v.excluded_runs)} of {len(v.runs)}"
        rows.append([v.label, repeats, excluded, lrs or "-",
                     *[format_stats(v.metrics.get(name)) for name in wanted]])
    return _text_table(header, rows)


# ----------------------------------------------------------------------------- wandb


def wandb_settings(runs: Sequence[RunRecord], sweep_dir: str | Path) -> dict[str, Any] | None:
    """project/entity/group for logging the table, or None unless every run logged online."""
    configs = [r.config for r in runs if r.config]
    if not configs or any(c.get("logger.mode") != "online" for c in configs):
        return None
    if any(c.get("logger.name", "wandb") != "wandb" for c in configs):
        return None
    first = configs[0]
    return {
        "project": first.get("logger.project") or "latentgeo",
        "entity": first.get("logger.entity"),
        # the engine's default group is the sweep id, i.e. the sweep dir's name
        "group": first.get("logger.group") or Path(sweep_dir).resolve().name,
    }


def log_to_wandb(result: AggregateResult, settings: dict[str, Any]) -> bool:
    """Log the aggregate as a wandb Table in the sweep's group; warn and return False on any
    failure (no network, no key). Never called under pytest or with WANDB_MODE≠online."""
    if os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("WANDB_MODE", "online") != "online":
        return False
    try:
        import wandb

        run = wandb.init(
            project=settings["project"], entity=settings["entity"], group=settings["group"],
            job_type="aggregate", name=f"aggregate-{settings['group']}",
            config={"select": result.select, "variant_keys": result.variant_keys},
            settings=wandb.Settings(init_timeout=30),
        )
        try:
            header, rows = csv_rows(result)
            run.log({"aggregate": wandb.Table(columns=header, data=[[str(c) for c in row]
                                                                    for row in rows])})
        finally:
            run.finish()
        return True
    except Exception as error:  # noqa: BLE001 - the local files are the record; wandb is extra
        print(f"warning: could not log the aggregate to wandb: {error}", file=sys.stderr)
        return False


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.aggregate",
        description=(
            "List every run of a sweep with its state, pick the best LR per (variant, seed) by "
            "the selection metric (BE's rule), and report mean ± population std over seeds of "
            "every summary metric. Writes aggregate.csv and aggregate.json."
        ),
        epilog=(
            "variant = config keys that differ across runs, except the LR and seed keys and "
            f"bookkeeping keys ({', '.join(sorted(BOOKKEEPING_KEYS))}, "
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
                             f"{' '.join(TABLE_COLUMNS)}); the files hold all of them")
    parser.add_argument("--out", type=Path, help="where to write the files (default: SWEEP_DIR)")
    parser.add_argument("--no-wandb", action="store_true",
                        help="never log the table to wandb, even for online runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = load_runs(args.sweep_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no run dirs (with config.yaml or status.json) in {args.sweep_dir}",
              file=sys.stderr)
        return 2
    try:
        result = aggregate(runs, select=args.select, group_by=args.group_by, lr_key=args.lr_key,
                           seed_key=args.seed_key, sweep_dir=args.sweep_dir)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    csv_path, json_path = write_outputs(result, args.out or args.sweep_dir)

    states: dict[str, int] = {}
    for run in runs:
        states[run.state] = states.get(run.state, 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    print(f"{len(runs)} runs ({counts}); variant keys: {', '.join(result.variant_keys) or 'none'}")
    print(format_runs(result))
    print()
    print(f"best LR per seed by {args.select}; mean ± std (population) over seeds")
    print(format_table(result, args.columns))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {csv_path} and {json_path}")

    settings = None if args.no_wandb else wandb_settings(runs, args.sweep_dir)
    if settings is not None and log_to_wandb(result, settings):
        print(f"logged the table to wandb group {settings['group']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
