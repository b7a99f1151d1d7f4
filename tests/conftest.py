"""Shared test helpers: composing configs in-process and running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

import latentgeo.train  # noqa: F401  (registers the workstation launcher plugin)
from latentgeo.config import compose

REPO = Path(__file__).resolve().parents[1]
# A tiny, fast, offline configuration every e2e test starts from.
TINY = [
    "model=resnet18", "model.width=8", "dataset=synthetic", "dataset.image_size=8",
    "dataset.train_size=512", "dataset.test_size=128", "trainer.epochs=2",
    "trainer.batch_size=32", "trainer.eval_batch_size=256", "optimizer.lr=1e-2",
    "schedule=constant", "metrics.every=1", "logger=local", "trainer.progress=false",
]

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("LATENTGEO_OUTPUT", str(tmp_path / "outputs"))
    monkeypatch.delenv("LATENTGEO_SWEEP_ID", raising=False)


def compose_cfg(overrides: list[str], config_dir: Path | None = None) -> DictConfig:
    return compose(overrides, config_dir)


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m latentgeo.train ARGS`` in a subprocess (stdout+stderr captured)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "latentgeo.train", *args], cwd=cwd or REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def wandb_records(run_dir: Path, offline_dir: Path | None = None) -> list[dict]:
    """Every record of a run's offline wandb log (the only one, or ``offline_dir``'s), read
    back with ``wandb leet inspect``."""
    import json

    pattern = "run-*.wandb" if offline_dir else "offline-run-*/run-*.wandb"
    (log,) = Path(offline_dir or Path(run_dir) / "wandb").glob(pattern)
    inspect = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect",
                              "--json", str(log)], capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in inspect.stdout.splitlines() if line.startswith("{")]


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of a run's offline wandb log."""
    return [r["history"]["item"] for r in wandb_records(run_dir) if r.get("type") == "history"]
