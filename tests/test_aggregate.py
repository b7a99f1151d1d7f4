"""Sweep aggregation on a hand-made sweep dir: best LR per (variant, seed) by BE's rule, mean ±
population std over seeds computed by hand, failed/running runs listed but never selected."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from latentgeo import aggregate as agg
from latentgeo import selection
from latentgeo.tracking import log_table, sweep_wandb_settings

# (head, seed, lr, test/accuracy, val/accuracy, test/binarity/score, convergence_epoch)
GRID = [
    ("bin_enc", 0, 1e-4, 0.80, 0.70, 0.50, 10),
    ("bin_enc", 0, 2e-4, 0.85, 0.72, 0.60, 12),
    ("bin_enc", 0, 4e-4, 0.83, 0.75, 0.70, 14),
    ("bin_enc", 1, 1e-4, 0.81, 0.74, 0.55, 11),
    ("bin_enc", 1, 2e-4, 0.84, 0.71, 0.65, None),
    ("bin_enc", 1, 4e-4, 0.86, 0.70, 0.90, None),
    ("no_pen", 0, 1e-4, 0.90, 0.60, 0.20, 5),
    ("no_pen", 0, 2e-4, 0.88, 0.65, 0.25, 6),
    ("no_pen", 0, 4e-4, 0.87, 0.61, 0.30, 7),
    ("no_pen", 1, 1e-4, 0.89, 0.66, 0.10, 8),
    ("no_pen", 1, 2e-4, 0.93, 0.62, 0.40, 9),  # tie on test/accuracy with 4e-4: smaller LR wins
    ("no_pen", 1, 4e-4, 0.93, 0.68, 0.35, 10),
]
BIN = "head.name=bin_enc"
NOPEN = "head.name=no_pen"


def write_run(run_dir: Path, head: str, seed: int, lr: float, state: str = "ok",
              reason: str | None = None, summary: dict | None = None) -> None:
    run_dir.mkdir(parents=True)
    config = {
        "name": f"mlp-{head}-lr{lr}-s{seed}",  # bookkeeping: embeds lr and seed
        "model": {"name": "mlp", "widths": [64, 32]},
        "head": {"name": head, "penultimate_nodes": 6, "dropout_penultimate": False},
        "dataset": {"name": "digits", "root": f"/data/{run_dir.name}"},  # bookkeeping ("root")
        "optimizer": {"name": "adamw", "lr": lr},
        "schedule": {"name": "constant", "max_lr": lr},  # an alias of optimizer.lr
        "metrics": {"every": 1},
        "logger": {"name": "wandb", "mode": "offline", "group": f"g{run_dir.name}"},
        "trainer": {"seed": seed, "epochs": 20, "resume": int(run_dir.name) % 2 == 0},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    status = {"state": state, "reason": reason, "started": "2025-01-01T00:00:00",
              "ended": None if state == "running" else "2025-01-01T01:00:00",
              "epoch": 20 if state == "ok" else 3, "git_sha": None, "versions": {}}
    (run_dir / "status.json").write_text(json.dumps(status))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "sweep"
    for job, (head, seed, lr, test, val, binarity, convergence) in enumerate(GRID):
        summary = {
            "test/accuracy": test, "val/accuracy": val, "train/accuracy": test + 0.1,
            "test/binarity/score": binarity, "convergence_epoch": convergence, "epochs": 20,
            "best/test/accuracy": test + 0.01, "alpha/fc1": [0.1, 0.2],  # lists are not averaged
        }
        write_run(sweep_dir / str(job), head, seed, lr, summary=summary)
    write_run(sweep_dir / "12", "bin_enc", 2, 2e-4, state="failed",
              reason="loss is NaN at epoch 3")
    # a stale, better-looking summary must not make a running run selectable
    write_run(sweep_dir / "13", "no_pen", 1, 8e-4, state="running",
              summary={"test/accuracy": 0.99, "val/accuracy": 0.99})
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    (sweep_dir / ".submitit").mkdir()  # launcher files: not a run
    return sweep_dir


def variant(result: selection.AggregateResult, label: str) -> selection.VariantResult:
    return next(v for v in result.variants if v.label == label)


def picks(v: selection.VariantResult) -> dict[int, tuple[float, str]]:
    return {s.seed: (s.lr, s.run) for s in v.selected}


def test_runs_are_listed_in_job_order_with_their_state(sweep: Path) -> None:
    runs = selection.sweep_runs(sweep)
    assert [r.name for r in runs] == [str(i) for i in range(14)]
    states = {r.name: (r.state, r.reason) for r in runs}
    assert states["12"] == ("failed", "loss is NaN at epoch 3")
    assert states["13"][0] == "running"
    assert selection.lr_of(runs[5]) == 4e-4 and selection.seed_of(runs[5]) == 1
    assert runs[0].flat_config()["model.widths"] == [64, 32]


def test_variant_keys_exclude_lr_seed_bookkeeping_and_aliases(sweep: Path) -> None:
    keys, excluded = selection.variant_keys(selection.sweep_runs(sweep))
    assert keys == ["head.name"]
    assert excluded == {
        "dataset.root": "bookkeeping", "logger.group": "bookkeeping", "name": "bookkeeping",
        "trainer.resume": "bookkeeping", "optimizer.lr": "learning rate (selected per repeat)",
        "schedule.max_lr": "follows optimizer.lr one-to-one", "trainer.seed": "seed (the repeat)",
    }


def test_a_key_only_some_options_use_is_not_a_variant_of_its_own(tmp_path: Path) -> None:
    """model.widths is the MLP's (config.OPTION_KEYS; null for cnn3): a sweep over models is
    labelled by model.name alone; a sweep over the MLP's widths keeps them as the variant."""
    models = tmp_path / "models"
    for job, (model, widths) in enumerate([("mlp", [64, 32]), ("cnn3", None)] * 2):
        write_run(models / str(job), "bin_enc", job // 2, 1e-3, summary={"test/accuracy": 0.5})
        config = yaml.safe_load((models / str(job) / "config.yaml").read_text())
        config["model"] = {"name": model, "widths": widths}
        (models / str(job) / "config.yaml").write_text(yaml.safe_dump(config))
    keys, excluded = selection.variant_keys(selection.sweep_runs(models))
    assert keys == ["model.name"]
    assert excluded["model.widths"] == "set by model.name's option"
    result = selection.aggregate(selection.sweep_runs(models))
    assert [v.label for v in result.variants] == ["model.name=mlp", "model.name=cnn3"]

    widths = tmp_path / "widths"
    for job, hidden in enumerate([[64], [128]]):
        write_run(widths / str(job), "bin_enc", 0, 1e-3, summary={"test/accuracy": 0.5})
        config = yaml.safe_load((widths / str(job) / "config.yaml").read_text())
        config["model"]["widths"] = hidden
        (widths / str(job) / "config.yaml").write_text(yaml.safe_dump(config))
    assert selection.variant_keys(selection.sweep_runs(widths))[0] == ["model.widths"]


def test_best_lr_per_variant_and_seed_on_test_accuracy(sweep: Path) -> None:
    result = selection.aggregate(selection.sweep_runs(sweep), select="test/accuracy")
    assert [v.label for v in result.variants] == [BIN, NOPEN]
    assert picks(variant(result, BIN)) == {0: (2e-4, "1"), 1: (4e-4, "5")}
    assert picks(variant(result, NOPEN)) == {0: (1e-4, "6"), 1: (2e-4, "10")}  # tie → smaller LR
    chosen = variant(result, BIN).selected[0]
    assert chosen.candidates == 3
    assert chosen.missing_lrs == [8e-4]  # the sweep's only 8e-4 run is still running


def test_mean_and_population_std_over_seeds(sweep: Path) -> None:
    result = selection.aggregate(selection.sweep_runs(sweep))
    bin_metrics = variant(result, BIN).metrics
    # selected bin_enc runs: (0.85, 0.60, conv 12) and (0.86, 0.90, conv null)
    assert bin_metrics["test/accuracy"]["mean"] == pytest.approx(0.855)
    assert bin_metrics["test/accuracy"]["std"] == pytest.approx(0.005)  # sample std: 0.00707
    assert bin_metrics["test/binarity/score"]["mean"] == pytest.approx(0.75)
    assert bin_metrics["test/binarity/score"]["std"] == pytest.approx(0.15)
    assert bin_metrics["train/accuracy"]["mean"] == pytest.approx(0.955)
    assert bin_metrics["convergence_epoch"] == {"mean": 12.0, "std": 0.0, "n": 1,
                                                "values": [12.0, None]}
    assert "alpha/fc1" not in bin_metrics
    nopen = variant(result, NOPEN).metrics
    # selected no_pen runs: (0.90, 0.20, conv 5) and (0.93, 0.40, conv 9)
    assert nopen["test/accuracy"]["mean"] == pytest.approx(0.915)
    assert nopen["test/accuracy"]["std"] == pytest.approx(0.015)
    assert nopen["test/binarity/score"]["std"] == pytest.approx(0.10)
    assert nopen["convergence_epoch"]["mean"] == pytest.approx(7.0)
    assert nopen["convergence_epoch"]["std"] == pytest.approx(2.0)


def test_failed_and_running_runs_are_excluded_and_counted(sweep: Path) -> None:
    result = selection.aggregate(selection.sweep_runs(sweep))
    bin_enc, nopen = variant(result, BIN), variant(result, NOPEN)
    assert bin_enc.excluded_runs == {"12": "failed: loss is NaN at epoch 3"}
    assert bin_enc.seeds == [0, 1, 2] and bin_enc.missing_seeds == [2]
    assert nopen.excluded_runs == {"13": "running: at epoch 3"} and nopen.missing_seeds == []
    assert "13" not in result.selected_runs() and "12" not in result.selected_runs()
    assert len(bin_enc.runs) == 7 and len(nopen.runs) == 7
    assert any("1 of 7 runs excluded" in w for w in result.warnings)
    assert any(w.startswith("schedule.max_lr differs") for w in result.warnings)


def test_select_on_validation_accuracy(sweep: Path) -> None:
    result = selection.aggregate(selection.sweep_runs(sweep), select="val/accuracy")
    assert picks(variant(result, BIN)) == {0: (4e-4, "2"), 1: (1e-4, "3")}
    assert picks(variant(result, NOPEN)) == {0: (2e-4, "7"), 1: (4e-4, "11")}
    bin_metrics, nopen = variant(result, BIN).metrics, variant(result, NOPEN).metrics
    assert bin_metrics["test/accuracy"]["mean"] == pytest.approx(0.82)
    assert bin_metrics["test/accuracy"]["std"] == pytest.approx(0.01)
    assert bin_metrics["val/accuracy"]["mean"] == pytest.approx(0.745)
    assert nopen["test/accuracy"]["mean"] == pytest.approx(0.905)
    assert nopen["test/accuracy"]["std"] == pytest.approx(0.025)
    assert not any("optimistic" in w for w in result.warnings)


def test_selecting_on_test_warns_and_offers_val(sweep: Path) -> None:
    result = selection.aggregate(selection.sweep_runs(sweep))
    warning = next(w for w in result.warnings if "optimistic" in w)
    assert "--select val/accuracy" in warning


def test_group_by_pools_the_heads(sweep: Path) -> None:
    result = selection.aggregate(selection.sweep_runs(sweep), group_by=["head.penultimate_nodes"])
    (pooled,) = result.variants
    assert pooled.label == "head.penultimate_nodes=6"
    assert picks(pooled) == {0: (1e-4, "6"), 1: (2e-4, "10")}  # best over both heads and LRs
    assert pooled.selected[0].candidates == 6
    assert pooled.metrics["test/accuracy"]["mean"] == pytest.approx(0.915)
    assert result.excluded_keys["head.name"] == "not in --group-by (pooled)"
    with pytest.raises(KeyError, match="head.nodes"):
        selection.aggregate(selection.sweep_runs(sweep), group_by=["head.nodes"])


def test_cli_writes_csv_and_json(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agg.main([str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "failed" in out and "loss is NaN at epoch 3" in out and "running" in out
    assert "0.855 ± 0.005 (n=2)" in out and "0.915 ± 0.015 (n=2)" in out
    assert "optimistic" in err

    with (sweep / "aggregate.csv").open() as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    header = next(csv.reader((sweep / "aggregate.csv").open()))
    assert header[:7] == ["variant", "head.name", "n_repeats", "n_runs", "n_excluded",
                          "missing_seeds", "selected"]
    assert header[7:10] == ["test/accuracy:mean", "test/accuracy:std", "test/accuracy:n"]
    assert float(rows[BIN]["test/accuracy:mean"]) == pytest.approx(0.855)
    assert float(rows[BIN]["test/accuracy:std"]) == pytest.approx(0.005)
    assert rows[BIN]["n_repeats"] == "2" and rows[BIN]["n_excluded"] == "1"
    assert rows[BIN]["missing_seeds"] == "2"
    assert rows[BIN]["selected"] == "seed=0:lr=0.0002:run=1;seed=1:lr=0.0004:run=5"
    assert float(rows[NOPEN]["convergence_epoch:std"]) == pytest.approx(2.0)
    assert rows[BIN]["convergence_epoch:n"] == "1"

    data = json.loads((sweep / "aggregate.json").read_text())
    assert data["select"] == "test/accuracy" and data["variant_keys"] == ["head.name"]
    assert data["std"].startswith("population")
    runs = {r["run"]: r for r in data["runs"]}
    assert len(runs) == 14
    assert runs["12"]["state"] == "failed" and runs["12"]["select_value"] is None
    assert runs["13"]["state"] == "running" and not runs["13"]["selected"]
    assert [name for name, r in runs.items() if r["selected"]] == ["1", "5", "6", "10"]
    bin_json = next(v for v in data["variants"] if v["label"] == BIN)
    assert bin_json["metrics"]["test/binarity/score"]["std"] == pytest.approx(0.15)
    assert bin_json["n_excluded"] == 1


def test_cli_select_val_and_bad_inputs(sweep: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    assert agg.main([str(sweep), "--select", "val/accuracy", "--out", str(out_dir)]) == 0
    data = json.loads((out_dir / "aggregate.json").read_text())
    assert [r["run"] for r in data["runs"] if r["selected"]] == ["2", "3", "7", "11"]
    capsys.readouterr()
    assert agg.main([str(sweep), "--select", "val/loss"]) == 2
    assert "val/loss" in capsys.readouterr().err
    assert agg.main([str(sweep), "--group-by", "head.nodes"]) == 2
    assert agg.main([str(tmp_path / "nope")]) == 2


def test_broken_run_dirs_are_reported_not_fatal(tmp_path: Path) -> None:
    no_status = tmp_path / "0"
    write_run(no_status, "bin_enc", 0, 1e-4)
    (no_status / "status.json").unlink()
    ok_without_summary = tmp_path / "1"
    write_run(ok_without_summary, "bin_enc", 0, 2e-4)
    truncated = tmp_path / "2"
    write_run(truncated, "bin_enc", 0, 4e-4)
    (truncated / "status.json").write_text('{"state": "ok", "rea')
    runs = {r.name: r for r in selection.sweep_runs(tmp_path)}
    assert (runs["0"].state, runs["0"].reason) == ("missing", "no status.json")
    assert (runs["1"].state, runs["1"].reason) == ("ok", "no summary.json")
    assert runs["2"].state == "unreadable" and "status.json" in runs["2"].reason
    with pytest.raises(KeyError, match="no ok run"):
        selection.aggregate(list(runs.values()))

    write_run(tmp_path / "3", "bin_enc", 1, 1e-4, summary={"test/accuracy": None})
    write_run(tmp_path / "4", "bin_enc", 1, 2e-4, summary={"test/accuracy": 0.5})
    write_run(tmp_path / "5", "bin_enc", 1, 4e-4, summary={"test/accuracy": 0.9})
    (tmp_path / "5" / "config.yaml").unlink()  # no LR / seed / variant: cannot be selected
    result = selection.aggregate(selection.sweep_runs(tmp_path))
    (only,) = result.variants
    assert [s.run for s in only.selected] == ["4"]
    assert only.excluded_runs["3"] == "ok: no finite test/accuracy in summary.json"
    assert only.excluded_runs["0"] == "missing: no status.json"
    assert only.excluded_runs["5"] == "ok: no config.yaml"
    assert only.seeds == [0, 1] and only.missing_seeds == [0]


def test_wandb_logging_is_guarded(sweep: Path) -> None:
    runs = selection.sweep_runs(sweep)
    configs = [run.flat_config() for run in runs]
    assert sweep_wandb_settings(configs, sweep) is None  # the runs logged offline
    for config in configs:
        config["logger.mode"] = "online"
        config["logger.group"] = None
    settings = sweep_wandb_settings(configs, sweep)
    assert settings == {"project": "latentgeo", "entity": None, "group": "sweep"}
    frame = agg.table_frame(selection.aggregate(runs))
    assert log_table("aggregate", frame, settings, {}) is False  # never under pytest


def test_population_std_helper() -> None:
    assert selection.mean_std([1.0, 3.0, None, float("nan")]) == {"mean": 2.0, "std": 1.0, "n": 2}
    assert selection.mean_std([None]) == {"mean": None, "std": None, "n": 0}
