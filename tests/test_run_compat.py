"""Both loaders serve every analysis, and a run dir written before the second wave (the old
metric keys in its config.yaml, no overrides or wandb id in status.json) still aggregates,
reports, evaluates and resumes."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from latentgeo import aggregate, evaluate, report, selection
from latentgeo.analysis import reinit
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg


def test_the_torch_loader_serves_dib_reinit_the_lr_range_test_and_evaluate(tmp_path):
    cfg = compose_cfg(TINY + ["dataset.loader=torch", "dataset.num_workers=0",
                              "model=mlp", "model.width=null", "model.widths=[16]",
                              "optimizer.lr=auto", "optimizer.lr_find.steps=20",
                              "optimizer.lr_find.min_lr=1e-4",
                              "metrics=none", "metrics.dib.when=last", "metrics.dib.epochs=1",
                              "metrics.dib.minimality_epochs=1", "metrics.reinit.when=last",
                              "metrics.reinit.layers=conv+linear", "trainer.snapshot_epochs=[1]"])
    train(cfg, tmp_path)
    run = RunDir(tmp_path)
    final = run.events()[-1]
    assert run.state == "ok" and "lr_find/suggestion" in run.events()[0]
    assert "dib/vsuff/layer1/test" in final and "reinit/init/backbone.blocks.layer1.0" in final
    assert reinit.main([str(tmp_path), "--from", "init", "--layers", "conv+linear"]) == 0
    assert evaluate.main([str(tmp_path)]) == 0
    values = run.evaluations()["last"]
    for key in ("test/accuracy", "dib/vsuff/layer1/test", "reinit/init/backbone.blocks.layer1.0"):
        assert values[key] == final[key], key


def legacy(config: dict) -> dict:
    """A config.yaml as the first wave wrote it."""
    metrics = config["metrics"]
    for name in ("collapse", "binarity", "same_encoding"):
        metrics[name] = metrics[name]["when"] != "off"
    metrics["hyperplanes"]["enabled"] = metrics["hyperplanes"].pop("when") != "off"
    metrics["dib"]["every"] = 0
    del metrics["dib"]["when"]
    metrics["reinit"]["at_end"] = metrics["reinit"].pop("when") == "last"
    metrics["store_penultimate"] = metrics.pop("penultimate")["when"] != "off"
    for key in ("alpha", "train_subset"):
        metrics.pop(key)
    for key in ("limit_train_batches", "limit_eval_batches", "profile_steps"):
        config["trainer"].pop(key)
    return config


def test_a_first_wave_run_dir_still_aggregates_reports_evaluates_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    cfg = compose_cfg(TINY + ["metrics.every=2"])
    for job in ("0", "1"):
        train(cfg, sweep / job)
        run = RunDir(sweep / job)
        old = legacy(OmegaConf.to_container(OmegaConf.load(run.artifact("config"))))
        run.artifact("config").write_text(OmegaConf.to_yaml(old))
        status = json.loads(run.artifact("status").read_text())
        status.pop("overrides")
        run.artifact("status").write_text(json.dumps(status))
    assert "store_penultimate: false" in (sweep / "0" / "config.yaml").read_text()
    assert aggregate.main([str(sweep), "--no-wandb"]) == 0
    assert (sweep / "aggregate.csv").is_file() and (sweep / "runs.csv").is_file()
    assert report.build_report(sweep).is_file()
    assert evaluate.main([str(sweep / "0")]) == 0
    final = RunDir(sweep / "0").events()[-1]
    assert RunDir(sweep / "0").evaluations()["last"]["test/accuracy"] == final["test/accuracy"]
    # the same command on the old record: recognised as the same run, already complete
    summary = train(cfg, sweep / "0")
    assert summary["test/accuracy"] == final["test/accuracy"]


def test_post_hoc_analyses_reach_the_summary_that_aggregate_reads(tmp_path):
    train(compose_cfg(TINY + ["model=cnn3", "metrics=none", "trainer.snapshot_epochs=[1]"]),
          tmp_path)
    assert reinit.main([str(tmp_path), "--from", "init"]) == 0
    result = json.loads((tmp_path / "reinit.json").read_text())
    summary = RunDir(tmp_path).summary()
    first = result["layers"][0]
    assert summary[f"reinit/init/{first}"] == result["sources"]["init"][0]
    runs = selection.sweep_runs(tmp_path)
    assert runs[0].summary()[f"reinit/init/{first}"] == result["sources"]["init"][0]
