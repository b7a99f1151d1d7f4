"""Every backbone × every head trains one real epoch on synthetic data (the zoo's e2e test)."""

from __future__ import annotations

import math

import pytest

from latentgeo.models import HEADS, MODELS
from latentgeo.records import read_json
from latentgeo.train import train
from tests.conftest import compose_cfg

NEEDS_32 = ("vgg", "convnext_t", "resnet18_tv")  # ImageNet-style downsampling
NO_WIDTH = ("mlp", "lenet")


def overrides(model: str, head: str) -> list[str]:
    size = 32 if model.startswith(NEEDS_32) else 28 if model == "mnistnet" else 8
    return [
        f"model={model}", f"model.width={'null' if model in NO_WIDTH else 8}",
        "model.widths=[16]", f"head={head}", "dataset=synthetic", f"dataset.image_size={size}",
        "dataset.train_size=32", "dataset.test_size=32", "trainer.epochs=1",
        "trainer.batch_size=32", "metrics=none", "logger=local", "trainer.progress=false",
    ]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_with_every_head_runs_one_epoch(model, tmp_path):
    for head in HEADS:
        summary = train(compose_cfg(overrides(model, head)), tmp_path / head)
        assert read_json(tmp_path / head / "status.json")["state"] == "ok"
        assert math.isfinite(summary["test/loss"]) and 0 <= summary["test/accuracy"] <= 1
        assert summary["epochs"] == 1
