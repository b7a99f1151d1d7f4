"""The debug presets, each run for real: fast (a full-width ResNet18 in seconds), overfit (the
loss goes to ~0 on a fixed batch), profile (a torch profiler trace in the run dir)."""

from __future__ import annotations

import json
import time

from latentgeo.records import RunDir
from tests.conftest import run_cli

SMALL = ["dataset=digits", "dataset.image_size=16", "dataset.channels=1", "model=mlp",
         "model.widths=[64]", "trainer.num_threads=1", "trainer.progress=false"]


def only_debug_run(outputs) -> RunDir:
    (path,) = (outputs / "debug").iterdir()
    return RunDir(path)


def test_debug_fast_runs_a_full_width_resnet18_in_seconds_in_a_throwaway_dir(tmp_path):
    tic = time.perf_counter()
    result = run_cli(["debug=fast", "model=resnet18", "dataset=synthetic",
                      "trainer.num_threads=1"], env={"LATENTGEO_OUTPUT": str(tmp_path)})
    seconds = time.perf_counter() - tic
    assert result.returncode == 0, result.stderr[-2000:]
    run = only_debug_run(tmp_path)
    assert not (tmp_path / "runs").exists()  # never a real run's dir
    assert run.state == "ok" and [e["epoch"] for e in run.events()] == [0, 1]
    assert run.flat_config()["model.width"] is None  # full width (64)
    last = run.events()[-1]
    assert last["step"] == 2 and "test/mahalanobis/auroc" in last  # metrics once, all of them
    print(f"debug=fast resnet18: {seconds:.1f} s wall, epoch {last['time/epoch_s']:.1f} s")


def test_debug_overfit_drives_the_training_loss_to_zero(tmp_path):
    result = run_cli(["debug=overfit", *SMALL, "trainer.epochs=40", "optimizer.lr=3e-3"],
                     env={"LATENTGEO_OUTPUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    events = [e for e in only_debug_run(tmp_path).events() if e["epoch"] > 0]
    assert events[0]["step"] == 2  # two batches an epoch
    assert events[0]["train/running_loss"] > 1.0
    assert events[-1]["train/running_loss"] < 0.05
    assert events[-1]["train/running_accuracy"] == 1.0


def test_debug_profile_writes_a_trace_of_the_first_steps(tmp_path):
    result = run_cli(["debug=profile", *SMALL], env={"LATENTGEO_OUTPUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    run = only_debug_run(tmp_path)
    trace = json.loads((run.artifact("profile") / "trace.json").read_text())
    names = [event.get("name", "") for event in trace["traceEvents"]]
    assert sum(name.startswith("ProfilerStep#") for name in names) == 10
    assert any(name.startswith("aten::addmm") for name in names)  # the MLP's linear layers
