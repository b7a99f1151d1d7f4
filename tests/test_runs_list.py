"""``python -m latentgeo.runs``: every run under a folder with its state; a killed run (no live
owner of its lock) is shown dead, never running."""

from __future__ import annotations

from latentgeo import runs
from tests.conftest import TINY, run_cli
from tests.test_faults import EPOCHS, held_at


def test_runs_lists_ok_failed_and_killed_runs_with_their_state(tmp_path, capsys):
    out = tmp_path / "outputs"
    assert run_cli([*TINY, "metrics=none", "trainer.epochs=1"],
                   env={"LATENTGEO_OUTPUT": str(out)}).returncode == 0
    assert run_cli([*TINY, "trainer.epochs=0"], env={"LATENTGEO_OUTPUT": str(out)}
                   ).returncode == 2
    killed_out = out / "killed"
    process, _ = held_at("epoch1.checkpoint", killed_out)
    assert runs.main([str(out), "--state", "running"]) == 0
    assert "1 running" in capsys.readouterr().out  # alive: its process holds the lock
    process.kill()
    process.communicate(timeout=60)
    assert runs.main([str(out)]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:-1]}
    states = sorted(row[1] for row in rows.values())
    assert states == ["dead", "failed", "ok"], table
    (ok,) = [row for row in rows.values() if row[1] == "ok"]
    assert ok[2] == "1/1" and 0 <= float(ok[3]) <= 1
    (failed,) = [line for line in table.splitlines() if " failed " in line]
    assert "trainer.epochs=0 is not allowed" in failed
    (dead,) = [line for line in table.splitlines() if " dead " in line]
    assert f"/{EPOCHS}" in dead and "rerun the same command" in dead
    assert table.splitlines()[-1] == "1 dead, 1 failed, 1 ok"
    assert runs.main([str(out), "--state", "running"]) == 0
    assert "no runs" in capsys.readouterr().out
