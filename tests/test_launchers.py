"""Sweeps as users launch them: submitit_local, the sweep id, real Slurm (presets: test_presets).

The Slurm tests (marker ``slurm``) start a single-node Slurm with sweeps/local_slurm/up.sh and
stop it afterwards; they are skipped, with the reason, where that cannot work (not root, Slurm
not installable), unless LATENTGEO_REQUIRE_SLURM=1 turns the skip into a failure (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_module
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict, read_write

import latentgeo.train
from latentgeo import selection
from latentgeo.records import read_json, read_metrics
from latentgeo.sweep_callback import expected_job_count, format_summary, job_states
from tests.conftest import REPO, TINY, Pause, run_cli
from tests.test_cli import comparable_events

LOCAL_SLURM = REPO / "sweeps" / "local_slurm"



def sweep_dirs(outputs: Path) -> list[Path]:
    root = outputs / "sweeps"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def only_sweep_dir(outputs: Path) -> Path:
    (sweep_dir,) = sweep_dirs(outputs)
    return sweep_dir


def job_config(run_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))


def compose_cfg_with_hydra(overrides: list[str]):
    with initialize_config_module("latentgeo.conf", version_base=None):
        return compose("train", overrides=overrides, return_hydra_config=True)


def compose_all(jobs: list[list[str]]) -> list:
    """The job configs of a sweep, composed in one Hydra context (one per job is ~0.4 s)."""
    with initialize_config_module("latentgeo.conf", version_base=None):
        return [compose("train", overrides=overrides) for overrides in jobs]


def summary_line(ok: int, failed: int, other: int) -> str:
    return f"{ok} ok, {failed} failed, {other} other"


# ----------------------------------------------------------------------------- summary callback


def test_job_states_read_status_json_and_count_jobs_that_never_started(tmp_path):
    for number, status in ((0, {"state": "ok", "reason": None}),
                           (1, {"state": "failed", "reason": "DatasetUnavailable: gone\nmore"}),
                           (3, None)):  # 3: a job dir without status.json
        (tmp_path / str(number)).mkdir()
        if status:
            (tmp_path / str(number) / "status.json").write_text(json.dumps(status))
    (tmp_path / ".submitit").mkdir()  # not a job
    rows = job_states(tmp_path, expected=5)  # job 2 and job 4 never got a dir
    assert [(r["job"], r["state"]) for r in rows] == [
        (0, "ok"), (1, "failed"), (2, "missing"), (3, "missing"), (4, "missing")]
    text = format_summary(tmp_path, rows)
    assert text.splitlines()[-2] == summary_line(1, 1, 3)
    assert "DatasetUnavailable: gone" in text and "more" not in text  # first line of the reason
    # re-entered with a smaller grid: job 3's dir is not part of this sweep
    assert [r["job"] for r in job_states(tmp_path, expected=2)] == [0, 1]
    # job count unknown (another sweeper): every job dir
    assert [r["job"] for r in job_states(tmp_path)] == [0, 1, 3]


def test_expected_job_count_follows_the_basic_sweeper_expansion():
    cfg = compose_cfg_with_hydra(["+sweep=binenc_cifar10"])
    assert expected_job_count(cfg) == 7 * 3 * 3
    # a command-line value replaces the preset's list for that key, as in BasicSweeper.sweep
    # (compose() refuses sweep values, so they go where `-m` puts them: hydra.overrides.task)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.overrides.task.extend(["variant=bin_enc,no_pen", "trainer.seed=0"])
    assert expected_job_count(cfg) == 2 * 3 * 1


@pytest.mark.slow
def test_failed_job_fails_the_driver_and_the_summary_still_ends_its_output(tmp_path):
    # P=3 < log2(10 classes): composes, starts, then fails at run time (ConfigError in train)
    outputs = tmp_path / "out"
    result = run_cli(["-m", *TINY, "trainer.epochs=1", "head.penultimate_nodes=6,3"],
                     env={"LATENTGEO_OUTPUT": str(outputs)})
    assert result.returncode == 1
    # Hydra re-raised the job's error before on_multirun_end: the atexit path printed this
    assert result.stdout.rstrip().splitlines()[-2] == summary_line(1, 1, 0)
    sweep_dir = only_sweep_dir(outputs)
    status = read_json(sweep_dir / "1" / "status.json")
    assert status["state"] == "failed" and "head.penultimate_nodes=3" in status["reason"]
    row = next(line for line in result.stdout.splitlines() if line.startswith("1 "))
    assert "failed" in row and "ConfigError: head.penultimate_nodes=3" in row
    assert row.endswith(str(sweep_dir / "1"))


# ----------------------------------------------------------------------------- launcher configs


def sbatch_script(launcher: str, folder: Path) -> tuple[str, int]:
    """The batch script and max_num_timeout submitit makes from ``hydra/launcher=<launcher>``,
    with the parameter translation of hydra-submitit-launcher's ``launch`` (no submission)."""
    cfg = compose_cfg_with_hydra([f"hydra/launcher={launcher}"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    for key in ("_target_", "submitit_folder"):
        params.pop(key)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    inner = executor._executor
    return inner._make_submission_file_text("python -m job", "uid"), inner.max_num_timeout


@pytest.mark.slurm
@pytest.mark.parametrize("launcher", ["slurm", "slurm_a100"])
def test_slurm_launchers_make_sbatch_scripts_that_set_up_the_job(launcher, monkeypatch,
                                                                 tmp_path):
    if shutil.which("srun") is None:  # submitit's Slurm executor refuses to start without it
        _unavailable("srun is not installed: submitit makes sbatch scripts only on a Slurm host")
    for name in ("SBATCH_ACCOUNT", "SBATCH_QOS", "LATENTGEO_SLURM_GRES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SBATCH_PARTITION", "gpu-test")
    monkeypatch.setenv("LATENTGEO_SETUP", "export ACTIVATED=yes")
    script, max_num_timeout = sbatch_script(launcher, tmp_path)
    lines = script.splitlines()
    assert "#SBATCH --partition=gpu-test" in lines and "#SBATCH --signal=USR2@120" in lines
    assert not any(line.startswith(("#SBATCH --account", "#SBATCH --qos")) for line in lines)
    assert ("#SBATCH --gres=gpu:a100:1" in lines) == (launcher == "slurm_a100")
    assert max_num_timeout > 0  # requeued on timeout / preemption: runs resume from last.pt
    setup = script.split("# setup\n")[1].split("\n\n")[0]
    report = 'echo "$OMP_NUM_THREADS $MKL_NUM_THREADS $WANDB__SERVICE_WAIT $ACTIVATED"'
    for cpus, threads in (("8", "8"), (None, "1")):  # no --cpus-per-task: one thread
        env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
        env.update({"SLURM_CPUS_PER_TASK": cpus} if cpus else {})
        out = subprocess.run(["bash", "-c", f"{setup}\n{report}"], env=env, capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.split() == [threads, threads, "300", "yes"], out.stderr

    monkeypatch.setenv("LATENTGEO_SLURM_GRES", "gpu:1")
    monkeypatch.delenv("LATENTGEO_SETUP")
    script, _ = sbatch_script(launcher, tmp_path)
    assert ("#SBATCH --gres=gpu:1" in script) == (launcher == "slurm_a100")
    assert "# LATENTGEO_SETUP is not set" in script  # a comment, not an empty command


def test_local_launcher_shows_every_job_gpu_0():
    launcher = compose_cfg_with_hydra(["hydra/launcher=local"]).hydra.launcher
    assert launcher._target_.endswith("LocalLauncher")
    assert launcher.gpus_per_node == 1  # 0 would set CUDA_VISIBLE_DEVICES="" (CPU only)


# ----------------------------------------------------------------------------- submitit_local


@pytest.mark.slow
def test_submitit_local_lr_sweep_gives_two_ok_runs_and_their_aggregate(tmp_path):
    outputs = tmp_path / "out"
    result = run_cli(["-m", "hydra/launcher=local", *TINY, "optimizer.lr=1e-3,2e-3"],
                     env={"LATENTGEO_OUTPUT": str(outputs)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().splitlines()[-2] == summary_line(2, 0, 0)
    assert result.stdout.count("sweep summary:") == 1  # on_multirun_end, not again at exit
    sweep_dir = only_sweep_dir(outputs)
    assert list((sweep_dir / ".submitit").iterdir())  # the jobs really went through submitit
    runs = [sweep_dir / "0", sweep_dir / "1"]
    assert [read_json(r / "status.json")["state"] for r in runs] == ["ok", "ok"]
    assert [job_config(r)["optimizer"]["lr"] for r in runs] == [1e-3, 2e-3]
    finals = [read_json(r / "summary.json")["test/accuracy"] for r in runs]
    assert [read_metrics(r / "metrics.jsonl")[-1]["test/accuracy"] for r in runs] == finals

    result = selection.aggregate(selection.sweep_runs(sweep_dir), sweep_dir=sweep_dir)
    (variant,) = result.variants  # only the LR differs: one variant, one repeat
    (chosen,) = variant.selected
    best = max(range(2), key=lambda i: (finals[i], -i))  # ties go to the smaller LR
    assert (chosen.run, chosen.lr, chosen.value) == (str(best), [1e-3, 2e-3][best], finals[best])
    assert variant.metrics["test/accuracy"]["mean"] == pytest.approx(finals[best])
    assert variant.metrics["test/accuracy"]["std"] == 0


# ----------------------------------------------------------------------------- sweep id


class _FrozenClock:
    """``datetime`` stand-in whose now() never moves: both sweeps start in the same second."""

    from datetime import datetime as _real

    @classmethod
    def now(cls):
        return cls._real(2030, 1, 2, 3, 4, 5)


def test_two_sweeps_started_in_the_same_second_get_different_dirs(monkeypatch):
    monkeypatch.setattr(latentgeo.config, "datetime", _FrozenClock)
    dirs = []
    for _ in range(2):  # two driver processes: neither inherits an id
        monkeypatch.delenv("LATENTGEO_SWEEP_ID", raising=False)
        cfg = compose_cfg_with_hydra(["hydra/launcher=local"])
        dirs.append(cfg.hydra.sweep.dir)
        # the driver exports the id, so its jobs (and submitit's sbatch) resolve the same dir
        assert os.environ["LATENTGEO_SWEEP_ID"] == Path(dirs[-1]).name
        assert cfg.hydra.launcher.submitit_folder.startswith(dirs[-1])
    assert dirs[0] != dirs[1]
    assert all(Path(d).name.startswith("20300102-030405-") for d in dirs)


@pytest.mark.slow
def test_latentgeo_sweep_id_reenters_a_sweep_resumes_and_skips_finished_jobs(tmp_path):
    outputs = tmp_path / "out"
    sweep_id = "reentry-test"
    args = ["-m", *TINY, "trainer.epochs=3", "dataset.train_size=256", "metrics=none",
            "optimizer.lr=1e-3,2e-3"]
    pause = Pause(tmp_path / "pause", "epoch1.checkpoint")  # job 0 waits there
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LATENTGEO_OUTPUT": str(outputs),
           "LATENTGEO_SWEEP_ID": sweep_id, **pause.env}
    driver = subprocess.Popen([sys.executable, "-m", "latentgeo.train", *args], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    first = outputs / "sweeps" / sweep_id / "0"
    pause.wait("epoch1.checkpoint", driver)
    driver.send_signal(signal.SIGKILL)  # the driver dies mid-sweep (basic launcher: job 0 too)
    driver.wait()
    assert read_json(first / "status.json")["state"] == "running"
    assert not (outputs / "sweeps" / sweep_id / "1").exists()

    again = run_cli(args, env={"LATENTGEO_OUTPUT": str(outputs), "LATENTGEO_SWEEP_ID": sweep_id})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {first} from epoch" in again.stdout
    assert summary_line(2, 0, 0) in again.stdout
    assert sweep_dirs(outputs) == [outputs / "sweeps" / sweep_id]  # no new sweep dir
    assert [e["epoch"] for e in read_metrics(first / "metrics.jsonl")][-1] == 3

    third = run_cli(args, env={"LATENTGEO_OUTPUT": str(outputs), "LATENTGEO_SWEEP_ID": sweep_id})
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("run already complete") == 2
    assert summary_line(2, 0, 0) in third.stdout


# ----------------------------------------------------------------------------- real Slurm


def _unavailable(reason: str) -> None:
    if os.environ.get("LATENTGEO_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason} (and LATENTGEO_REQUIRE_SLURM=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    """A single-node Slurm with accounting (sweeps/local_slurm/up.sh --with-dbd), stopped after
    the module by down.sh (daemons by PID). Yields the environment its clients need."""
    if sys.platform != "linux" or shutil.which("bash") is None:
        _unavailable("the local Slurm scripts need Linux and bash")
    slurm_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "latentgeo-slurm-tests"
    env = {**os.environ, "SLURM_DIR": str(slurm_dir), "SLURM_CONF": str(slurm_dir / "slurm.conf")}
    if os.geteuid() != 0:
        _unavailable("sweeps/local_slurm/up.sh must run as root (it starts slurmctld/slurmd)")
    up = subprocess.run(["bash", str(LOCAL_SLURM / "up.sh"), "--with-dbd"], env=env,
                        capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        installed = any(Path(d, "slurmctld").exists() for d in ("/usr/sbin", "/usr/local/sbin"))
        if not installed:
            _unavailable("slurmctld is not installed and up.sh could not install it: "
                         + up.stderr.strip()[-500:])
        pytest.fail(f"up.sh failed although Slurm is installed:\n{up.stderr[-3000:]}")
    yield env
    subprocess.run(["bash", str(LOCAL_SLURM / "down.sh")], env=env, capture_output=True,
                   timeout=120)


def slurm_args(*extra: str) -> list[str]:
    return ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", *extra]


def sacct_states(env: dict, sweep_dir: Path, jobs: int) -> dict[int, str]:
    """Slurm's own final verdict per array task (job num), from accounting. The driver can
    return before slurmdbd has recorded the ends, so wait for them."""
    array_ids = sorted({p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir()
                        if p.name[0].isdigit()})  # not the .submission_file_*.sh link
    states: dict[int, str] = {}
    for _ in range(1200):  # up to 10 min: a bound for a broken accounting, not a speed
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j",
                              ",".join(array_ids)], env=env, capture_output=True, text=True,
                             timeout=30).stdout
        states = {int(job.split("_")[1]): state.split()[0]
                  for job, _, state in (line.partition("|") for line in out.splitlines())
                  if "_" in job and job.split("_")[1].isdigit()}
        if len(states) == jobs and not {"PENDING", "RUNNING", "COMPLETING"} & set(states.values()):
            break
        time.sleep(0.5)
    return states


@pytest.mark.slurm
def test_slurm_sweep_with_a_failing_job_reports_it_and_fails_the_driver(local_slurm, tmp_path):
    outputs = tmp_path / "out"
    # job 2 asks for CIFAR-10 with no download and no local copy: it starts, then fails
    args = slurm_args("hydra.launcher.timeout_min=5", *TINY, "trainer.epochs=1",
                      "dataset=synthetic,digits,cifar10", "dataset.download=false",
                      "dataset.root=/nonexistent")
    result = run_cli(args, env={**local_slurm, "LATENTGEO_OUTPUT": str(outputs)}, timeout=240)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.rstrip().splitlines()[-2] == summary_line(2, 1, 0)
    sweep_dir = only_sweep_dir(outputs)
    statuses = [read_json(sweep_dir / str(n) / "status.json") for n in range(3)]
    assert [s["state"] for s in statuses] == ["ok", "ok", "failed"]
    assert "looked in /nonexistent" in statuses[2]["reason"]
    # Slurm only sees a job that returned (Hydra caught the error): status.json is the truth
    assert sacct_states(local_slurm, sweep_dir, 3) == {0: "COMPLETED", 1: "COMPLETED",
                                                    2: "COMPLETED"}

    runs = selection.sweep_runs(sweep_dir)
    assert [(r.name, r.state) for r in runs] == [("0", "ok"), ("1", "ok"), ("2", "failed")]
    table = selection.aggregate(runs, sweep_dir=sweep_dir)
    assert [v.variant["dataset.name"] for v in table.variants] == ["synthetic", "digits",
                                                                  "cifar10"]
    assert list(table.variants[2].excluded_runs) == ["2"] and not table.variants[2].selected


def release_requeued_jobs(env: dict) -> int:
    """Make requeued jobs eligible now. Slurm holds a requeued job ~2 minutes (pending with
    reason BeginTime) before it may start again: harmless on a cluster, too slow for a test."""
    out = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], env=env,
                         capture_output=True, text=True, timeout=30).stdout
    held = [line.split()[0] for line in out.splitlines() if line.endswith("BeginTime")]
    for job in held:
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env,
                       capture_output=True, timeout=30)
    return len(held)


@pytest.mark.slurm
def test_slurm_job_past_its_time_limit_is_requeued_and_resumes_to_the_same_result(
        local_slurm, tmp_path):
    # The job holds after epoch 2's checkpoint (Pause) until Slurm's USR2 comes (signal_delay_s
    # before the 1-minute limit; slurmctld checks limits every 30 s): submitit checkpoints and
    # requeues it, and the requeued job resumes from last.pt at epoch 2 — past the held point,
    # so it runs to the end. However fast or slow the machine, the job is interrupted exactly
    # once, at a known epoch.
    run = [*TINY, "dataset.train_size=512", "metrics=none", "metrics.every=1",
           "trainer.deterministic=true", "trainer.num_threads=1",
           "head.dropout_penultimate=true"]
    epochs = 4
    run.append(f"trainer.epochs={epochs}")
    pause = Pause(tmp_path / "pause", "epoch2.checkpoint")
    reference = subprocess.Popen(
        [sys.executable, "-m", "latentgeo.train", *run], cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LATENTGEO_OUTPUT": str(tmp_path / "ref")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    args = slurm_args("hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=15",
                      "hydra.launcher.max_num_timeout=8", *run)
    env = {**local_slurm, "OMP_NUM_THREADS": "1", "LATENTGEO_OUTPUT": str(tmp_path / "out"),
           **pause.env}
    driver = subprocess.Popen([sys.executable, "-m", "latentgeo.train", *args], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    deadline, released = time.time() + 600, 0  # a bound for a broken test, not a speed
    while driver.poll() is None and time.time() < deadline:
        released += release_requeued_jobs(local_slurm)
        time.sleep(1)
    if driver.poll() is None:
        driver.kill()
    output = driver.communicate()[0]
    _, reference_err = reference.communicate(timeout=120)
    assert reference.returncode == 0, reference_err[-3000:]
    assert driver.returncode == 0, output[-5000:]
    assert summary_line(1, 0, 0) in output

    sweep_dir = only_sweep_dir(tmp_path / "out")
    run_dir = sweep_dir / "0"
    status = read_json(run_dir / "status.json")
    assert status["state"] == "ok" and "resumed_at" in status  # it really was interrupted
    assert pause.reached("epoch2.checkpoint") == 1 and released >= 1
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*.out"))
    assert "this job is timed-out" in logs and "Requeued job" in logs
    assert f"resuming {run_dir} from epoch" in logs
    (reference_dir,) = (tmp_path / "ref" / "runs").iterdir()
    assert len(comparable_events(run_dir)) == epochs
    assert comparable_events(run_dir) == comparable_events(reference_dir)
