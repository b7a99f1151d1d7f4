"""``python -m latentgeo.evaluate``: any checkpoint, the run's own families or overridden ones,
the run's final numbers reproduced exactly, the training record left untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from latentgeo import evaluate
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import REPO, TINY, compose_cfg

# values of an epoch that evaluation cannot (and must not) reproduce: training-loop state
TRAINING_ONLY = ("lr", "gamma", "step", "train/running_loss", "train/running_accuracy")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    cfg = compose_cfg(TINY + ["trainer.epochs=2", "trainer.snapshot_epochs=[1]",
                              "metrics.perturbation.samples=16", "trainer.deterministic=true",
                              "metrics.every=2"])
    train(cfg, run_dir)
    return run_dir


def test_last_with_the_runs_own_families_reproduces_its_final_values_exactly(trained):
    record = {name: digest(trained / name) for name in ("metrics.jsonl", "status.json",
                                                         "config.yaml")}
    summary = RunDir(trained).summary()
    assert evaluate.main([str(trained)]) == 0
    final = RunDir(trained).events()[-1]
    values = RunDir(trained).evaluations()["last"]
    assert values["checkpoint"] == "last" and values["epoch"] == final["epoch"] == 2
    compared = [k for k in final if k not in TRAINING_ONLY and not k.startswith("time/")]
    assert len(compared) > 30 and "test/perturbation/score" in compared
    assert {k: values[k] for k in compared} == {k: final[k] for k in compared}
    assert {name: digest(trained / name) for name in record} == record  # record untouched
    # the summary keeps its keys and values and gains the evaluation as eval/last/...
    after = RunDir(trained).summary()
    assert {k: after[k] for k in summary} == summary
    assert {k for k in after if k not in summary} == {f"eval/last/{k}" for k in values
                                                      if k != "checkpoint"}
    assert after["eval/last/test/accuracy"] == final["test/accuracy"]


def test_all_checkpoints_and_overridden_families(trained, capsys):
    assert evaluate.main([str(trained), "checkpoint=all", "metrics=all",
                          "metrics.perturbation.when=off"]) == 0
    evaluations = RunDir(trained).evaluations()
    assert sorted(evaluations) == ["epoch_0001", "init", "last"]
    assert [evaluations[c]["epoch"] for c in ("init", "epoch_0001", "last")] == [0, 1, 2]
    init = evaluations["init"]
    assert "test/nc1/layer4" in init and "test/perturbation/score" not in init
    assert init["init_distance/backbone.stem.0/l2"] == 0.0  # init is its own init
    assert evaluations["epoch_0001"]["init_distance/backbone.stem.0/l2"] > 0
    # metrics=all stores x_pen: the files go to eval/<checkpoint>/, not into the record
    assert (trained / "eval" / "init" / "penultimate.npz").is_file()
    assert not (trained / "penultimate.npz").exists()
    assert "per-layer values" in capsys.readouterr().out


def test_a_missing_checkpoint_or_a_fixed_group_is_a_clear_error(trained, capsys):
    assert evaluate.main([str(trained), "checkpoint=epoch_0007"]) == 2
    err = capsys.readouterr().err
    assert "epoch_0007" in err and "['init', 'epoch_0001', 'last']" in err
    assert evaluate.main([str(trained), "model=mlp"]) == 2
    assert "fixed by the checkpoint" in capsys.readouterr().err
    assert evaluate.main([str(trained), "metrics.nc1.when=sometimes"]) == 2
    assert "metrics.nc1.when='sometimes'" in capsys.readouterr().err
    assert evaluate.main([str(trained), "metrics.colapse.when=every"]) == 2
    assert "metrics.colapse is not a key of the run's config; metrics has [" in \
        capsys.readouterr().err
    assert evaluate.main([str(trained.parent / "nothing")]) == 2


def test_a_run_still_going_is_evaluated_and_its_summary_left_alone(trained, capsys):
    """Another process owns the run dir (a training going on): evaluate reads its checkpoint,
    writes eval/, and leaves summary.json to the run."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from latentgeo.records import RunDir; "
         "owned = RunDir(sys.argv[1]).owned('train'); owned.__enter__(); print('held', "
         "flush=True); time.sleep(120)", str(trained)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert RunDir(trained).has_live_owner()
        before = digest(trained / "summary.json")
        assert evaluate.main([str(trained), "checkpoint=epoch_0001"]) == 0
        out = capsys.readouterr().out
        assert "summary not changed (the results are in eval/)" in out and "is in use" in out
        assert digest(trained / "summary.json") == before
        assert RunDir(trained).evaluations()["epoch_0001"]["epoch"] == 1
    finally:
        holder.kill()
        holder.wait()
