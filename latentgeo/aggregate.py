"""``python -m latentgeo.aggregate SWEEP_DIR [--select test/accuracy|val/accuracy]
[--group-by KEY ...]``: the sweep table — every run, the best LR per (variant, repeat), mean ±
std over repeats, by BE's rule (``latentgeo.selection`` defines run, variant, repeat, selection
and aggregate).

Writes ``aggregate.csv`` (per variant: keys, counts, selected LRs, mean/std/n of the chosen
metrics), ``aggregate.json`` (everything) and ``latentgeo.results``'s ``runs.csv`` and
``history.csv`` (not with ``--no-history``) beside the sweep (or into ``--out``). Runs are read
through ``latentgeo.results_cache``: unchanged runs come from the cache, and the same command
over unchanged runs, arguments and outputs prints again what it printed (stdout, then stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from latentgeo.config import BOOKKEEPING
from latentgeo.records import DISK_FULL, RunDir, atomic_write_text, jsonable, write_problem
from latentgeo.results import cached_history, history_csv, runs_frame
from latentgeo.results_cache import Tee, command_key, remember, replay, warm
from latentgeo.selection import (
    DEFAULT_SELECT,
    DISPLAY_KEYS,
    LR_KEY,
    NON_VARIANT_PREFIXES,
    NON_VARIANT_WORDS,
    SCORE_COLUMNS,
    SEED_KEY,
    TABLE_COLUMNS,
    AggregateResult,
    aggregate,
    finite_number,
    result_table,
    sweep_runs,
)
from latentgeo.tracking import log_table, sweep_wandb_settings

# ----------------------------------------------------------------------------- output


def metric_names(result: AggregateResult) -> list[str]:
    """All aggregated metric names, the selection metric first."""
    names = sorted({name for v in result.variants for name in v.metrics})
    return sorted(names, key=lambda name: name != result.select)


def to_json(result: AggregateResult) -> dict[str, Any]:
    table = result_table(result)
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
    number = finite_number(value)
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
             r.excluded_reason or r.reason or ""] for r in result_table(result).itertuples()]
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
            f"{', '.join(p + '*' for p in NON_VARIANT_PREFIXES)}, any key containing "
            f"{'/'.join(NON_VARIANT_WORDS)})."
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
        runs = sweep_runs(args.sweep_dir, cached=False)
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
