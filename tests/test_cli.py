"""The command line as a user runs it: bad input, resume after SIGKILL, wandb, pip install."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import latentgeo.checks
import latentgeo.train
import latentgeo.training  # noqa: F401  (imported before its checks are counted)
from latentgeo import build, config, families
from latentgeo.config import ConfigError, DatasetUnavailable
from latentgeo.records import read_json, read_metrics
from latentgeo.train import train
from tests.conftest import REPO, TINY, Pause, compose_cfg, run_cli

BAD_CONFIGS = [
    (["model=no_such_model"], "model/no_such_model"),
    (["trainer.epochs=many"], "trainer.epochs"),
    (["optimizer.lr=0"], "optimizer.lr=0 is not allowed"),
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not allowed: a finite number > 0, or auto"),
    (["optimizer.lr=-1e-3"], "optimizer.lr=-0.001 is not allowed"),
    (["trainer.epochs=0"], "trainer.epochs=0 is not allowed"),
    (["trainer.batch_size=0"], "trainer.batch_size=0 is not allowed"),
    (["trainer.no_such_key=1"], "no_such_key"),
    (["head=bin_enc", "head.penultimate_nodes=3"], "head.penultimate_nodes=3 is not allowed"),
    (["head=lin_pen", "head.penultimate_nodes=2"], "2^penultimate_nodes >= number of classes"),
    (["dataset=cifar10", "dataset.download=false", "dataset.root=/nonexistent"],
     "looked in /nonexistent"),
]


def states(outputs: Path) -> list[str]:
    return [read_json(p)["state"] for p in outputs.rglob("status.json")]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS,
                         ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_is_refused_with_a_clear_message(overrides, message, tmp_path):
    """In-process: composition refuses what the schema cannot hold; ``train`` refuses bad
    values before training, recorded failed (never ok)."""
    try:
        cfg = compose_cfg([*TINY, *overrides])
    except Exception as error:  # noqa: BLE001 - Hydra's and OmegaConf's composition errors
        chain, cause = [], error
        while cause is not None:
            chain.append(str(cause))
            cause = cause.__cause__
        assert message in "\n".join(chain)
        return
    with pytest.raises((ConfigError, DatasetUnavailable), match=re.escape(message)):
        train(cfg, tmp_path / "run")
    assert states(tmp_path) == ["failed"]
    assert message in read_json(tmp_path / "run" / "status.json")["reason"]


def test_one_command_line_run_runs_each_check_once(monkeypatch):
    """Each check wherever it is imported counts its calls: the command line checks the values
    before torch, the run the registries' names and the families' nodes before building, and
    the class count once the data are loaded."""
    counts: dict[str, int] = {}
    checks = {"check_values": config.check_values, "check_names": build.check_names,
              "check_metrics": families.check_metrics, "check_data": build.check_data}
    for name, original in checks.items():
        def counting(*args, _name=name, _original=original, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        for module in [m for n, m in sys.modules.items() if n.startswith("latentgeo")]:
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, counting)
    monkeypatch.setattr(sys, "argv", ["latentgeo-train", *TINY, "trainer.epochs=1"])
    latentgeo.train.main()
    assert counts == {"check_values": 1, "check_names": 1, "check_metrics": 1, "check_data": 1}


def test_a_bad_value_exits_2_from_the_command_line(tmp_path):
    outputs = tmp_path / "out"
    result = run_cli([*TINY, "optimizer.lr=0"], env={"LATENTGEO_OUTPUT": str(outputs)})
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: optimizer.lr=0 is not allowed: a finite number "
                                     "> 0, or auto")
    assert states(outputs) == ["failed"]


def comparable_events(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if not k.startswith("time/")}
            for e in read_metrics(run_dir / "metrics.jsonl")]


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    args = [*TINY, "trainer.epochs=5", "dataset.train_size=1024", "trainer.deterministic=true",
            "head.dropout_penultimate=true", "dataset.augment=true"]
    reference = run_cli(args, env={"LATENTGEO_OUTPUT": str(tmp_path / "a")})
    assert reference.returncode == 0, reference.stderr
    (reference_dir,) = (tmp_path / "a" / "runs").iterdir()

    # held after step 80 of 160 (32 per epoch): in the middle of epoch 3, then SIGKILLed
    pause = Pause(tmp_path / "pause", "step80")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LATENTGEO_OUTPUT": str(tmp_path / "b"),
           **pause.env}
    process = subprocess.Popen([sys.executable, "-m", "latentgeo.train", *args], cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pause.wait("step80", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (metrics,) = (tmp_path / "b").rglob("metrics.jsonl")
    run_dir = metrics.parent
    assert read_json(run_dir / "status.json")["state"] == "running"  # killed: never "ok"
    assert [e["epoch"] for e in read_metrics(metrics)] == [0, 1, 2]

    resumed = run_cli(args, env={"LATENTGEO_OUTPUT": str(tmp_path / "b")})
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert run_dir.name == reference_dir.name  # the same command finds the same run dir
    assert comparable_events(run_dir) == comparable_events(reference_dir)
    assert read_json(run_dir / "status.json")["state"] == "ok"

    # again, in this process (the same train the CLI calls): a complete run is not redone,
    # and trainer.resume=false starts afresh, keeping the old record
    train(compose_cfg(args), run_dir)
    assert "already complete" in capsys.readouterr().out
    train(compose_cfg([*args, "trainer.resume=false"]), run_dir)
    assert read_json(run_dir / "status.json")["state"] == "ok"
    archived = list((run_dir / "archive").glob("*/summary.json"))
    assert len(archived) == 1  # the old record was kept, not destroyed


def test_wandb_offline_run_logs_the_same_final_accuracy(tmp_path):
    outputs = tmp_path / "out"
    env = {"LATENTGEO_OUTPUT": str(outputs), "WANDB_API_KEY": "secret-key-123456"}
    result = run_cli([*TINY, "logger=wandb", "logger.mode=offline"], env=env)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (outputs / "runs").iterdir()
    (log,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    # read the logged history back from wandb's own transaction log
    inspect = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect",
                              "--json", str(log)], capture_output=True, text=True, timeout=60)
    records = [json.loads(line) for line in inspect.stdout.splitlines() if line.startswith("{")]
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    events = [e for e in read_metrics(run_dir / "metrics.jsonl") if "test/accuracy" in e]
    logged = {h["_step"]: h["test/accuracy"] for h in history if "test/accuracy" in h}
    assert logged == pytest.approx({e["step"]: e["test/accuracy"] for e in events})
    assert any("test/x_pen/node_0._type" in h for h in history)  # histograms at evaluations
    assert "secret-key-123456" not in (run_dir / "config.yaml").read_text()


def test_cfg_job_shows_the_composed_config():
    result = run_cli(["--cfg", "job"])
    assert result.returncode == 0, result.stderr
    for line in ("model:", "name: resnet18", "head:", "name: bin_enc", "name: cifar10",
                 "epochs: 800"):
        assert line in result.stdout


def test_pip_install_non_editable_runs_from_another_directory(tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    shipped = {p.relative_to(target / "latentgeo" / "conf")
               for p in (target / "latentgeo" / "conf").rglob("*.yaml")}
    assert shipped == {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target), "LATENTGEO_OUTPUT": str(elsewhere / "out")}
    where = subprocess.run([sys.executable, "-c", "import latentgeo; print(latentgeo.__file__)"],
                           cwd=elsewhere, env={**os.environ, **env}, capture_output=True,
                           text=True)
    assert where.stdout.startswith(str(target))
    result = run_cli(TINY, cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (elsewhere / "out" / "runs").iterdir()
    assert read_json(run_dir / "status.json")["state"] == "ok"


def test_every_config_folder_is_a_declared_package():
    """setuptools ships conf/ as latentgeo.conf; a group folder missing from pyproject's
    ``packages`` would still ship, but with a 30-line warning on every install."""
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                   ["packages"])
    folders = {".".join(("latentgeo", *p.relative_to(REPO).parts)) for p in
               [REPO / "conf", *(REPO / "conf").rglob("*")] if p.is_dir()
               and p.name != "__pycache__"}
    assert folders == {name for name in declared if name.startswith("latentgeo.conf")}


def test_every_python_package_is_declared():
    """A package left out of pyproject's ``packages`` is not installed by ``pip install .``
    (the editable install hides that): records/, report/, figures/ were split into packages."""
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                   ["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for root in ("latentgeo", "hydra_plugins") for p in (REPO / root).rglob("__init__.py")
             if "conf" not in p.relative_to(REPO).parts}
    assert found == {name for name in declared if not name.startswith("latentgeo.conf")}
