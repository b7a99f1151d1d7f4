"""Run dirs as tidy pandas tables, for a notebook or a script.

    from latentgeo.results import load_history, load_runs
    runs = load_runs("outputs/sweeps/<id>")        # one row per run
    history = load_history("outputs/sweeps/<id>")  # one row per recorded number

``path`` is a run dir, a sweep dir, or a folder above them (``outputs/`` with ``runs/`` and
``sweeps/``): every run dir under it is read (``records.find_all_runs``), whatever its state.

- ``load_runs``: columns ``run`` (its dir), ``state``, ``reason``, ``epoch`` (the last complete
  one), the flattened config (``optimizer.lr``, ``head.name``, …), every summary.json key
  (``test/accuracy``, ``best_epoch``, …; NaN where a run has none, e.g. a failed run), and
  ``eval/<checkpoint>/<metric>`` for the results of ``python -m latentgeo.evaluate``.
- ``load_history``: columns ``run``, ``epoch``, ``step``, ``metric``, ``value``, ``source``:
  ``train`` for the events of metrics.jsonl, ``eval:<checkpoint>`` for an evaluated
  checkpoint (no step). Numbers only: lists and strings are left out, and so are nulls (a
  NaN or inf the run recorded as null).

Reads run dirs only through ``latentgeo.records``; wandb is never needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from latentgeo.records import RunDir, find_all_runs

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
    """One row per run dir under ``path``: run, state, reason, epoch, config, summary, eval/."""
    return runs_frame(find_all_runs(path))


def load_history(path: str | Path) -> pd.DataFrame:
    """Every number the runs under ``path`` recorded: run, epoch, step, metric, value, source."""
    return history_frame(find_all_runs(path))
