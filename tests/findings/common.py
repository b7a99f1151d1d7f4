"""Helpers of the findings tier (tests/findings/conftest.py explains the tier)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from latentgeo.records import read_metrics
from latentgeo.train import train
from tests.conftest import compose_cfg

# every run: offline, local records only, one thread, no progress bar
COMMON = ["logger=local", "trainer.progress=false", "trainer.num_threads=1",
          "trainer.deterministic=true"]
# TH's setting (thesis ch. 2): a 4-block ReLU MLP of width 64 on 8x8 digits, AdamW 2e-3, 40
# epochs; the TH findings and the field-geometry findings measure the same training
TH_MLP = ["model=mlp", "model.widths=[64,64,64,64]", "model.activation=relu",
          "dataset=digits", "dataset.image_size=8", "dataset.channels=1", "head=no_pen",
          "optimizer=adamw", "optimizer.lr=2e-3", "optimizer.weight_decay=0.01",
          "schedule=constant", "trainer.batch_size=64", "trainer.epochs=40", "metrics=none"]
TH_BLOCKS = ("layer1", "layer2", "layer3", "layer4")
FASHION_MIRROR = Path("/usr/share/datasets/fashion-mnist")
REPORTED: list[tuple[str, str, dict[str, Any]]] = []


def require_fashion_mnist() -> None:
    """Skip without Debian's Fashion-MNIST mirror, fail instead under LATENTGEO_REQUIRE_DATA=1."""
    if not FASHION_MIRROR.is_dir():
        message = f"{FASHION_MIRROR} missing: apt-get install dataset-fashion-mnist"
        if os.environ.get("LATENTGEO_REQUIRE_DATA") == "1":
            pytest.fail(f"LATENTGEO_REQUIRE_DATA=1 but {message}")
        pytest.skip(message)


class Run:
    """A finished training run: its events by epoch (merged), summary and wall time."""

    def __init__(self, run_dir: Path, seconds: float) -> None:
        self.dir = run_dir
        self.seconds = seconds
        self.by_epoch: dict[int, dict[str, Any]] = {}
        for event in read_metrics(run_dir / "metrics.jsonl"):
            self.by_epoch.setdefault(event["epoch"], {}).update(event)
        self.summary = json.loads((run_dir / "summary.json").read_text())

    def at(self, epoch: int) -> dict[str, Any]:
        return self.by_epoch[epoch]

    @property
    def last(self) -> dict[str, Any]:
        return self.by_epoch[max(self.by_epoch)]

    def series(self, key: str) -> dict[int, float]:
        return {e: v[key] for e, v in sorted(self.by_epoch.items()) if key in v}


def run_experiment(root: Path, name: str, overrides: list[str]) -> Run:
    """Train ``overrides`` (+ COMMON) into ``root/name``; returns the finished ``Run``."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    run_dir = root / name
    tic = time.perf_counter()
    train(compose_cfg([*overrides, *COMMON]), run_dir)
    return Run(run_dir, time.perf_counter() - tic)


def report(seed: str, finding: str, **numbers: Any) -> None:
    """Record what a finding measured (printed at the end of the session)."""
    REPORTED.append((seed, finding, numbers))


def shown_at_this_scale(condition: bool, what: str) -> None:
    """An effect measured at its margin at CPU scale: training a few epochs is chaotic enough
    that another CPU's kernels move it across the margin (the AVX2 machine where these margins
    were set showed it, an AVX-512 one did not, on the same code). Not shown: an expected
    failure that carries the numbers, as the effects that do not show at this scale."""
    if not condition:
        pytest.xfail(f"not shown on this machine's kernels (margin effect): {what}")
