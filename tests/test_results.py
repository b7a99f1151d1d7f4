"""``latentgeo.results``: tidy pandas tables of run dirs, checked value by value against the
files of a real 2-job sweep (one job evaluated), and the CSVs aggregate writes from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from latentgeo import aggregate as agg
from latentgeo import evaluate, selection
from latentgeo.records import RunDir
from latentgeo.results import HISTORY_COLUMNS, load_history, load_runs
from tests.conftest import TINY, run_cli

COORDINATES = ("epoch", "step", "checkpoint")


def read_json(path: Path):
    return json.loads(path.read_text())


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(cell, value) -> bool:
    """A DataFrame cell holds the JSON value (null ↔ NaN/None)."""
    if value is None:
        return cell is None or (isinstance(cell, float) and math.isnan(cell))
    return cell == value


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LRs, 2 epochs each; job 0's last checkpoint evaluated (eval/last.json)."""
    outputs = tmp_path_factory.mktemp("results") / "out"
    result = run_cli(["-m", *TINY, "optimizer.lr=1e-2,2e-2", "trainer.epochs=2", "metrics=none"],
                     env={"LATENTGEO_OUTPUT": str(outputs)})
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (outputs / "sweeps").iterdir()
    assert evaluate.main([str(sweep_dir / "0")]) == 0
    return sweep_dir


@pytest.mark.slow
def test_load_runs_is_one_row_per_run_with_config_summary_and_eval(sweep: Path) -> None:
    runs = load_runs(sweep)
    assert list(runs.run) == [str(sweep / "0"), str(sweep / "1")]
    assert list(runs.columns[:4]) == ["run", "state", "reason", "epoch"]
    for column in ("optimizer.lr", "head.name", "model.width", "test/accuracy", "best_epoch",
                   "best/test/accuracy", "convergence_epoch", "eval/last/test/accuracy"):
        assert column in runs.columns, column
    assert list(runs.state) == ["ok", "ok"] and runs.reason.isna().all()
    assert list(runs.epoch) == [2, 2]
    assert list(runs["optimizer.lr"]) == [1e-2, 2e-2]
    assert list(runs["head.name"]) == ["bin_enc"] * 2 and list(runs["model.width"]) == [8, 8]
    for row, job in zip(runs.to_dict("records"), ("0", "1")):
        summary = read_json(sweep / job / "summary.json")
        assert len(summary) > 10
        assert all(same(row[key], value) for key, value in summary.items()), job
    # the evaluated checkpoint: every number of eval/last.json, under eval/last/<metric>
    evaluation = read_json(sweep / "0" / "eval" / "last.json")
    first = runs.iloc[0]
    assert {k: first[f"eval/last/{k}"] for k in evaluation if k != "checkpoint"} == {
        k: v for k, v in evaluation.items() if k != "checkpoint"}
    assert first["eval/last/epoch"] == 2
    # evaluation reproduces the final test accuracy exactly (tests/test_evaluate.py)
    assert first["eval/last/test/accuracy"] == read_json(sweep / "0" / "summary.json")[
        "test/accuracy"]
    assert math.isnan(runs.iloc[1]["eval/last/test/accuracy"])  # job 1 was not evaluated


@pytest.mark.slow
def test_load_history_has_one_row_per_recorded_number(sweep: Path) -> None:
    history = load_history(sweep)
    assert list(history.columns) == HISTORY_COLUMNS
    expected = []  # run by run: its training events, then its evaluations
    for job in ("0", "1"):
        for event in read_events(sweep / job):
            expected += [(str(sweep / job), event["epoch"], event["step"], key, value, "train")
                         for key, value in event.items()
                         if key not in COORDINATES and is_number(value)]
        if job == "0":
            evaluation = read_json(sweep / "0" / "eval" / "last.json")
            expected += [(str(sweep / "0"), 2, None, key, value, "eval:last")
                         for key, value in evaluation.items()
                         if key not in COORDINATES and is_number(value)]
    assert len(expected) > 30
    assert history.shape == (len(expected), 6)
    rows = [(r.run, r.epoch, None if pd.isna(r.step) else r.step, r.metric, r.value, r.source)
            for r in history.itertuples()]
    assert rows == expected
    # a notebook's view: test accuracy per run and epoch; the last epoch is the summary's
    train = history[history.source == "train"]
    accuracy = train[train.metric == "test/accuracy"].pivot(index="epoch", columns="run",
                                                            values="value")
    assert accuracy.shape == (2, 2)
    for job in ("0", "1"):
        assert accuracy.loc[2, str(sweep / job)] == read_json(sweep / job / "summary.json")[
            "test/accuracy"]
    evaluated = history[history.source == "eval:last"]
    assert set(evaluated.run) == {str(sweep / "0")} and evaluated.step.isna().all()
    assert set(evaluated.metric) >= {"test/accuracy", "test/loss", "train/accuracy"}


@pytest.mark.slow
def test_a_run_dir_and_an_outputs_folder_are_read_too(sweep: Path) -> None:
    outputs = sweep.parents[1]  # out/ holding sweeps/<id>/
    assert list(load_runs(outputs).run) == list(load_runs(sweep).run)
    one = load_runs(sweep / "1")
    assert list(one.run) == [str(sweep / "1")] and one["optimizer.lr"].item() == 2e-2
    assert set(load_history(sweep / "1").run) == {str(sweep / "1")}
    (outputs / "nothing here").mkdir()
    empty = load_runs(outputs / "nothing here")
    assert empty.empty and list(empty.columns) == ["run", "state", "reason", "epoch"]
    assert list(load_history(outputs / "nothing here").columns) == HISTORY_COLUMNS
    with pytest.raises(FileNotFoundError, match="no such folder does not exist"):
        load_runs(outputs / "no such folder")  # a typo must not read as "no runs"


@pytest.mark.slow
def test_aggregate_writes_runs_and_history_csv_and_a_readable_table(
        sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agg.main([str(sweep), "--out", str(tmp_path), "--no-wandb"]) == 0
    assert "runs.csv and history.csv" in capsys.readouterr().out
    runs, history = load_runs(sweep), load_history(sweep)
    runs_csv = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs_csv.columns) == list(runs.columns)
    for column in ("run", "state", "epoch", "optimizer.lr", "test/accuracy", "best_epoch",
                   "eval/last/test/accuracy"):
        pd.testing.assert_series_equal(runs_csv[column], runs[column], check_dtype=False)
    history_csv = pd.read_csv(tmp_path / "history.csv")
    assert list(history_csv.columns) == HISTORY_COLUMNS and len(history_csv) == len(history)
    assert list(history_csv.value) == list(history.value)  # round trip of every float
    assert list(history_csv.metric) == list(history.metric)

    table = pd.read_csv(tmp_path / "aggregate.csv")
    stats = [f"{name}:{stat}" for name in selection.TABLE_COLUMNS for stat in ("mean", "std", "n")]
    assert list(table.columns) == ["variant", "n_repeats", "n_runs", "n_excluded",
                                   "missing_seeds", "selected", *stats]  # only the LR differs
    finals = [read_json(sweep / job / "summary.json")["test/accuracy"] for job in ("0", "1")]
    best = max(range(2), key=lambda i: (finals[i], -i))  # ties go to the smaller LR
    (row,) = table.to_dict("records")
    assert row["variant"] == "all" and row["n_runs"] == 2 and row["n_repeats"] == 1
    assert row["selected"] == f"seed=0:lr={[0.01, 0.02][best]}:run={best}"
    assert row["test/accuracy:mean"] == finals[best] and row["test/accuracy:std"] == 0
    assert row["test/accuracy:n"] == 1
    assert row["best/test/accuracy:mean"] == read_json(
        sweep / str(best) / "summary.json")["best/test/accuracy"]
    # aggregate.json keeps every summary metric
    data = read_json(tmp_path / "aggregate.json")
    assert "test/loss" in data["variants"][0]["metrics"] and "test/loss:mean" not in table


def test_history_keeps_numbers_only_and_runs_keep_lists(tmp_path: Path) -> None:
    """A hand-written run dir: lists, strings, booleans and nulls are not history rows."""
    run = RunDir(tmp_path / "run")
    run.start("optimizer:\n  lr: 0.5\nhead:\n  name: bin_enc\n")
    run.log({"epoch": 1, "step": 10, "train/loss": 2.0, "alpha/fc": [0.1, 0.2], "note": "x",
             "flag": True, "test/accuracy": None})
    run.log({"epoch": 2, "step": 20, "train/loss": 1.0, "test/accuracy": 0.75})
    run.finish_ok({"train/loss": 1.0, "test/accuracy": 0.75, "alpha/fc": [0.1, 0.2]})
    run.write_evaluation("init", {"checkpoint": "init", "epoch": 0, "test/accuracy": 0.125,
                                  "alpha/fc": [1.0, 1.0]})
    history = load_history(run.dir)
    assert [(r.epoch, r.metric, r.value, r.source) for r in history.itertuples()] == [
        (1, "train/loss", 2.0, "train"), (2, "train/loss", 1.0, "train"),
        (2, "test/accuracy", 0.75, "train"), (0, "test/accuracy", 0.125, "eval:init")]
    assert list(history.step.astype(object).where(history.step.notna(), None)) == [
        10, 20, 20, None]
    (row,) = load_runs(run.dir).to_dict("records")
    assert row["optimizer.lr"] == 0.5 and row["head.name"] == "bin_enc"
    assert row["alpha/fc"] == [0.1, 0.2] and row["eval/init/alpha/fc"] == [1.0, 1.0]
    assert row["eval/init/test/accuracy"] == 0.125 and row["eval/init/epoch"] == 0
    assert "eval/init/checkpoint" not in row
