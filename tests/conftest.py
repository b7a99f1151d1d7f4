"""Shared test helpers: composing configs in-process and running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

import latentgeo.train  # noqa: F401  (registers the workstation launcher plugin)
from latentgeo.config import compose
from latentgeo.runtime import PAUSE_DIR, separate_compile_cache

REPO = Path(__file__).resolve().parents[1]
# A tiny, fast, offline configuration every e2e test starts from.
TINY = [
    "model=resnet18", "model.width=8", "dataset=synthetic", "dataset.image_size=8",
    "dataset.train_size=512", "dataset.test_size=128", "trainer.epochs=2",
    "trainer.batch_size=32", "trainer.eval_batch_size=256", "optimizer.lr=1e-2",
    "schedule=constant", "metrics.every=1", "logger=local", "trainer.progress=false",
]

torch.set_num_threads(min(2, torch.get_num_threads()))

separate_compile_cache()  # tests that call torch.compile themselves, and the runs they start


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


class Pause:
    """Holds runs at named points (``latentgeo.runtime.pause_point``: ``epoch<E>.event``,
    ``epoch<E>.checkpoint``, ``step<S>``) until the test releases them, so a test acts at an
    exact point of a run instead of guessing from the CPU's speed. Pass ``pause.env`` to the
    run's environment; a run that reaches a point announces it and waits there."""

    def __init__(self, folder: Path, *points: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for point in points:
            os.mkfifo(self.folder / point)

    @property
    def env(self) -> dict[str, str]:
        return {PAUSE_DIR: str(self.folder)}

    def reached(self, point: str) -> int:
        return len(list(self.folder.glob(f"{point}.reached.*")))

    def wait(self, point: str, process: subprocess.Popen | None = None, count: int = 1,
             patience: float = 600) -> None:
        """Until ``count`` runs wait at ``point``. ``patience`` only bounds a broken test (a
        run that died or never gets there); it is no guess of how fast a run is."""
        give_up = time.monotonic() + patience
        while self.reached(point) < count:
            if process is not None and process.poll() is not None:
                said = process.stderr.read()[-3000:] if process.stderr else ""
                raise AssertionError(f"the run ended (exit {process.returncode}) before "
                                     f"{point}: {said}")
            if time.monotonic() > give_up:
                raise AssertionError(f"no run reached {point} in {patience:.0f} s")
            time.sleep(0.02)

    def release(self, point: str) -> None:
        """Lets the runs waiting at ``point`` go on; the point is gone (a later pass, e.g. the
        next job of a sweep in the same process, does not stop there)."""
        fifo = self.folder / point
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the waiting runs hold the read end
        try:
            os.write(fd, b"x" * self.reached(point))  # one byte wakes one run
        finally:
            os.close(fd)
        fifo.unlink()
