"""Metric families as plug-ins: the schedule vocabulary number by number, and a new family —
one module and one line in conf/metrics/default.yaml, no other file touched — reaching
metrics.jsonl and wandb."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from latentgeo import families
from latentgeo.checks import validate
from latentgeo.config import (
    ConfigError,
    Schedule,
    parse_schedule,
    to_container,
    to_typed,
    typed_metrics,
    with_changes,
)
from latentgeo.plugins import import_modules
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import REPO, TINY, compose_cfg, wandb_history


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


def test_due_reads_each_familys_when_whose_default_is_its_yaml_line():
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


TOY_FAMILY = '''
"""A toy metric family: the model's Σ‖θ‖^power, and the epoch it was measured at."""
from dataclasses import dataclass

from latentgeo.families import Point, options, register


@dataclass
class ToyOptions:
    power: int  # its default: the family's line in conf/metrics/default.yaml


@register("toy_weight_norm", ToyOptions)
def toy_weight_norm(point: Point) -> dict:
    power = options(point.cfg, "toy_weight_norm").power
    norm = sum(float(p.detach().double().abs().pow(power).sum())
               for p in point.model.parameters())
    return {"toy/weight_norm": norm, "toy/epoch": point.epoch}
'''


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """The toy family as a new module of latentgeo.families (found as ``import_modules`` finds
    every module there) and a copy of conf/ with its one line in metrics/default.yaml."""
    package = tmp_path / "package"
    package.mkdir()
    (package / "toy_weight_norm.py").write_text(TOY_FAMILY)
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(package)])
    import_modules([str(package)], "latentgeo.families")
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    with (conf / "metrics" / "default.yaml").open("a") as default:
        default.write("toy_weight_norm: {when: every:1, power: 2}\n")
    yield conf
    families.unregister("toy_weight_norm")
    sys.modules.pop("latentgeo.families.toy_weight_norm", None)


def test_a_new_family_is_one_module_and_one_yaml_line(toy_family, tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_cfg(TINY + ["metrics=none", "logger=wandb", "logger.mode=offline",
                              "trainer.epochs=2"], config_dir=toy_family)
    assert to_typed(cfg).metrics.toy_weight_norm.power == 2
    train(cfg, run_dir)
    events = RunDir(run_dir).events()
    logged = {e["epoch"]: e for e in events if "toy/weight_norm" in e}
    assert sorted(logged) == [1, 2] and logged[2]["toy/epoch"] == 2
    final = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    parameters = [v for k, v in final.items() if "running_" not in k and "num_batches" not in k]
    assert logged[2]["toy/weight_norm"] == pytest.approx(
        sum(float(v.double().pow(2).sum()) for v in parameters), rel=1e-9)
    history = {h["_step"]: h["toy/weight_norm"] for h in wandb_history(run_dir)
               if "toy/weight_norm" in h}
    assert history == pytest.approx({e["step"]: e["toy/weight_norm"] for e in logged.values()})
    # its options are checked like any family's: a key it lacks, a wrong type
    for override, message in (("+metrics.toy_weight_norm.exponent=3", "it takes when, power"),
                              ("metrics.toy_weight_norm.power=two", "power")):
        with pytest.raises(ConfigError, match=message):
            validate(compose_cfg(TINY + [override], config_dir=toy_family))


def test_a_metrics_node_that_is_no_family_is_refused():
    with pytest.raises(ConfigError, match=r"metrics.colapse is not a metric family: .*collapse"):
        validate(compose_cfg(TINY + ["+metrics.colapse={when: every}"]))


def test_a_family_without_a_node_is_off():
    cfg = to_typed(compose_cfg(TINY))
    tree = {k: v for k, v in to_container(cfg)["metrics"].items() if k != "alpha"}
    unnoded = with_changes(cfg)
    unnoded.metrics = typed_metrics(tree)
    assert families.schedule(unnoded, families.FAMILIES["alpha"]) == Schedule()
    assert families.schedule(cfg, families.FAMILIES["alpha"]) == parse_schedule("every:1")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        families.register("collapse")(lambda point: {})
