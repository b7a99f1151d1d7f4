"""A full disk (issue #26, case 1): a run whose output lives on a small tmpfs that fills up ends
``failed`` with the reason, says it in one line, and resumes once space is freed. The disk is
filled at a known point (before the run, or from the checkpoint call of a given epoch), never
by timing. Needs root to mount a tmpfs; skipped with the reason otherwise."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentgeo import engine
from latentgeo.records import RunDir, RunFailed
from latentgeo.train import train
from tests.conftest import REPO, TINY, compose_cfg, run_cli

ARGS = [*TINY, "metrics=none", "trainer.num_threads=1", "trainer.deterministic=true"]


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 8 MiB at ``tmp_path/disk`` (a run of ARGS needs ≈ 3.5 MiB at most)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write ``disk/filler`` until the disk is full, or until ``leave`` bytes are left."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing is left to flush on close
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
    if leave:
        with open(filler, "r+b") as f:
            f.truncate(max(filler.stat().st_size - leave, 0))
    return filler


def test_a_disk_filled_mid_run_records_failed_with_the_reason_and_the_rerun_resumes(
        small_disk, monkeypatch, capsys):
    run_dir = small_disk / "run"
    real_save = engine.save_checkpoint

    def save_on_a_disk_that_fills_at_epoch_2(path, obj):
        if Path(path).name == "last.pt" and obj["epoch"] == 2:
            fill(small_disk)
        real_save(path, obj)

    monkeypatch.setattr(engine, "save_checkpoint", save_on_a_disk_that_fills_at_epoch_2)
    cfg = compose_cfg([*ARGS, "trainer.epochs=3"])
    with pytest.raises(RunFailed, match="no space left on device while writing "
                                        "checkpoints/last.pt"):
        train(cfg, run_dir)
    run = RunDir(run_dir)
    assert run.state == "failed" and run.epoch == 1
    assert run.reason.startswith("no space left on device while writing checkpoints/last.pt; "
                                 "free space and rerun")
    assert not list(run.checkpoints.glob(".*.tmp")), "a temp file was left on the full disk"

    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    (small_disk / "filler").unlink()
    summary = train(cfg, run_dir)
    assert f"resuming {run_dir} from epoch 1" in capsys.readouterr().out
    run = RunDir(run_dir)
    assert run.state == "ok" and summary["epochs"] == 3
    assert [e["epoch"] for e in run.events()] == [1, 2, 3]  # metrics=none: no epoch-0 event


def test_a_full_disk_through_the_command_line_is_one_line_exit_1(small_disk):
    out = small_disk / "out"
    fill(small_disk, leave=600 * 1024)  # the record's small files fit; init.pt (≈ 750 kB) does not
    result = run_cli([*ARGS, "trainer.epochs=1"], env={"LATENTGEO_OUTPUT": str(out)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: no space left on device while writing checkpoints/init.pt; free space and "
        "rerun the same command to resume from the last complete epoch"], result.stderr
    (run_dir,) = (out / "runs").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "checkpoints/init.pt" in status["reason"]


def test_a_disk_too_full_for_status_json_says_so_in_one_line(small_disk):
    out = small_disk / "out"
    fill(small_disk)
    result = run_cli([*ARGS, "trainer.epochs=1"], env={"LATENTGEO_OUTPUT": str(out)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device while "
                                                   "writing config.yaml"), result.stderr
    assert "not recorded: no space left on device while writing status.json" in lines[0]


def test_evaluate_on_a_full_disk_is_one_line_and_leaves_the_record(small_disk):
    run_dir = small_disk / "run"
    train(compose_cfg([*ARGS, "trainer.epochs=1"]), run_dir)
    summary = (run_dir / "summary.json").read_bytes()
    fill(small_disk)
    result = subprocess.run([sys.executable, "-m", "latentgeo.evaluate", str(run_dir)],
                            cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: no space left on device while writing eval/last.json; the training record "
        "is unchanged"], result.stderr
    assert (run_dir / "summary.json").read_bytes() == summary and RunDir(run_dir).state == "ok"


@pytest.mark.parametrize("module, written", [("latentgeo.aggregate", "aggregate.csv"),
                                             ("latentgeo.report", "report_files/")])
def test_aggregate_and_report_on_a_full_disk_are_one_line_exit_1(module, written, small_disk):
    run_dir = small_disk / "run"
    train(compose_cfg([*ARGS, "trainer.epochs=1"]), run_dir)
    fill(small_disk)
    result = subprocess.run([sys.executable, "-m", module, str(run_dir)], cwd=REPO,
                            capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: no space left on device while writing {written}"), result.stderr
