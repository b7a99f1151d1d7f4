"""Faults, third round (issue #26), through the command lines: strange names, a damaged
checkpoint under evaluate, a diverging run, two sweep drivers on one sweep id, a run that never
learned. Each test reproduces the case as the issue describes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentgeo.config import run_name
from latentgeo.records import RunDir, find_all_runs
from latentgeo.results import load_runs
from tests.conftest import REPO, TINY, run_cli

QUICK = [*TINY, "trainer.epochs=1", "metrics=none", "trainer.num_threads=1"]


def module_cli(module: str, args: list[str], env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in a subprocess (stdout+stderr captured)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["../../escape", "..", ".x", ".", "..."])
def test_a_name_never_makes_a_hidden_or_special_run_dir(name):
    made = run_name(name, "synthetic", "resnet18", "bin_enc", "name=" + name)
    assert not made.startswith(".") and made not in (".", "..") and "/" not in made


def test_a_run_named_dot_dot_is_listed_and_loaded(tmp_path):
    out = tmp_path / "out"
    result = run_cli([*QUICK, "name=.."], env={"LATENTGEO_OUTPUT": str(out)})
    assert result.returncode == 0, result.stderr
    (run_dir,) = (out / "runs").iterdir()
    assert not run_dir.name.startswith(".")
    assert [r.dir for r in find_all_runs(out)] == [run_dir]
    assert len(load_runs(out)) == 1
    listing = module_cli("latentgeo.runs", [str(out)])
    assert run_dir.name in listing.stdout and "1 ok" in listing.stdout, listing.stdout
