"""Faults, third round (issue #26): damaged records read by the results tools (runs, results,
aggregate, report), the lock probe racing a writer, a post-hoc analysis adding to a record.
Run dirs are written by hand here: each test is the damaged file the issue describes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from latentgeo import runs as runs_cli
from latentgeo.aggregate import run_table
from latentgeo.records import RunDir, find_all_runs
from latentgeo.results import load_history, load_runs

CONFIG = "trainer:\n  epochs: 3\noptimizer:\n  lr: 0.1\n  name: sgd\n"


def write_run(run_dir: Path, state: str = "ok", events: str | None = None,
              summary: str | None = None, config: str = CONFIG) -> RunDir:
    """A run dir by hand: status.json, config.yaml, metrics.jsonl and summary.json as given
    (text, so that a test can write what JSON cannot: NaN, torn lines)."""
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps(
        {"state": state, "reason": None, "epoch": 3, "started": "2026-01-01T00:00:00+00:00"}))
    (run_dir / "config.yaml").write_text(config)
    if events is not None:
        (run_dir / "metrics.jsonl").write_text(events)
    if summary is not None:
        (run_dir / "summary.json").write_text(summary)
    return RunDir(run_dir)


def listing(root: Path, capsys) -> list[str]:
    assert runs_cli.main([str(root)]) == 0
    return capsys.readouterr().out.splitlines()


# ------------------------------------------------------------------ 4. wrong numbers, reasons


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_runs_best_accuracy_skips_non_finite_values(bad, tmp_path, capsys):
    events = "".join(json.dumps({"epoch": e, "test/accuracy": a}) + "\n"
                     for e, a in ((1, 0.5), (2, 0.8802)))
    events += f'{{"epoch": 3, "test/accuracy": {bad}}}\n'
    write_run(tmp_path / "a", state="running", events=events)
    write_run(tmp_path / "b", events=events, summary=f'{{"best/test/accuracy": {bad}}}')
    lines = listing(tmp_path, capsys)
    assert [line.split()[3] for line in lines[1:3]] == ["0.8802", "0.8802"], lines


def test_load_history_leaves_out_nan_and_inf(tmp_path):
    write_run(tmp_path / "a", events='{"epoch": 1, "step": 4, "train/loss": NaN, "lr": 0.1}\n'
                                     '{"epoch": 2, "step": 8, "train/loss": Infinity, "lr": 0.1}\n')
    history = load_history(tmp_path)
    assert sorted(history.metric) == ["lr", "lr"]
    assert all(math.isfinite(v) for v in history.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "3\n"])
def test_a_config_that_is_not_a_mapping_is_a_config_problem(text, tmp_path):
    run = write_run(tmp_path / "a", events="", summary='{"test/accuracy": 0.9}', config=text)
    assert run.config_problem() and "config.yaml" in run.config_problem()
    assert run.flat_config() == {}
    (reason,) = run_table([RunDir(tmp_path / "a")]).excluded_reason
    assert "config.yaml" in reason and "no finite" not in reason, reason
