"""Real tiny runs exercising the metric families, ReLU_α, data options and switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentgeo.loop as loop
from latentgeo.records import read_json, read_metrics
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg


def events_of(run_dir):
    return read_metrics(run_dir / "metrics.jsonl")


def test_metric_families_are_logged_under_design_names(tmp_path):
    cfg = compose_cfg(TINY + ["metrics=all", "metrics.every=2", "trainer.epochs=2",
                              "metrics.ood.dataset=digits", "metrics.perturbation.samples=16",
                              "dataset.channels=1", "dataset.image_size=16"])
    train(cfg, tmp_path)
    last = events_of(tmp_path)[-1]
    for key in ("test/collapse/within_class_variation", "test/collapse_true/sigma_w",
                "train/binarity/score", "test/binarity/peaks_distance_mean",
                "test/same_encoding_fraction", "test/mahalanobis/auroc_exact",
                "test/perturbation/score", "test/ood/auroc", "test/ood/fpr_at_95_tpr",
                "train/nc1/layer1", "test/nc1/layer4", "test/nc1/penultimate",
                "hyperplanes/net/mean", "hyperplanes/backbone.stem.0/mass",
                "init_distance/backbone.stem.0/l2", "test/neural_collapse/penultimate/nc1",
                "train/effective_rank/penultimate/rankme",
                "test/intrinsic_dimension/penultimate/twonn"):
        assert key in last, key
    assert 0 <= last["test/same_encoding_fraction"] <= 1
    assert last["test/perturbation/score"] > 0
    # digits vs class-structured synthetic images: clearly separable in feature space
    assert last["test/ood/auroc"] > 0.8
    stored = np.load(tmp_path / "penultimate.npz")
    assert stored["test_x_pen"].shape == (128, 6)
    assert set(stored.files) >= {"train_x_pen", "train_labels", "train_preds", "test_labels"}
    projections = read_json(tmp_path / "hyperplanes.json")
    assert projections["net"]["mean"] == pytest.approx(last["hyperplanes/net/mean"])


def test_hyperplanes_every_epoch_from_epoch_zero_and_distance_grows(tmp_path):
    cfg = compose_cfg(TINY + ["trainer.epochs=3", "metrics=none",
                              "metrics.hyperplanes.when=init+every:1"])
    train(cfg, tmp_path)
    events = events_of(tmp_path)
    assert [e["epoch"] for e in events] == [0, 1, 2, 3]
    assert events[0]["init_distance/backbone.stem.0/l2"] == 0.0  # the init is its own init
    distances = [e["init_distance/backbone.stem.0/l2"] for e in events[1:]]
    assert 0 < distances[0] < distances[-1]
    init = torch.load(tmp_path / "checkpoints" / "init.pt", weights_only=True)["model"]
    from latentgeo.metrics.hyperplanes import projection_stats
    from latentgeo.models import build_model

    model = build_model(cfg, (3, 8, 8), 10)
    model.load_state_dict(init)
    assert projection_stats(model)["net"]["mean"] == pytest.approx(
        events[0]["hyperplanes/net/mean"])


def alpha_events(run_dir):
    return [{k: v for k, v in e.items() if k.startswith("alpha/") or k in ("epoch", "test/loss")}
            for e in events_of(run_dir) if e["epoch"] > 0]


def test_relu_alpha_anneal_resume_restores_nu_exactly(tmp_path, monkeypatch):
    overrides = TINY + ["model=cnn3", "model.activation=relu_alpha", "activation.mode=anneal",
                        "activation.nu_step=0.05", "trainer.epochs=4", "metrics=none",
                        "trainer.deterministic=true"]
    train(compose_cfg(overrides), tmp_path / "reference")

    calls = {"n": 0}
    real_step = loop.anneal_step

    def crashing_step(model, nu_step):  # dies in the middle of epoch 3 (16 steps per epoch)
        calls["n"] += 1
        if calls["n"] == 2 * 16 + 5:
            raise KeyboardInterrupt("simulated kill")
        real_step(model, nu_step)

    monkeypatch.setattr(loop, "anneal_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train(compose_cfg(overrides), tmp_path / "killed")
    assert read_json(tmp_path / "killed" / "status.json")["state"] == "failed"
    monkeypatch.setattr(loop, "anneal_step", real_step)
    train(compose_cfg(overrides), tmp_path / "killed")
    assert alpha_events(tmp_path / "killed") == alpha_events(tmp_path / "reference")
    nu = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)["model"]
    nus = [v.item() for k, v in nu.items() if k.endswith(".nu")]
    assert nus and all(v == pytest.approx(4 * 16 * 0.05) for v in nus)
    trajectories = read_json(tmp_path / "killed" / "alpha.json")
    (site, first), *_ = trajectories.items()
    assert first["epochs"] == [1, 2, 3, 4] and len(first["mean"]) == 4
    assert (tmp_path / "killed" / "alpha.png").stat().st_size > 1000


def test_relu_alpha_penalty_channel_logs_stats_and_excludes_alpha_from_weight_decay(tmp_path):
    cfg = compose_cfg(TINY + ["model=cnn3", "model.activation=relu_alpha",
                              "activation.granularity=channel", "activation.l1=0.5",
                              "trainer.epochs=2", "metrics=none"])
    train(cfg, tmp_path)
    last = events_of(tmp_path)[-1]
    sites = [k for k in last if k.startswith("alpha/") and k.count("/") == 1]
    assert len(sites) == 3
    for site in sites:
        assert last[f"{site}/min"] <= last[site] <= last[f"{site}/max"] <= 1.0
        assert last[site] < 1.0  # the L1 penalty pulled α below its ReLU start
    from latentgeo.models import build_model

    optimizer = loop.build_optimizer(cfg.optimizer, build_model(cfg, (3, 8, 8), 10))
    (alpha_group,) = [g for g in optimizer.param_groups if g["name"] == "alpha"]
    assert alpha_group["weight_decay"] == 0.0 and len(alpha_group["params"]) == 3


def test_validation_split_adds_val_metrics(tmp_path):
    cfg = compose_cfg(TINY + ["dataset.val_split=0.25", "metrics=none"])
    summary = train(cfg, tmp_path)
    assert 0 <= summary["val/accuracy"] <= 1
    assert "val/loss" in events_of(tmp_path)[-1]


def test_lr_auto_runs_the_range_test_and_trains_with_its_suggestion(tmp_path):
    cfg = compose_cfg(TINY + ["optimizer.lr=auto", "optimizer.lr_find.steps=30",
                              "metrics=none", "model=mlp", "model.width=null",
                              "model.widths=[32]"])
    summary = train(cfg, tmp_path)
    suggestion = read_json(tmp_path / "lr_find.json")["suggestion"]
    assert (tmp_path / "lr_find.png").is_file()
    assert summary["lr"] == pytest.approx(suggestion)  # constant schedule: trained at it
    assert summary["lr_find/suggestion"] == pytest.approx(suggestion)
    assert "lr: auto" in (tmp_path / "config.yaml").read_text()  # what the user asked for


def test_scheduled_dib_logs_vsufficiency_and_vminimality_per_block(tmp_path):
    cfg = compose_cfg(TINY + ["model=mlp", "model.width=null", "model.widths=[16,8]",
                              "metrics=none", "metrics.dib.when=every:2", "metrics.dib.epochs=1",
                              "metrics.dib.splits=[test]"])
    train(cfg, tmp_path)
    first, last = events_of(tmp_path)
    assert first["epoch"] == 1 and not any(k.startswith("dib/") for k in first)  # not due
    for block in ("stem", "layer1", "layer2"):
        assert f"dib/vsuff/{block}/test" in last and f"dib/vmin/{block}/test" in last
    assert last["dib/vsuff/layer2/test"] <= np.log2(10) + 1e-6


def test_reinit_at_end_writes_json_png_and_events(tmp_path):
    cfg = compose_cfg(TINY + ["model=cnn3", "trainer.epochs=2", "trainer.snapshot_epochs=[1]",
                              "metrics=none", "metrics.reinit.when=last"])
    train(cfg, tmp_path)
    result = read_json(tmp_path / "reinit.json")
    assert set(result["sources"]) == {"init", "epoch_0001", "rand"}
    assert result["layers"] == ["backbone.blocks.block1.0", "backbone.blocks.block2.0",
                                "backbone.blocks.block3.0"]
    last = events_of(tmp_path)[-1]
    assert last["reinit/init/backbone.blocks.block1.0"] == result["sources"]["init"][0]
    assert (tmp_path / "reinit.png").stat().st_size > 1000
