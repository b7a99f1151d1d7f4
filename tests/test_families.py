"""Metric families as plug-ins: the schedule vocabulary number by number, and a family
registered from this file (no other file touched) reaching metrics.jsonl and wandb."""

from __future__ import annotations

import pytest
import torch

from latentgeo import families
from latentgeo.config import ConfigError, Schedule, parse_schedule, to_typed
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg, wandb_history


@pytest.mark.parametrize("text, epochs", [
    ("off", []),
    ("init", [0]),
    ("last", [6]),
    ("every", [2, 4, 6]),  # metrics.every=2, and the last epoch
    ("every:4", [4, 6]),
    ("every:1", [1, 2, 3, 4, 5, 6]),
    ("init+every:3", [0, 3, 6]),
    ("init+last", [0, 6]),
])
def test_schedule_vocabulary_says_which_epochs_are_due(text, epochs):
    schedule = parse_schedule(text)
    assert [e for e in range(7) if schedule.due(e, e == 6, evaluation_every=2)] == epochs


@pytest.mark.parametrize("text", ["", "sometimes", "every:0", "every:x", "init,last",
                                  "every:2+every:3", "off+init"])
def test_schedule_errors_name_the_key_and_the_vocabulary(text):
    with pytest.raises(ConfigError, match=r"metrics\.nc1\.when=.*off, init, every, every:N"):
        parse_schedule(text, "metrics.nc1.when")


def test_due_reads_each_familys_when_and_falls_back_to_its_default():
    cfg = to_typed(compose_cfg(TINY + ["metrics.every=5", "metrics.collapse.when=last",
                                       "metrics.nc1.when=every:2"]))
    names = lambda epoch, last=False: [f.name for f in families.due(cfg, epoch, last)]  # noqa: E731
    assert names(0) == ["hyperplanes"]  # init+every:1 by default
    assert names(2) == ["nc1", "hyperplanes", "alpha"]
    assert names(5) == ["accuracy", "binarity", "same_encoding", "hyperplanes", "alpha"]
    assert names(7, last=True) == ["accuracy", "collapse", "binarity", "same_encoding",
                                   "mahalanobis", "perturbation", "ood", "nc1", "hyperplanes",
                                   "alpha"]
    assert families.schedule(cfg, families.FAMILIES["accuracy"]) == Schedule(every_evaluation=True)


def test_a_family_registered_here_reaches_metrics_jsonl_and_wandb(tmp_path):
    @families.register("toy_weight_norm", "every:1")
    def toy_weight_norm(point: families.Point) -> dict[str, float]:
        """Σ‖θ‖² of the model and the epoch it was measured at."""
        norm = sum(float(p.detach().double().pow(2).sum()) for p in point.model.parameters())
        return {"toy/weight_norm": norm, "toy/epoch": point.epoch}

    try:
        cfg = compose_cfg(TINY + ["metrics=none", "logger=wandb", "logger.mode=offline",
                                  "trainer.epochs=2"])
        train(cfg, tmp_path)
    finally:
        families.unregister("toy_weight_norm")
    events = RunDir(tmp_path).events()
    logged = {e["epoch"]: e for e in events if "toy/weight_norm" in e}
    assert sorted(logged) == [1, 2] and logged[2]["toy/epoch"] == 2
    final = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    parameters = [v for k, v in final.items() if "running_" not in k and "num_batches" not in k]
    assert logged[2]["toy/weight_norm"] == pytest.approx(
        sum(float(v.double().pow(2).sum()) for v in parameters), rel=1e-9)
    history = {h["_step"]: h["toy/weight_norm"] for h in wandb_history(tmp_path)
               if "toy/weight_norm" in h}
    assert history == pytest.approx({e["step"]: e["toy/weight_norm"] for e in logged.values()})
    assert "toy_weight_norm" not in families.FAMILIES


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        families.register("collapse")(lambda point: {})
