"""Faults, third round (issue #26), through the command lines: strange names, a damaged
checkpoint under evaluate, a diverging run, two sweep drivers on one sweep id, a run that never
learned. Each test reproduces the case as the issue describes it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latentgeo.config import run_name
from latentgeo.records import RunDamaged, RunDir, find_all_runs
from latentgeo.results import load_runs
from latentgeo.train import train
from tests.conftest import REPO, TINY, compose_cfg, run_cli

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished QUICK run (its run dir), shared by the tests that damage copies of it."""
    out = tmp_path_factory.mktemp("trained")
    result = run_cli(QUICK, env={"LATENTGEO_OUTPUT": str(out)})
    assert result.returncode == 0, result.stderr
    (run_dir,) = (out / "runs").iterdir()
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


class Unsafe:  # a pickled object of this class makes a file torch loads only unsafely
    pass


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "unsafe_pickle"])
def test_evaluate_on_a_damaged_checkpoint_is_one_line_exit_2_never_weights_only(
        damage, trained, tmp_path):
    import torch

    run_dir = copy_of(trained, tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    whole = last.read_bytes()
    if damage == "unsafe_pickle":
        torch.save({"epoch": 1, "model": Unsafe()}, last)
    else:
        last.write_bytes({"garbage": b"garbage" * 100, "truncated": whole[:len(whole) // 2],
                          "empty": b""}[damage])
    result = module_cli("latentgeo.evaluate", [str(run_dir)])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(last) in lines[0] and "damaged" in lines[0], result.stderr
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr
    # resuming from it (a run killed mid-way): the recorded reason says the same
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "state": "running"}))
    with pytest.raises(RunDamaged, match="damaged"):
        train(compose_cfg(QUICK), run_dir)
    reason = RunDir(run_dir).reason
    assert str(last) in reason and "weights_only" not in reason, reason


# ------------------------------------------------------------ 6. one line instead of tracebacks


def test_a_diverging_run_is_one_line_exit_1_recorded_failed(tmp_path):
    out = tmp_path / "out"
    result = run_cli([*QUICK, "optimizer.lr=1e30"], env={"LATENTGEO_OUTPUT": str(out)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: TrainingDiverged: non-finite training loss (nan) in epoch 1"], result.stderr
    (run_dir,) = (out / "runs").iterdir()
    assert RunDir(run_dir).state == "failed" and "TrainingDiverged" in RunDir(run_dir).reason


@pytest.mark.parametrize("override, allowed", [
    ("head.gamma_factor=inf", "a finite number > 0"),
    ("head.gamma_start=inf", "a finite number >= 0"),
    ("head.gamma_max=nan", "a number (inf: no cap)"),
    ("optimizer.weight_decay=inf", "a finite number >= 0"),
    ("schedule.factor=inf", "a finite number > 0"),
    ("optimizer.momentum=inf", "a finite number >= 0"),
    ("schedule.min_lr=inf", "a finite number >= 0"),
    ("optimizer.lr_find.max_lr=inf", "a finite number"),
])
def test_non_finite_values_are_refused_by_validation(override, allowed):
    from latentgeo.config import ConfigError, check_values, to_typed

    with pytest.raises(ConfigError, match=re.escape(f"{override.split('=')[0]}=")) as raised:
        check_values(to_typed(compose_cfg([*QUICK, override])))
    assert str(raised.value).endswith(allowed)


HOLDER = """
import json, sys
from latentgeo.records import RunDir
run = RunDir(sys.argv[1])
with run.owned("train"):  # another driver running this job, its record already ok
    (run.dir / "status.json").write_text(json.dumps({"state": "ok", "epoch": 1}))
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_job_another_driver_runs_is_not_counted_ok_and_no_traceback(tmp_path):
    out = tmp_path / "out"
    job_1 = out / "sweeps" / "same-id" / "1"
    job_1.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(job_1)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # blocks until the lock is held
        result = run_cli(["-m", *QUICK, "trainer.seed=1,2,3"],
                         env={"LATENTGEO_OUTPUT": str(out), "LATENTGEO_SWEEP_ID": "same-id"})
    finally:
        holder.communicate("")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: {job_1} is in use: pid {holder.pid}" in result.stderr
    assert "2 ok, 0 failed, 1 other" in result.stdout, result.stdout
    (job_line,) = [line for line in result.stdout.splitlines() if line.startswith("1 ")]
    assert "not run here" in job_line and "its record says ok" in job_line


# ------------------------------------------------------------ 8. a post-hoc command adds


def test_reinit_from_init_adds_to_what_training_recorded(tmp_path):
    from latentgeo.analysis import reinit

    run_dir = tmp_path / "run"
    train(compose_cfg([*QUICK, "metrics.reinit.when=last"]), run_dir)
    trained = json.loads((run_dir / "reinit.json").read_text())
    assert set(trained["sources"]) == {"init", "rand"}
    assert reinit.main([str(run_dir), "--from", "init", "--device", "cpu"]) == 0
    after = json.loads((run_dir / "reinit.json").read_text())
    assert after["sources"]["rand"] == trained["sources"]["rand"]
    assert after["rand_seed"] == trained["rand_seed"] is not None
    assert after["sources"]["init"] == pytest.approx(trained["sources"]["init"], abs=0)
    summary = RunDir(run_dir).summary()
    assert any(key.startswith("reinit/rand/") for key in summary)


# ------------------------------------------------------------ 9. a run that never learned


def test_a_run_that_never_learned_is_ok_but_says_so(tmp_path, capsys):
    from latentgeo.aggregate import format_runs
    from latentgeo.metrics.chance import chance_bound
    from latentgeo.selection import aggregate

    still = tmp_path / "still"  # lr 1e-9: the weights barely move, accuracy stays at chance
    summary = train(compose_cfg([*QUICK, "optimizer.lr=1e-9"]), still)
    out = capsys.readouterr().out
    assert RunDir(still).state == "ok" and summary["never_learned"] is True
    chance = 13 / 128  # the synthetic test split's most frequent class: 13 of 128 images
    assert summary["chance/test/accuracy"] == pytest.approx(chance, abs=1e-12)
    assert summary["chance/test/bound"] == pytest.approx(
        chance + 3 * (chance * (1 - chance) / 128) ** 0.5, abs=1e-12)
    assert summary["test/accuracy"] <= summary["chance/test/bound"]
    (line,) = [line for line in out.splitlines() if "never learned" in line]
    assert line.startswith("warning: never learned: final test accuracy")
    assert RunDir(still).reason.startswith("never learned")

    learned = tmp_path / "learned"  # TINY's two epochs at lr 1e-2 reach ≈ 0.6
    summary = train(compose_cfg([*QUICK, "trainer.epochs=2"]), learned)
    assert summary["never_learned"] is False and RunDir(learned).reason is None
    assert summary["test/accuracy"] > chance_bound(chance, 128) + 0.1
    assert "never learned" not in capsys.readouterr().out

    listing = module_cli("latentgeo.runs", [str(tmp_path)]).stdout.splitlines()
    assert "never learned" in next(line for line in listing if line.startswith("still"))
    assert "never learned" not in next(line for line in listing if line.startswith("learned"))
    text = format_runs(aggregate([RunDir(still), RunDir(learned)]))
    assert "never learned" in next(line for line in text.splitlines() if "still" in line)


@pytest.mark.parametrize("sweep_id", ["../../escape", "..", ".hidden"])
def test_a_sweep_id_never_puts_a_sweep_outside_sweeps_or_hides_it(sweep_id, tmp_path):
    out = tmp_path / "deep" / "out"
    result = run_cli(["-m", *QUICK], env={"LATENTGEO_OUTPUT": str(out),
                                          "LATENTGEO_SWEEP_ID": sweep_id})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: LATENTGEO_SWEEP_ID={sweep_id!r} is not allowed: letters, digits, _ . - (not "
        "starting with . or -), as a sweep prints it"], result.stderr
    assert not list(tmp_path.rglob("*"))  # nothing written, inside out/ or outside it
