"""The command line answers without importing torch, and a real run imports only what its
config uses. Real processes, read with ``python -X importtime``."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, TINY

HEAVY = ("torch", "sklearn", "wandb", "matplotlib", "torchvision", "torchvision.models",
         "scipy")


def imported(args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess,
                                                              set[str]]:
    """Run ``python -X importtime ARGS``; the top-level modules it imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            capture_output=True, text=True, timeout=300)
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return result, modules


def test_help_cfg_job_and_a_rejected_value_import_no_torch(tmp_path):
    env = {"LATENTGEO_OUTPUT": str(tmp_path)}
    for args, code, needle in (
        (["--help"], 0, "model: cifarnet, cnn3"),
        (["--cfg", "job", "model=mlp"], 0, "name: mlp"),
        (["trainer.epochs=0"], 2, "trainer.epochs=0 is not allowed: >= 1"),
        (["metrics.nc1.when=often"], 2, "metrics.nc1.when='often' is not allowed"),
    ):
        result, modules = imported(["-m", "latentgeo.train", *args], env)
        assert result.returncode == code, result.stderr[-2000:]
        assert needle in result.stdout + result.stderr
        assert not modules & set(HEAVY), (args, sorted(modules & set(HEAVY)))
    # each rejected value is recorded in its (new) run dir, as a failed run
    statuses = [p.read_text() for p in (tmp_path / "runs").glob("*/status.json")]
    assert len(statuses) == 2 and all('"state": "failed"' in s for s in statuses)


def test_a_local_run_without_metrics_imports_no_wandb_sklearn_matplotlib_or_torchvision(
        tmp_path):
    result, modules = imported(["-m", "latentgeo.train", *TINY, "metrics=none",
                                "trainer.epochs=1"], {"LATENTGEO_OUTPUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch" in modules
    assert not modules & {"wandb", "sklearn", "matplotlib", "torchvision.models"}, \
        sorted(modules & {"wandb", "sklearn", "matplotlib", "torchvision.models"})


def test_the_console_script_installs_a_working_bash_completion():
    script = os.path.join(os.path.dirname(sys.executable), "latentgeo-train")
    assert os.access(script, os.X_OK), "pip install -e . makes the latentgeo-train script"
    install = subprocess.run([script, "--shell-completion", "install=bash"],
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0 and "complete" in install.stdout
    # what bash does on TAB: the installed function asks the app, then fills COMPREPLY
    line = "latentgeo-train model=resnet"
    probe = (f'{install.stdout}\nCOMP_LINE="{line}"; COMP_POINT={len(line)}; '
             'COMP_WORDS=(latentgeo-train model=resnet); COMP_CWORD=1; '
             'hydra_bash_completion; printf "%s\\n" "${COMPREPLY[@]}"')
    env = {**os.environ, "PATH": f"{os.path.dirname(script)}:{os.environ['PATH']}"}
    completed = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                               timeout=120, env=env)
    options = set(completed.stdout.split())
    assert {"model=resnet18", "model=resnet18_tv", "model=resnet34"} <= options, completed
    assert "model=mlp" not in options
