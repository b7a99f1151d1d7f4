"""``hydra/launcher=workstation`` (hydra_plugins/latentgeo_workstation) and the trainer presets
a workstation sweep uses (``trainer=cpu|gpu``).

The sweeps are real: the driver and every job are processes, the runs tiny. GPUs are faked
with ``LATENTGEO_WORKSTATION_GPUS`` or named with ``hydra.launcher.gpus`` (no job here touches a
GPU: device auto falls back to the CPU); every assertion reads the jobs' own records
(``launcher.json`` written by the launcher around each job process, ``status.json`` by the job).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.latentgeo_workstation import workstation_launcher
from hydra_plugins.latentgeo_workstation.workstation_launcher import (
    GPUS_ENV,
    parallel_jobs,
    visible_gpus,
)
from latentgeo.records import read_json, read_metrics
from tests.conftest import REPO, TINY, Pause, compose_cfg, run_cli
from tests.test_launchers import compose_cfg_with_hydra, job_config, only_sweep_dir, summary_line

# one job: a second of training after ~5 s of imports and composition
JOB = [*TINY, "trainer.epochs=1", "dataset.train_size=64", "dataset.test_size=32",
       "metrics=none", "trainer.num_threads=1"]
LRS = [1e-3, 2e-3, 3e-3, 4e-3]


def launcher_records(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.name): read_json(p / "launcher.json")
            for p in sweep_dir.iterdir() if p.name.isdigit() and (p / "launcher.json").is_file()}


def interval(record: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(record["started"]), datetime.fromisoformat(record["ended"])


def overlap(a: dict, b: dict) -> bool:
    (start_a, end_a), (start_b, end_b) = interval(a), interval(b)
    return start_a < end_b and start_b < end_a


def most_at_once(records: list[dict]) -> int:
    """Largest number of jobs whose [started, ended] intervals overlap (ends count first)."""
    events = [(interval(r)[0], 1) for r in records] + [(interval(r)[1], -1) for r in records]
    running = peak = 0
    for _, change in sorted(events):
        running += change
        peak = max(peak, running)
    return peak


def status_epoch(run_dir: Path) -> int:
    """The last epoch status.json records (0 before there is one)."""
    try:
        return read_json(run_dir / "status.json").get("epoch") or 0
    except (OSError, ValueError):
        return 0


def processes_of_sweep(sweep_id: str) -> list[int]:
    """Live processes started for this sweep (they inherit LATENTGEO_SWEEP_ID), from /proc."""
    marker = f"LATENTGEO_SWEEP_ID={sweep_id}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ and state != "Z":
            found.append(int(proc.name))
    return found


# ----------------------------------------------------------------------------- configuration


def test_devices_come_from_the_config_then_the_fake_count_then_cuda_visible_devices():
    assert visible_gpus([0, 3], {GPUS_ENV: "2"}) == (["0", "3"], "hydra.launcher.gpus")
    assert visible_gpus([], {GPUS_ENV: "2"})[0] == []  # explicitly none: CPU jobs
    assert visible_gpus(None, {GPUS_ENV: "2", "CUDA_VISIBLE_DEVICES": "5"})[0] == ["0", "1"]
    assert visible_gpus(None, {GPUS_ENV: "0", "CUDA_VISIBLE_DEVICES": "5"})[0] == []
    assert visible_gpus(None, {"CUDA_VISIBLE_DEVICES": "2, 5"})[0] == ["2", "5"]
    assert visible_gpus(None, {"CUDA_VISIBLE_DEVICES": "4,-1,6"})[0] == ["4"]  # as CUDA reads it
    assert visible_gpus(None, {"CUDA_VISIBLE_DEVICES": ""})[0] == []
    with pytest.raises(ValueError, match=f"{GPUS_ENV}='two' is not allowed"):
        visible_gpus(None, {GPUS_ENV: "two"})


@pytest.mark.parametrize(("gpus", "per_gpu", "max_parallel", "threads", "cpus", "expected"), [
    (2, 1, None, 1, 16, 2),    # one job per GPU, whatever the cores
    (4, 1, 2, 1, 16, 2),       # max_parallel caps it
    (2, 1, 8, 1, 16, 2),       # ... but a job needs a device: never more than the slots
    (2, 3, None, 1, 16, 6),    # jobs_per_gpu
    (0, 1, None, 1, 16, 16),   # CPU: cores // threads
    (0, 1, None, 4, 16, 4),
    (0, 1, None, 3, 16, 5),
    (0, 1, None, 32, 16, 1),   # at least one
    (0, 1, 3, 4, 16, 3),       # CPU: max_parallel decides
])
def test_jobs_at_once(gpus, per_gpu, max_parallel, threads, cpus, expected):
    assert parallel_jobs(gpus, per_gpu, max_parallel, threads, cpus) == expected


def test_workstation_launcher_composes_typed_and_instantiates():
    cfg = compose_cfg_with_hydra(["hydra/launcher=workstation", "hydra.launcher.gpus=[0,3]",
                                  "hydra.launcher.max_parallel=1"])
    launcher = instantiate(cfg.hydra.launcher)
    # the module's attribute, not a name imported earlier: Hydra's plugin scan re-executes it
    assert isinstance(launcher, workstation_launcher.WorkstationLauncher)
    assert (launcher.gpus, launcher.max_parallel, launcher.jobs_per_gpu) == (["0", "3"], 1, 1)
    with pytest.raises(Exception, match="max_paralel"):  # a typo fails at composition
        compose_cfg_with_hydra(["hydra/launcher=workstation", "hydra.launcher.max_paralel=1"])
    cfg = compose_cfg_with_hydra(["hydra/launcher=workstation", "hydra.launcher.max_parallel=0"])
    with pytest.raises(Exception, match="hydra.launcher.max_parallel=0 is not allowed"):
        instantiate(cfg.hydra.launcher)


def test_trainer_presets_extend_default_for_cpu_and_gpu():
    default, cpu, gpu = (OmegaConf.to_container(compose_cfg([f"trainer={name}"]).trainer)
                         for name in ("default", "cpu", "gpu"))
    switches = ("device", "precision", "channels_last", "compile")
    assert {k: cpu[k] for k in switches} == {
        "device": "cpu", "precision": "32", "channels_last": False, "compile": "false"}
    assert {k: gpu[k] for k in switches} == {
        "device": "cuda", "precision": "bf16", "channels_last": True, "compile": "default"}
    for preset in (cpu, gpu):  # everything else is default.yaml's (BE: 800 epochs, batch 128)
        assert {k: v for k, v in preset.items() if k not in switches} == {
            k: v for k, v in default.items() if k not in switches}
    assert (default["epochs"], default["batch_size"]) == (800, 128)
    # the command line and experiments still override a preset
    cfg = compose_cfg(["trainer=gpu", "trainer.precision=32", "experiment=demo"])
    assert (cfg.trainer.precision, cfg.trainer.compile, cfg.trainer.epochs) == ("32", "default",
                                                                                200)


# ----------------------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_four_jobs_on_two_gpus_run_two_at_a_time_on_disjoint_devices(tmp_path):
    outputs = tmp_path / "out"
    result = run_cli(["-m", "hydra/launcher=workstation", *JOB,
                      "optimizer.lr=" + ",".join(map(str, LRS))],
                     env={"LATENTGEO_OUTPUT": str(outputs), GPUS_ENV: "2"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.rstrip().splitlines()[-2] == summary_line(len(LRS), 0, 0)
    sweep_dir = only_sweep_dir(outputs)
    records = launcher_records(sweep_dir)
    jobs = range(len(LRS))
    assert sorted(records) == list(jobs)
    assert [read_json(sweep_dir / str(n) / "status.json")["state"] for n in jobs] == ["ok"] * 4
    assert [job_config(sweep_dir / str(n))["optimizer"]["lr"] for n in jobs] == LRS
    for number, record in records.items():
        assert (record["job"], record["returncode"], record["state"]) == (number, 0, "ok")
        assert record["run_dir"] == str(sweep_dir / str(number))
    assert {r["cuda_visible_devices"] for r in records.values()} == {"0", "1"}  # both used
    pairs = [(a, b) for a in records.values() for b in records.values()
             if a["job"] < b["job"] and overlap(a, b)]
    assert pairs, "no two jobs ever ran at once"
    for a, b in pairs:
        assert a["cuda_visible_devices"] != b["cuda_visible_devices"], (a, b)
    assert most_at_once(list(records.values())) == 2
    # as in any multirun job: the wandb group is the sweep id
    assert {job_config(sweep_dir / str(n))["logger"]["group"] for n in jobs} == {
        sweep_dir.name}


@pytest.mark.slow
def test_failing_job_fails_the_driver_and_gives_its_gpu_to_the_next_job(tmp_path):
    # one GPU, so the jobs run in turn on it; job 0: P=3 < log2(10 classes) composes, starts,
    # then fails in the job (ConfigError)
    outputs = tmp_path / "out"
    result = run_cli(["-m", "hydra/launcher=workstation", "hydra.launcher.gpus=[3]", *JOB,
                      "head.penultimate_nodes=3,6"],
                     env={"LATENTGEO_OUTPUT": str(outputs)})
    assert result.returncode == 1
    assert result.stdout.rstrip().splitlines()[-2] == summary_line(1, 1, 0)
    sweep_dir = only_sweep_dir(outputs)
    failed, ok = (read_json(sweep_dir / str(n) / "status.json") for n in range(2))
    assert failed["state"] == "failed" and "head.penultimate_nodes=3" in failed["reason"]
    assert ok["state"] == "ok"
    records = launcher_records(sweep_dir)
    assert [records[n]["cuda_visible_devices"] for n in range(2)] == ["3", "3"]
    assert records[0]["returncode"] != 0 and records[0]["state"] == "failed"
    # the device came back when job 0 failed: job 1 got it afterwards and finished ok
    assert interval(records[0])[1] <= interval(records[1])[0]
    assert (records[1]["returncode"], records[1]["state"]) == (0, "ok")
    assert "#0 failed" in result.stdout and "ConfigError" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stopped_driver_stops_its_jobs_each_records_itself_and_the_sweep_resumes(tmp_path):
    outputs = tmp_path / "out"
    sweep_id = f"workstation-stop-{uuid.uuid4().hex[:6]}"
    # 4 (fake) GPUs but max_parallel=2; each job holds after its first epoch (Pause) until
    # the driver is stopped, so both are mid-run when the signal comes, however fast they are
    args = ["-m", "hydra/launcher=workstation", "hydra.launcher.max_parallel=2", *JOB,
            "trainer.epochs=4", "optimizer.lr=1e-3,2e-3,3e-3"]
    pause = Pause(tmp_path / "pause", "epoch1.checkpoint")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LATENTGEO_OUTPUT": str(outputs),
           "LATENTGEO_SWEEP_ID": sweep_id, GPUS_ENV: "4", **pause.env}
    sweep_dir = outputs / "sweeps" / sweep_id
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "latentgeo.train", *args], cwd=REPO,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            pause.wait("epoch1.checkpoint", driver, count=2)  # both jobs hold there
            assert not (sweep_dir / "2").exists()  # max_parallel=2 although 4 GPUs are free
            driver.send_signal(signal.SIGTERM)
            returncode = driver.wait(timeout=60)
        finally:  # a failed assertion must not leave the sweep running (its jobs die with it)
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    output = (tmp_path / "driver.log").read_text()
    assert returncode == 128 + signal.SIGTERM, output[-3000:]
    assert processes_of_sweep(sweep_id) == []  # no job (nor a child of one) outlived it
    records = launcher_records(sweep_dir)
    assert sorted(records) == [0, 1] and not (sweep_dir / "2").exists()
    for number in (0, 1):
        status = read_json(sweep_dir / str(number) / "status.json")
        assert status["state"] == "interrupted" and "SIGTERM" in status["reason"], status
        assert status["epoch"] == 1
        assert (records[number]["stopped_by"], records[number]["state"]) == (
            "SIGTERM", "interrupted")
        assert records[number]["ended"] is not None and records[number]["returncode"] != 0
    assert output.rstrip().splitlines()[-2] == summary_line(0, 0, 3)  # the summary still prints

    # re-entered with the same id and the grid narrowed to the two stopped jobs (job numbers
    # follow the grid's order): they resume from their checkpoints and finish
    again = run_cli([*args[:-1], "optimizer.lr=1e-3,2e-3"],
                    env={"LATENTGEO_OUTPUT": str(outputs), "LATENTGEO_SWEEP_ID": sweep_id,
                         GPUS_ENV: "4"})
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.rstrip().splitlines()[-2] == summary_line(2, 0, 0)
    for number in (0, 1):
        status = read_json(sweep_dir / str(number) / "status.json")
        assert (status["state"], status["epoch"]) == ("ok", 4)
        assert "resuming" in (sweep_dir / str(number) / "job.log").read_text()
        assert [e["epoch"] for e in read_metrics(sweep_dir / str(number) / "metrics.jsonl")
                if "time/epoch_s" in e] == list(range(1, 5))  # each epoch once
