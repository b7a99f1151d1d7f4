"""Run dirs as tidy pandas tables, for a notebook or a script.

    from latentgeo.results import load_history, load_runs
    runs = load_runs("outputs/sweeps/<id>")        # one row per run
    history = load_history("outputs/sweeps/<id>", metrics=["test/accuracy"])  # its numbers

``path`` is a run dir, a sweep dir, or a folder above them (``outputs/`` with ``runs/`` and
``sweeps/``): every run dir under it is read (``records.find_all_runs``), whatever its state.

- ``load_runs``: columns ``run`` (its dir), ``state``, ``reason``, ``epoch`` (the last complete
  one), the flattened config (``optimizer.lr``, ``head.name``, …), every summary.json key
  (``test/accuracy``, ``best_epoch``, …; NaN where a run has none, e.g. a failed run), and
  ``eval/<checkpoint>/<metric>`` for the results of ``python -m latentgeo.evaluate``.
- ``load_history``: columns ``run``, ``epoch``, ``step``, ``metric``, ``value``, ``source``:
  ``train`` for the events of metrics.jsonl, ``eval:<checkpoint>`` for an evaluated
  checkpoint (no step). Numbers only: lists and strings are left out, and so are nulls (a
  NaN or inf the run recorded as null). ``metrics=[...]`` / ``runs=[...]`` read only those.

Both read through ``latentgeo.results_cache``: a later call parses only the runs whose files
changed (a 10,000-run sweep in seconds), and returns the same frame as reading every file.

Reads run dirs only through ``latentgeo.records``; wandb is never needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentgeo.records import RunDir, find_all_runs
from latentgeo.results_cache import (
    cache_dir,
    command_key,
    frame_replay,
    history_table,
    remember_frame,
    warm,
)

RUN_COLUMNS = ["run", "state", "reason", "epoch"]
HISTORY_COLUMNS = ["run", "epoch", "step", "metric", "value", "source"]
COORDINATES = ("epoch", "step", "checkpoint")  # where a record was taken, not a metric


def is_number(value: Any) -> bool:
    """A finite number: NaN and inf (a damaged record's ``NaN`` literals) are left out."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_row(run: RunDir) -> dict[str, Any]:
    """One run as a flat dict: the ``load_runs`` row."""
    evaluations = {f"eval/{checkpoint}/{key}": value
                   for checkpoint, values in run.evaluations().items()
                   for key, value in values.items() if key != "checkpoint"}
    recorded = {**run.flat_config(), **(run.summary() or {}), **evaluations}
    return {"run": str(run.dir), "state": run.state, "reason": run.reason, "epoch": run.epoch,
            **{key: value for key, value in recorded.items() if key not in RUN_COLUMNS}}


def runs_frame(runs: Sequence[RunDir]) -> pd.DataFrame:
    """``load_runs`` of these run dirs, in this order."""
    return pd.DataFrame([run_row(run) for run in runs]) if runs else pd.DataFrame(
        columns=RUN_COLUMNS)


def history_frame(runs: Sequence[RunDir]) -> pd.DataFrame:
    """``load_history`` of these run dirs, in this order."""
    records = []
    for run in runs:
        sources = [("train", run.events())]
        sources += [(f"eval:{name}", [values]) for name, values in run.evaluations().items()]
        for source, events in sources:
            for event in events:
                records += [(str(run.dir), event.get("epoch"), event.get("step"), key, value,
                             source) for key, value in event.items()
                            if key not in COORDINATES and is_number(value)]
    frame = pd.DataFrame(records, columns=HISTORY_COLUMNS)
    return frame.astype({"epoch": "Int64", "step": "Int64", "value": float})


def load_runs(path: str | Path) -> pd.DataFrame:
    """One row per run dir under ``path``: run, state, reason, epoch, config, summary, eval/.
    Runs whose files are unchanged since the last call come from the cache (``results_cache``)."""
    runs = find_all_runs(path)
    key = command_key(runs, {"path": os.path.abspath(path)})
    frame = frame_replay("load_runs", path, key)  # the same runs' files: the same frame
    if frame is None:
        warm(runs, path)
        frame = runs_frame(runs)
        remember_frame("load_runs", path, key, frame)
    return frame


def cached_history(runs: Sequence[RunDir], root: str | Path,
                   metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """``history_frame`` of these runs (only ``metrics`` when given), their metrics.jsonl read
    through the columnar cache: a later call parses only the files that changed. Within an
    event the rows follow the run's metric order (first seen), not the event's key order."""
    wanted = None if metrics is None else set(metrics)
    place = cache_dir(root)
    pieces: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]] = []
    for run in runs:
        table = history_table(run, root, place)
        names = [n for n in table.column_names[2:] if wanted is None or n in wanted]
        if names and table.num_rows:
            values = np.column_stack([table[n].to_numpy(zero_copy_only=False) for n in names])
            valid = np.column_stack([table[n].is_valid().to_numpy(zero_copy_only=False)
                                     for n in names])
            if values.dtype.kind == "f":  # NaN and inf (a damaged record's) are left out
                valid &= np.isfinite(values)
            rows, columns = np.nonzero(valid)  # row-major: event by event
            epochs, steps = (table[c].to_pandas().to_numpy(dtype=float, na_value=np.nan)
                             for c in ("epoch", "step"))
            pieces.append((str(run.dir), epochs[rows], steps[rows],
                           np.asarray(names, dtype=object)[columns], values[rows, columns],
                           np.ones(len(rows), bool), "train"))
        for name, values_of in run.evaluations().items():
            found = [(key, value) for key, value in values_of.items()
                     if key not in COORDINATES and is_number(value)
                     and (wanted is None or key in wanted)]
            if found:
                epoch = values_of.get("epoch")
                pieces.append((str(run.dir), np.full(len(found), np.nan if epoch is None
                                                     else float(epoch)),
                               np.full(len(found), np.nan),
                               np.asarray([k for k, _ in found], dtype=object),
                               np.asarray([float(v) for _, v in found]),
                               np.ones(len(found), bool), f"eval:{name}"))
    if not pieces:
        return pd.DataFrame(columns=HISTORY_COLUMNS).astype(
            {"epoch": "Int64", "step": "Int64", "value": float})
    lengths = [len(p[1]) for p in pieces]

    def joined(index: int) -> np.ndarray:
        return np.concatenate([p[index] for p in pieces])

    def integers(values: np.ndarray) -> pd.arrays.IntegerArray:
        missing = np.isnan(values)
        return pd.arrays.IntegerArray(np.where(missing, 0, values).astype("int64"), missing)

    return pd.DataFrame({
        "run": np.repeat(np.asarray([p[0] for p in pieces], dtype=object), lengths),
        "epoch": integers(joined(1)), "step": integers(joined(2)), "metric": joined(3),
        "value": joined(4).astype(float),
        "source": np.repeat(np.asarray([p[6] for p in pieces], dtype=object), lengths),
    }, columns=HISTORY_COLUMNS)


def _csv_field(text: str) -> str:
    """A text field as ``DataFrame.to_csv`` writes it (quoted when it holds , " or a newline)."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def history_csv(frame: pd.DataFrame, header: bool = True) -> str:
    """``frame.to_csv(index=False)`` of a history frame, the same text ~5× faster: the few
    distinct texts are quoted once, floats written as ``repr`` (pandas' own format)."""
    texts = {}
    for column in ("run", "metric", "source"):
        codes, distinct = pd.factorize(frame[column])
        quoted = np.asarray([_csv_field(str(text)) for text in distinct] + [""], dtype=object)
        texts[column] = quoted[codes].tolist()  # code -1 (a missing text): the empty field
    integers = {}
    for column in ("epoch", "step"):
        missing = frame[column].isna().to_numpy()
        numbers = frame[column].to_numpy(dtype="int64", na_value=0).astype(str).astype(object)
        numbers[missing] = ""
        integers[column] = numbers.tolist()
    values = ["" if v != v else repr(v) for v in frame["value"].to_numpy(float).tolist()]
    lines = [",".join(HISTORY_COLUMNS)] if header else []
    lines += [f"{r},{e},{s},{m},{v},{o}" for r, e, s, m, v, o in zip(
        texts["run"], integers["epoch"], integers["step"], texts["metric"], values,
        texts["source"])]
    return "\n".join(lines) + "\n" if lines else ""


def load_history(path: str | Path, metrics: Sequence[str] | None = None,
                 runs: Sequence[str | Path] | None = None) -> pd.DataFrame:
    """Every number the runs under ``path`` recorded: run, epoch, step, metric, value, source.
    ``metrics``: only these metric names (e.g. ``["test/accuracy"]``); ``runs``: only these run
    dirs (paths, or names as ``load_runs``' ``run`` column or the dir's name). Only what is
    asked is read, from a per-run columnar cache of metrics.jsonl (``results_cache``)."""
    found = find_all_runs(path)
    if runs is not None:
        asked = {str(Path(r).resolve()) for r in runs} | {str(r) for r in runs}
        found = [run for run in found if str(run.dir.resolve()) in asked or
                 str(run.dir) in asked or run.name in asked]
    return cached_history(found, path, metrics)
