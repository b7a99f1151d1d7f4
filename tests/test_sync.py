"""Parallel `wandb sync` of a sweep with the process call stubbed: what is synced, skipped
(wandb's .wandb.synced marker, running runs), how many processes run at once, failures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from latentgeo import sync


def make_offline_run(run_dir: Path, run_id: str, stamp: str = "20250101_000000",
                     synced: bool = False, state: str = "ok") -> Path:
    offline = run_dir / "wandb" / f"offline-run-{stamp}-{run_id}"
    (offline / "files").mkdir(parents=True)
    wandb_file = offline / f"run-{run_id}.wandb"
    wandb_file.write_bytes(b":W&B\x00")
    if synced:
        (offline / f"run-{run_id}.wandb.synced").write_text("")
    latest = run_dir / "wandb" / "latest-run"
    if latest.is_symlink():
        latest.unlink()
    latest.symlink_to(offline.name)  # wandb keeps this link: must not be synced twice
    (run_dir / "status.json").write_text(json.dumps({"state": state, "reason": None}))
    return offline


class FakeWandb:
    """Stands in for the `wandb sync` process: writes the marker like wandb-core, or fails."""

    def __init__(self, fail: dict[str, tuple[int, bool]] | None = None,
                 barrier: threading.Barrier | None = None, delay: float = 0.0) -> None:
        self.fail = fail or {}  # run id -> (return code, write the marker anyway)
        self.barrier = barrier
        self.delay = delay
        self.commands: list[list[str]] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def __call__(self, command: list[str], timeout: float | None = None,
                 **kwargs: object) -> subprocess.CompletedProcess:
        assert command[:4] == [sys.executable, "-m", "wandb", "sync"]
        with self.lock:
            self.commands.append(command)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.barrier is not None:
                self.barrier.wait()  # raises BrokenBarrierError unless enough calls overlap
            time.sleep(self.delay)
            paths = [Path(arg) for arg in command[4:] if not arg.startswith("--")]
            code, mark = 0, True
            for path in paths:
                run_id = path.name.rsplit("-", 1)[-1]
                code, mark = self.fail.get(run_id, (code, mark))
            if mark:
                for path in paths:
                    for wandb_file in path.glob("*.wandb"):
                        wandb_file.with_name(wandb_file.name + ".synced").write_text("")
            stderr = "Error: No API key configured." if code else ""
            return subprocess.CompletedProcess(command, code, stdout="", stderr=stderr)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "sweep"
    make_offline_run(sweep_dir / "0", "aaa0", synced=True)
    for job in range(1, 7):
        make_offline_run(sweep_dir / str(job), f"run{job}")
    make_offline_run(sweep_dir / "7", "busy7", state="running")
    # a resumed run: two offline dirs of the same run, the first already uploaded
    make_offline_run(sweep_dir / "8", "res8", stamp="20250101_000000", synced=True)
    make_offline_run(sweep_dir / "8", "res8", stamp="20250102_000000")
    (sweep_dir / "9").mkdir()  # a run dir without wandb files (wandb disabled)
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    return sweep_dir


def synced_ids(fake: FakeWandb) -> list[str]:
    return sorted(Path(c[-1]).name.rsplit("-", 1)[-1] for c in fake.commands)


def test_finds_offline_runs_and_what_is_pending(sweep: Path) -> None:
    targets = {t.run: t for t in sync.find_targets(sweep)}
    assert list(targets) == [str(job) for job in range(9)]
    assert targets["0"].pending == []
    assert [d.name for d in targets["8"].offline_dirs] == [
        "offline-run-20250101_000000-res8", "offline-run-20250102_000000-res8"]
    assert [d.name for d in targets["8"].pending] == ["offline-run-20250102_000000-res8"]
    assert targets["7"].state == "running"
    assert all(len(t.offline_dirs) == 1 for name, t in targets.items() if name != "8")


def test_syncs_pending_runs_and_skips_synced_and_running(sweep: Path) -> None:
    fake = FakeWandb()
    results = sync.sync_runs(sync.find_targets(sweep), jobs=2, runner=fake)
    status = {r.run: r.status for r in results}
    assert status == {"0": "skipped", "1": "synced", "2": "synced", "3": "synced",
                      "4": "synced", "5": "synced", "6": "synced", "7": "skipped",
                      "8": "synced"}
    assert synced_ids(fake) == ["res8", "run1", "run2", "run3", "run4", "run5", "run6"]
    resumed = next(c for c in fake.commands if "res8" in c[-1])
    assert resumed[4:] == [str(sweep / "8" / "wandb" / "offline-run-20250102_000000-res8")]
    assert "running" in next(r.detail for r in results if r.run == "7")
    # a second pass finds wandb's markers and starts no process
    again = FakeWandb()
    results = sync.sync_runs(sync.find_targets(sweep), jobs=2, runner=again)
    assert again.commands == []
    assert {r.status for r in results} == {"skipped"}


def test_jobs_processes_run_at_once(sweep: Path) -> None:
    targets = [t for t in sync.find_targets(sweep) if t.run in {"1", "2", "3", "4", "5", "6"}]
    fake = FakeWandb(barrier=threading.Barrier(3, timeout=300))  # a bound, no speed
    results = sync.sync_runs(targets, jobs=3, runner=fake)
    assert [r.status for r in results] == ["synced"] * 6
    assert fake.max_active == 3  # 3 overlapped (the barrier needs it), never more


def test_one_job_runs_one_process_at_a_time(sweep: Path) -> None:
    targets = [t for t in sync.find_targets(sweep) if t.run in {"1", "2", "3", "4"}]
    fake = FakeWandb(delay=0.02)
    sync.sync_runs(targets, jobs=1, runner=fake)
    assert fake.max_active == 1 and len(fake.commands) == 4


def test_failures_are_reported_per_run(sweep: Path) -> None:
    # run2: wandb exits 1; run3: exits 0 but writes no marker (wandb prints some errors only)
    fake = FakeWandb(fail={"run2": (1, False), "run3": (0, False)})
    results = {r.run: r for r in sync.sync_runs(sync.find_targets(sweep), jobs=4, runner=fake)}
    assert results["2"].status == "failed"
    assert "exited 1" in results["2"].detail and "No API key" in results["2"].detail
    assert results["3"].status == "failed" and "no *.wandb.synced marker" in results["3"].detail
    assert results["4"].status == "synced"
    assert not sync.is_synced(sweep / "2" / "wandb" / "offline-run-20250101_000000-run2")


def test_timeout_and_missing_wandb_file(sweep: Path) -> None:
    def hangs(command: list[str], timeout: float | None) -> subprocess.CompletedProcess:
        raise subprocess.TimeoutExpired(command, timeout or 0)

    target = next(t for t in sync.find_targets(sweep) if t.run == "1")
    result = sync.sync_target(target, runner=hangs, timeout=5)
    assert (result.status, result.detail) == ("failed", "wandb sync timed out after 5 s")
    next(target.pending[0].glob("*.wandb")).unlink()
    result = sync.sync_target(target, runner=FakeWandb())
    assert result.status == "failed" and "no .wandb file" in result.detail


def test_cli_exit_codes_with_subprocess_stubbed(sweep: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeWandb(fail={"run5": (1, False)})
    monkeypatch.setattr(sync.subprocess, "run", fake)
    assert sync.main([str(sweep), "--dry-run"]) == 0
    assert fake.commands == []
    assert "0: skip (already synced)" in capsys.readouterr().out

    assert sync.main([str(sweep), "--jobs", "3", "--project", "p"]) == 1
    out, err = capsys.readouterr()
    assert "6 synced, 2 skipped, 1 failed" in out
    assert "FAILED 5: wandb sync exited 1" in err
    assert all(c[4:6] == ["--project", "p"] for c in fake.commands)

    retry = FakeWandb()
    monkeypatch.setattr(sync.subprocess, "run", retry)
    assert sync.main([str(sweep), "--include-running"]) == 0  # only 5 and 7 are left
    assert synced_ids(retry) == ["busy7", "run5"]
    assert "2 synced, 7 skipped, 0 failed" in capsys.readouterr().out

    forced = FakeWandb()
    monkeypatch.setattr(sync.subprocess, "run", forced)
    assert sync.main([str(sweep / "8"), "--include-synced"]) == 0
    (command,) = forced.commands
    assert "--include-synced" in command and len(command) == 7  # both offline dirs

    assert sync.main([str(sweep / "missing")]) == 2
    assert sync.main([str(sweep), "--jobs", "0"]) == 2
    assert sync.main([str(sweep / "9")]) == 0
    assert "no offline wandb runs" in capsys.readouterr().out
