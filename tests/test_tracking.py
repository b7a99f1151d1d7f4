"""wandb that reads well, read back from the offline .wandb files (not a mock): run names,
group, job type, tags, the epoch x-axis, no console footer, figures as images, an id that a
resumed, moved run keeps; and a console (and train.log) with one line per epoch."""

from __future__ import annotations

import shutil
import signal

from latentgeo import evaluate
from latentgeo.analysis import reinit
from latentgeo.config import to_typed
from latentgeo.records import RunDir, SweepDir, atomic_write_json
from latentgeo.tracking import display_name, short_number, stored_identity
from tests.conftest import TINY, compose_cfg, run_cli, wandb_history, wandb_records
from tests.test_faults import SLOW, held_at, run_dir_of

WANDB = ["logger=wandb", "logger.mode=offline"]


def test_names_read_like_the_sweep():
    assert short_number(2e-4) == "2e-4" and short_number(1.5e-3) == "1.5e-3"
    assert short_number(0.05) == "0.05"
    assert display_name("bin_enc", 2e-4, 1, ["variant=lin_pen_dropout", "model.width=8",
                                             "dataset=digits", "trainer.seed=1"]) == \
        "bin_enc-lin_pen_dropout-lr2e-4-s1"
    assert display_name("no_pen", 0.01, 0, [], name="demo") == "demo-lr0.01-s0"


def test_a_run_recorded_before_its_name_and_group_were_kept_gets_them_as_training_did(
        tmp_path):
    cfg = to_typed(compose_cfg([*TINY, "optimizer.lr=2e-4", "trainer.seed=1"]))
    job = tmp_path / "20261201-120000-ab12cd" / "3"
    job.mkdir(parents=True)
    atomic_write_json(job / "status.json", {"state": "ok", "wandb_id": "abc",
                                            "overrides": ["variant=lin_pen_dropout"]})
    assert stored_identity(RunDir(job), cfg) == ("abc", "bin_enc-lin_pen_dropout-lr2e-4-s1",
                                                 "20261201-120000-ab12cd")
    single = tmp_path / "runs" / "synthetic-resnet18-bin_enc-1a2b3c4d"
    single.mkdir(parents=True)
    atomic_write_json(single / "status.json", {"state": "ok", "wandb_id": "def",
                                               "wandb_name": "kept", "wandb_group": "g"})
    assert stored_identity(RunDir(single), cfg) == ("def", "kept", "g")


def test_a_sweep_logs_named_grouped_runs_on_an_epoch_axis(tmp_path):
    result = run_cli(["-m", *TINY, *WANDB, "optimizer.lr=1e-2,2e-2", "trainer.seed=1",
                      "metrics=none", "trainer.progress=true"],
                     env={"LATENTGEO_OUTPUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Run summary" not in result.stdout and "Run history" not in result.stdout
    assert "\r" not in result.stdout + result.stderr  # no progress frames off a terminal
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    names = []
    for run in SweepDir(sweep_dir).runs():
        records = wandb_records(run.dir)
        (header,) = [r["run"] for r in records if r.get("type") == "run"]
        names.append(header["display_name"])
        assert header["run_group"] == sweep_dir.name and header["job_type"] == "train"
        assert {"synthetic", "resnet18", "bin_enc"} <= set(header["tags"])
        assert header["run_id"] == run.status()["wandb_id"]
        metrics = [r["metric"] for r in records if r.get("type") == "metric"]
        assert {"glob_name": "*", "step_metric": "epoch"}.items() <= {
            k: v for m in metrics for k, v in m.items()}.items()
        logged = [h for h in wandb_history(run.dir) if "epoch" in h]
        assert [h["epoch"] for h in logged] == [e["epoch"] for e in run.events()]
        lines = run.artifact("log").read_text().splitlines()
        assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2",
                                                                                    "2/2"]
    assert sorted(names) == ["bin_enc-lr0.01-s1", "bin_enc-lr0.02-s1"]


def test_a_resumed_run_in_a_moved_outputs_folder_continues_the_same_wandb_run(tmp_path):
    first = tmp_path / "first"
    process, _ = held_at("epoch1.checkpoint", first, [*SLOW, *WANDB])
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    run_id = run_dir_of(first).status()["wandb_id"]
    moved = tmp_path / "moved"
    shutil.move(str(first), str(moved))
    result = run_cli([*SLOW, *WANDB], env={"LATENTGEO_OUTPUT": str(moved)})
    assert result.returncode == 0, result.stderr[-2000:]
    run = run_dir_of(moved)
    assert run.state == "ok" and run.status()["wandb_id"] == run_id
    ids = {r["run"]["run_id"] for path in sorted((run.dir / "wandb").glob("offline-run-*"))
           for r in wandb_records(run.dir, path) if r.get("type") == "run"}
    assert ids == {run_id}
    assert isinstance(RunDir(run.dir).summary()["test/accuracy"], float)


def test_post_hoc_results_reach_the_wandb_run_and_evaluate_logs_its_own(tmp_path):
    """A ReLU_α run logs the alpha.png it writes as an image; evaluate logs a job_type=evaluate
    run in the training run's group, one row per checkpoint; evaluate and re-init results
    reach the training run's wandb summary (same id, resumed)."""
    result = run_cli([*TINY, *WANDB, "model=cnn3", "model.activation=relu_alpha",
                      "metrics=none", "trainer.epochs=1"], env={"LATENTGEO_OUTPUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "alpha.png").is_file()
    images = [h for h in wandb_history(run_dir) if h.get("figures/alpha._type") == "image-file"]
    assert len(images) == 1
    run = RunDir(run_dir)
    train_id, name, group = (run.status()[k] for k in ("wandb_id", "wandb_name", "wandb_group"))
    assert evaluate.main([str(run_dir), "checkpoint=all"]) == 0
    assert reinit.main([str(run_dir)]) == 0
    logs = {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*")):
        records = wandb_records(run_dir, path)
        (header,) = [r["run"] for r in records if r.get("type") == "run"]
        logs.setdefault(header["run_id"], []).append((header, records))
    assert len(logs) == 2 and len(logs[train_id]) == 3  # training, evaluate's and reinit's
    ((header, records),) = logs[next(i for i in logs if i != train_id)]
    assert header["job_type"] == "evaluate" and header["run_group"] == group
    assert header["display_name"] == f"{name}-eval" and "evaluate" in header["tags"]
    rows = [r["history"]["item"] for r in records if r.get("type") == "history"]
    evaluations = run.evaluations()
    assert [(row["epoch"], row["test/accuracy"]) for row in rows] == [
        (evaluations[c]["epoch"], evaluations[c]["test/accuracy"]) for c in ("init", "last")]
    summary = run.summary()
    pushed = {}
    for _, records in logs[train_id][1:]:
        for r in records:
            if r.get("type") == "summary":
                pushed.update(r["summary"].get("update", {}))
    assert pushed["eval/last/test/accuracy"] == summary["eval/last/test/accuracy"] == \
        evaluations["last"]["test/accuracy"]
    reinit_keys = [k for k in summary if k.startswith("reinit/")]
    assert reinit_keys and all(pushed[k] == summary[k] for k in reinit_keys)
