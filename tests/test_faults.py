"""Fault injection on tiny real runs: real signals, real processes, real damaged files.
After each fault the record (status.json, metrics.jsonl, summary.json) must say what happened,
and the documented recovery must work."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from latentgeo.checks import validate
from latentgeo.config import ConfigError
from latentgeo.data import load_dataset
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import REPO, TINY, Pause, compose_cfg, run_cli

# a deterministic run that the tests hold at exact points (Pause): never raced by speed
EPOCHS = 5
SLOW = [*TINY, f"trainer.epochs={EPOCHS}", "dataset.train_size=256", "metrics=none",
        "trainer.deterministic=true", "trainer.num_threads=1"]


def start_cli(args: list[str], out: Path, pause: Pause | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LATENTGEO_OUTPUT": str(out),
           **(pause.env if pause else {})}
    # SIGINT as at a terminal: a shell without job control starts background commands with
    # SIGINT ignored, and a child inherits that (the run would never see the test's Ctrl-C)
    return subprocess.Popen([sys.executable, "-m", "latentgeo.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def held_at(point: str, tmp_path: Path, args: list[str] = SLOW
            ) -> tuple[subprocess.Popen, Pause]:
    """A CLI run started and waiting at ``point`` (e.g. ``epoch2.checkpoint``)."""
    pause = Pause(tmp_path / "pause", point)
    process = start_cli(args, tmp_path, pause)
    pause.wait(point, process)
    return process, pause


def run_dir_of(out: Path) -> RunDir:
    (path,) = (out / "runs").iterdir()
    return RunDir(path)


def epochs_of(run: RunDir) -> list[int]:
    return [e["epoch"] for e in RunDir(run.dir).events()]


def checkpointed_epoch(run: RunDir) -> int:
    status = RunDir(run.dir).status() or {}
    return int(status.get("epoch") or 0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The events of the SLOW run without any fault: what every recovery must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference")
    train(compose_cfg(SLOW), run_dir)  # in this process: the same train the CLI calls
    return strip_times(RunDir(run_dir).events())


def strip_times(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if not k.startswith("time/")} for e in events]


def rerun(run: RunDir, args: list[str] = SLOW) -> RunDir:
    """The documented recovery, "rerun the same command", in this process: the same
    ``train`` the CLI calls, into the same run dir (the CLI's exit codes, and that the same
    command finds the same run dir, are tested apart)."""
    train(compose_cfg(args), run.dir)
    return RunDir(run.dir)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_is_recorded_interrupted_and_the_rerun_resumes_to_the_same_numbers(
        signum, code, tmp_path, uninterrupted):
    process, _ = held_at("epoch2.checkpoint", tmp_path)
    process.send_signal(signum)  # ends the wait: the run stops after epoch 2
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    run = run_dir_of(tmp_path)
    status = run.status()
    name = signal.Signals(signum).name
    assert status["state"] == "interrupted" and name in status["reason"]
    assert "rerun the same command to resume" in status["reason"]
    assert f"interrupted by {name}" in stderr
    assert status["epoch"] == 2  # the last complete (checkpointed) epoch
    assert epochs_of(run) == [1, 2]
    rerun(run)
    assert RunDir(run.dir).state == "ok"
    assert strip_times(RunDir(run.dir).events()) == uninterrupted


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    first, pause = held_at("epoch1.checkpoint", tmp_path)  # the first holds the run dir
    second = run_cli(SLOW, env={"LATENTGEO_OUTPUT": str(tmp_path)}, timeout=120)
    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr and "is writing" in second.stderr
    pause.release("epoch1.checkpoint")
    first.communicate(timeout=120)
    assert first.returncode == 0
    run = run_dir_of(tmp_path)
    assert run.state == "ok" and epochs_of(run) == list(range(1, EPOCHS + 1))  # nothing twice


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    cfg = compose_cfg([*TINY, "metrics=none"])
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone"}))
    train(cfg, tmp_path)
    assert RunDir(tmp_path).state == "ok"


def kill_after(tmp_path: Path, epoch: int, args=SLOW) -> RunDir:
    """SIGKILL right after epoch ``epoch``'s checkpoint."""
    process, _ = held_at(f"epoch{epoch}.checkpoint", tmp_path, args)
    process.kill()
    process.communicate(timeout=60)
    return run_dir_of(tmp_path)


def test_a_damaged_last_checkpoint_fails_clearly_with_the_recovery(tmp_path):
    run = kill_after(tmp_path, 1)
    run.last_checkpoint.write_bytes(run.last_checkpoint.read_bytes()[:100])  # truncated
    result = run_cli(SLOW, env={"LATENTGEO_OUTPUT": str(tmp_path)})
    assert result.returncode == 2
    assert "last.pt" in result.stderr and "trainer.resume=false" in result.stderr
    assert "Traceback" not in result.stderr
    status = RunDir(run.dir).status()
    assert status["state"] == "failed" and "trainer.resume=false" in status["reason"]
    assert rerun(run, [*SLOW, "trainer.resume=false"]).state == "ok"


def test_an_unreadable_status_file_does_not_leave_the_run_running(tmp_path):
    run = kill_after(tmp_path, 1)
    run.artifact("status").write_text("{not json")
    assert rerun(run).state == "ok" and epochs_of(run) == list(range(1, EPOCHS + 1))


def test_lost_events_are_restored_from_the_checkpoint_never_ok_with_gaps(tmp_path,
                                                                          uninterrupted):
    run = kill_after(tmp_path, 3)
    run.artifact("metrics").unlink()  # lost between the kill and the rerun
    rerun(run)
    assert strip_times(RunDir(run.dir).events()) == uninterrupted
    status = RunDir(run.dir).status()
    assert "restored" in status.get("repaired", "")
    summary = RunDir(run.dir).summary()
    best = max(uninterrupted, key=lambda e: e.get("test/accuracy", -1))
    assert summary["best_epoch"] == best["epoch"]


def test_events_deleted_while_the_run_goes_on_are_rewritten_at_the_end(tmp_path,
                                                                       uninterrupted):
    process, pause = held_at("epoch2.checkpoint", tmp_path)
    run_dir_of(tmp_path).artifact("metrics").unlink()
    pause.release("epoch2.checkpoint")
    process.communicate(timeout=120)
    assert process.returncode == 0
    run = run_dir_of(tmp_path)
    assert strip_times(run.events()) == uninterrupted
    assert "metrics.jsonl" in run.status()["repaired"]


@pytest.mark.parametrize("kill_point", ["before the first checkpoint",
                                        "between the event and the checkpoint"])
def test_no_event_is_duplicated_after_a_kill(kill_point, tmp_path, uninterrupted):
    args = [*SLOW, "metrics.hyperplanes.when=init+every:1"]  # an epoch-0 event
    if kill_point == "before the first checkpoint":
        process, _ = held_at("epoch0.event", tmp_path, args)
        assert epochs_of(run_dir_of(tmp_path)) == [0]
        process.kill()
        process.communicate(timeout=60)
        run = run_dir_of(tmp_path)
        assert not run.last_checkpoint.exists()
    else:  # epoch 3's event is in metrics.jsonl, its checkpoint is not
        process, _ = held_at("epoch3.event", tmp_path, args)
        process.kill()
        process.communicate(timeout=60)
        run = run_dir_of(tmp_path)
        assert checkpointed_epoch(run) == 2 and epochs_of(run) == [0, 1, 2, 3]
    assert rerun(run, args).state == "ok"
    assert epochs_of(run) == list(range(0, EPOCHS + 1))


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train(compose_cfg([*TINY, "metrics=none", "trainer.epochs=1"]), tmp_path)
    finally:
        os.umask(old)
    for name in ("config.yaml", "status.json", "summary.json", "metrics.jsonl",
                 "checkpoints/last.pt", "checkpoints/init.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_a_refused_rerun_touches_nothing_in_the_run_dir(tmp_path):
    run_dir = tmp_path / "fixed"
    first = run_cli([*TINY, "metrics=none", "trainer.epochs=1", f"hydra.run.dir={run_dir}"])
    assert first.returncode == 0, first.stderr
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*")
              if p.is_file()}
    refused = run_cli([*TINY, "metrics=none", "trainer.epochs=2", f"hydra.run.dir={run_dir}"])
    assert refused.returncode == 2 and "different config" in refused.stderr
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*")
             if p.is_file()}
    assert after == before


def test_concurrent_first_use_of_a_shared_data_root(tmp_path):
    mirror = Path("/usr/share/datasets/fashion-mnist")
    if not mirror.is_dir():
        if os.environ.get("LATENTGEO_REQUIRE_DATA") == "1":
            pytest.fail(f"{mirror} is missing (and LATENTGEO_REQUIRE_DATA=1)")
        pytest.skip(f"{mirror} is missing: apt-get install dataset-fashion-mnist")
    code = ("import sys; from types import SimpleNamespace as N; "
            "from latentgeo.data.datasets import DATASETS; "
            "d = DATASETS['fashion_mnist'](N(name='fashion_mnist', root=sys.argv[1], "
            "download=False)); print(len(d.train.y), len(d.test.y))")
    processes = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "root")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert stdout.split() == ["60000", "10000"]


@pytest.mark.parametrize("overrides, key", [
    (["dataset=synthetic", "dataset.train_size=0"], "dataset.train_size"),
    (["dataset=synthetic", "dataset.image_size=0"], "dataset.image_size"),
    (["dataset=digits", "dataset.train_subset.size_per_class=0"],
     "dataset.train_subset.size_per_class"),
    (["name=" + "x" * 300], "name"),
])
def test_bad_values_are_validated_errors(overrides, key):
    with pytest.raises(ConfigError, match=rf"{key}=.* is not allowed"):
        validate(compose_cfg(overrides))


def test_classes_outside_the_data_set_are_a_validated_error():
    cfg = compose_cfg(["dataset=digits", "dataset.classes=[0,42]"])
    with pytest.raises(ConfigError, match=r"dataset.classes=\[0, 42\] is not allowed: .*0..9"):
        load_dataset(cfg.dataset)


def test_validation_errors_exit_2_without_a_traceback(tmp_path):
    bad = tmp_path / "conf" / "model"
    bad.mkdir(parents=True)
    (bad / "broken.yaml").write_text("name: mlp\nwidths: [1, 2\n")
    for args, needle in (([*TINY, "trainer.device=cuda"], "trainer.device='cuda'"),
                         ([*TINY, "name=" + "y" * 300], "name="),
                         (["--config-dir", str(tmp_path / "conf"), "model=broken"],
                          "broken.yaml")):
        result = run_cli(args, env={"LATENTGEO_OUTPUT": str(tmp_path / "out"),
                                    "CUDA_VISIBLE_DEVICES": ""})
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 6, result.stderr


@pytest.mark.parametrize("overrides, needle", [
    (["model=mlp", "model.width=8"], "model.width=8 is not used by model.name='mlp'"),
    (["model=resnet18", "dataset.num_classes_subsample=11"],
     "dataset.num_classes_subsample: must lie in 2..10"),
])
def test_bad_values_found_while_building_are_config_errors_recorded_failed(overrides, needle,
                                                                           tmp_path):
    """Checks that need the data or the model's builder (train.main prints them as one line,
    exit 2, like every ConfigError) — not a traceback, and the record says failed."""
    cfg = compose_cfg([*[a for a in TINY if not a.startswith("model")], "metrics=none",
                       *overrides])
    with pytest.raises(ConfigError, match=re.escape(needle)):
        train(cfg, tmp_path)
    assert RunDir(tmp_path).state == "failed" and needle in RunDir(tmp_path).reason
