"""Compose every option of every config group and build what it describes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentgeo.config import ConfigError, validate
from latentgeo.data import DATASETS
from latentgeo.models import MODELS, build_model
from tests.conftest import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_registered_model_and_dataset_has_a_yaml_and_vice_versa():
    assert set(options("model")) == set(MODELS)
    assert set(options("dataset")) == set(DATASETS)


# small input shapes per model family so that building + one forward stays cheap
def _input_shape(model: str) -> tuple[int, int, int]:
    return (3, 32, 32) if model.startswith(("vgg", "convnext", "resnet18_tv")) else (1, 28, 28)


@pytest.mark.parametrize("model", options("model"))
def test_every_model_option_composes_and_runs_forward(model):
    width = {"mlp": "null", "lenet": "null"}.get(model, "8")
    cfg = compose_cfg([f"model={model}", f"model.width={width}", "head=bin_enc"])
    validate(cfg)
    net = build_model(cfg, _input_shape(model), 10).eval()
    logits, x_pen = net(torch.randn(2, *_input_shape(model)))
    assert logits.shape == (2, 10) and x_pen.shape == (2, 6)


@pytest.mark.parametrize("group", ["head", "dataset", "optimizer", "schedule", "metrics",
                                   "logger", "trainer", "experiment"])
def test_every_option_of_every_group_composes_and_validates(group):
    for option in options(group):
        cfg = compose_cfg([f"{group}={option}"])
        validate(cfg)
        if group in ("head", "dataset", "optimizer", "schedule", "logger"):
            assert cfg[group].name == option or group == "dataset" and cfg.dataset.name == option


@pytest.mark.parametrize("option", ["adamw", "adam", "sgd"])
def test_every_optimizer_builds(option):
    from latentgeo.engine import build_optimizer

    cfg = compose_cfg([f"optimizer={option}", "model=mlp", "model.widths=[8]"])
    model = build_model(cfg, (1, 4, 4), 3)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer).__name__.lower() == option
    assert optimizer.defaults["lr"] == cfg.optimizer.lr


def test_validation_names_key_value_and_allowed():
    cfg = compose_cfg(["head=bin_enc", "head.penultimate_nodes=3"])
    with pytest.raises(ConfigError, match=r"head.penultimate_nodes=3 .*number of classes \(10\)"):
        validate(cfg, num_classes=10)
    validate(cfg, num_classes=8)  # 2^3 >= 8 is fine
    cfg = compose_cfg(["metrics.perturbation.when=sometimes"])
    with pytest.raises(ConfigError, match=r"metrics.perturbation.when='sometimes'.*'last'"):
        validate(cfg)
    cfg = compose_cfg(["dataset.label_noise=1.5"])
    with pytest.raises(ConfigError, match=r"dataset.label_noise=1.5.*\[0, 1\]"):
        validate(cfg)
    cfg = compose_cfg(["model.activation=swish"])
    with pytest.raises(ConfigError, match=r"model.activation='swish'.*relu_alpha"):
        validate(cfg)
