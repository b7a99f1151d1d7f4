"""``hydra/launcher=workstation``: a sweep on one machine, at most N jobs at once, one GPU each.

Hydra's own launchers cannot do this: ``basic`` runs jobs one after another in the driver,
submitit's local executor starts every job at once and gives each the same GPUs, and the joblib
launcher runs jobs in reused worker processes whose environment (``CUDA_VISIBLE_DEVICES``) is
fixed when the worker starts. So each job here is its own process,
``python -m latentgeo.train <the job's overrides>``, with

- ``CUDA_VISIBLE_DEVICES`` = one device taken from a pool of free GPUs and put back when the
  process has ended, however it ended; queued jobs start as devices free up;
- its run dir ``<sweep_dir>/<job_num>/`` passed as ``hydra.run.dir``, where it writes
  ``job.log`` (its stdout and stderr) and the launcher writes ``launcher.json`` (device, pid,
  command, start and end times, exit code);
- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = its share of the cores unless already set.

Devices: ``hydra.launcher.gpus`` (e.g. ``[0,3]``), else ``LATENTGEO_WORKSTATION_GPUS=N``
(devices ``0..N-1``; tests fake GPUs with it), else the driver's ``CUDA_VISIBLE_DEVICES``, else
every GPU torch sees. Jobs at once: one per device (``jobs_per_gpu`` each), at most
``max_parallel``; without GPUs ``max_parallel``, else ``max(1, cores // threads)`` with
``threads`` the largest ``trainer.num_threads`` of the jobs (1 when unset).

Stopping: SIGTERM, SIGINT or SIGHUP to the driver stops starting jobs and sends SIGTERM to every
running one, for latentgeo.train to record its run ``interrupted`` and exit. After
``stop_grace_s``, or at a second signal, the rest get SIGKILL. The launcher waits for every
job; one whose status.json still says ``running`` once its process is gone (it died without
recording its end) it records itself, ``interrupted`` when the launcher stopped it, else
``failed``. Then the driver exits with 128 + the signal number; the sweep summary
(latentgeo/sweep_callback.py) still prints, and ``LATENTGEO_SWEEP_ID`` re-enters the sweep.
The jobs run in their own sessions, so a Ctrl-C at the terminal reaches the driver alone and
each job is stopped once; on Linux each job also gets SIGTERM from the kernel when the driver
dies (``prctl(PR_SET_PDEATHSIG)``), so even a SIGKILLed driver leaves no job running.

A job is ``COMPLETED`` when its process exits 0 and its status.json says ``ok``; its return
value is its final ``test/accuracy`` (what ``latentgeo.train.main`` returns). Otherwise it is
``FAILED`` with the status.json reason, and the sweeper makes the driver exit 1 after every
job of the batch has finished, as with the other launchers.
"""

# No ``from __future__ import annotations``: Hydra's plugin scanner executes this module before
# it is in sys.modules, and dataclasses cannot look up string annotations then.
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from latentgeo.records import ARTIFACTS, RunDir

log = logging.getLogger(__name__)

GPUS_ENV = "LATENTGEO_WORKSTATION_GPUS"  # fake (or restrict to) N GPUs: devices "0".."N-1"
JOB_LOG = ARTIFACTS["job_log"]  # the job process's stdout and stderr, appended on every attempt
JOB_MODULE = "latentgeo.train"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.1  # how often the driver looks for ended jobs and signals
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# hydra overrides of the driver a job must not get: it is a single run in a given dir
NOT_FOR_JOBS = re.compile(
    r"(hydra/launcher|hydra\.launcher|hydra/sweeper|hydra\.sweeper|hydra\.sweep|hydra\.mode"
    r"|hydra\.run|hydra\.job\.num|hydra\.job\.id)\b")
BARE_VALUE = re.compile(r"[\w./-]+")  # passed to Hydra's override parser without quotes


@dataclass
class WorkstationLauncherConf:
    _target_: str = (
        "hydra_plugins.latentgeo_workstation.workstation_launcher.WorkstationLauncher")
    # at most this many jobs at once; null: one per GPU (jobs_per_gpu each), or without GPUs
    # max(1, cores // threads)
    max_parallel: int | None = None
    # device ids for CUDA_VISIBLE_DEVICES; null: $LATENTGEO_WORKSTATION_GPUS (a count), else
    # the driver's CUDA_VISIBLE_DEVICES, else every GPU torch sees; [] runs on the CPU
    gpus: list[str] | None = None
    jobs_per_gpu: int = 1  # > 1 shares a GPU between small jobs
    stop_grace_s: float = 60.0  # after a stop signal, SIGKILL what is still running


ConfigStore.instance().store(group="hydra/launcher", name="workstation_base",
                             node=WorkstationLauncherConf, provider="latentgeo")


class WorkstationJobError(RuntimeError):
    """A job whose process failed or whose run is not ok (the sweeper re-raises it)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def available_cpus() -> int:
    """Cores this process may run on (taskset / cgroup cpusets), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def visible_gpus(gpus: Sequence[Any] | None, environ: Mapping[str, str]) -> tuple[list[str], str]:
    """The device ids jobs are pinned to, and where they came from (for the log)."""
    if gpus is not None:
        return [str(gpu) for gpu in gpus], "hydra.launcher.gpus"
    count = environ.get(GPUS_ENV, "").strip()
    if count:
        if not count.isdigit():
            raise ValueError(f"{GPUS_ENV}={count!r} is not allowed: a number of GPUs (0, 1, ...)"
                             f"; for a list of devices use hydra.launcher.gpus=[0,3]")
        return [str(i) for i in range(int(count))], f"{GPUS_ENV}={count}"
    if "CUDA_VISIBLE_DEVICES" in environ:
        devices = []
        for device in environ["CUDA_VISIBLE_DEVICES"].split(","):
            if not device.strip() or device.strip().startswith("-"):
                break  # CUDA ignores everything from the first invalid entry on
            devices.append(device.strip())
        return devices, "CUDA_VISIBLE_DEVICES"
    import torch  # the driver imported it already (latentgeo.train); no CUDA context is made

    return [str(i) for i in range(torch.cuda.device_count())], "torch.cuda.device_count()"


def parallel_jobs(gpus: int, jobs_per_gpu: int, max_parallel: int | None, threads: int,
                  cpus: int) -> int:
    """How many jobs run at once: one per GPU slot, capped by ``max_parallel``; without GPUs
    ``max_parallel``, else as many as the cores hold at ``threads`` each."""
    if gpus:
        slots = gpus * jobs_per_gpu
        return min(slots, max_parallel) if max_parallel else slots
    return max_parallel or max(1, cpus // max(1, threads))


def override_value(text: str, key: str) -> str:
    """``text`` as the value of a command-line override (quoted unless plain)."""
    if BARE_VALUE.fullmatch(text):
        return text
    if any(char in text for char in "'\\$"):
        raise ValueError(f"{key}={text!r} is not allowed by hydra/launcher=workstation: it "
                         f"passes the path to each job on its command line, where ' \\ and $ "
                         f"are special; use a path without them")
    return f"'{text}'"


def stop_with_driver() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the kernel send the job SIGTERM when the driver dies,
    SIGKILL included; None elsewhere. It only calls prctl, bound here in the driver, because
    code that runs between fork and exec must not take locks another thread may hold."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    driver = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != driver:  # the driver died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


# ----------------------------------------------------------------------- the jobs' run records
# latentgeo.records is the only code that knows a run dir's files (launcher.json and job.log
# included); the launcher reads and writes them through RunDir.


def run_state(run_dir: Path) -> tuple[str | None, str | None]:
    """status.json's state and reason; ``(None, why)`` when there is none to read."""
    run = RunDir(run_dir)
    if run.status() is None:
        return None, run.reason
    return run.state, run.reason


def record_lost_job(run_dir: Path, state: str, reason: str) -> None:
    """The job's process is gone and status.json still says ``running``: say what happened
    (keeping started, epoch and versions, as the run's own ``fail`` would)."""
    RunDir(run_dir).close_lost(state, reason)


def run_accuracy(run_dir: Path) -> float | None:
    return (RunDir(run_dir).summary() or {}).get("test/accuracy")


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    RunDir(run_dir).write_artifact("launcher", record)


# ----------------------------------------------------------------------------- the launcher


class StopSignals:
    """While active, SIGTERM / SIGINT / SIGHUP only count (the launcher's loop acts on them)."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if signum == signal.SIGHUP and previous == signal.SIG_IGN:
                continue  # started under nohup: keep ignoring hang-ups
            try:
                signal.signal(signum, self._received)
            except ValueError:  # not the main thread: Python cannot catch signals here
                log.warning("workstation launcher: not in the main thread, so a stop signal "
                            "kills the driver without stopping its jobs")
                break
            self._previous[signum] = previous
        return self

    def _received(self, signum: int, frame: Any) -> None:
        self.first = self.first or signum
        self.count += 1

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    @property
    def name(self) -> str:
        return signal.Signals(self.first).name if self.first else ""


@dataclass
class Job:
    num: int
    overrides: list[str]
    config: DictConfig  # the job's composed config, as the basic launcher makes it
    run_dir: Path
    arguments: list[str]  # the job process's command-line overrides
    threads: int | None  # trainer.num_threads
    device: str | None = None
    process: subprocess.Popen | None = None
    record: dict[str, Any] | None = None
    stopped_by: str | None = None  # the signal the launcher sent it


class WorkstationLauncher(Launcher):
    def __init__(self, max_parallel: int | None = None, gpus: Sequence[Any] | None = None,
                 jobs_per_gpu: int = 1, stop_grace_s: float = 60.0) -> None:
        for key, value in (("max_parallel", max_parallel), ("jobs_per_gpu", jobs_per_gpu)):
            if value is not None and value < 1:
                raise ValueError(f"hydra.launcher.{key}={value!r} is not allowed: 1 or more"
                                 + (" (or null)" if key == "max_parallel" else ""))
        self.max_parallel = max_parallel
        self.gpus = None if gpus is None else [str(gpu) for gpu in gpus]
        self.jobs_per_gpu = jobs_per_gpu
        self.stop_grace_s = stop_grace_s
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with StopSignals() as stop:
            jobs = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                if stop.first:
                    self._exit_stopped(stop, [], len(job_overrides) - len(jobs))
                jobs.append(self._prepare(idx, list(overrides), sweep_dir))
            devices, source = visible_gpus(self.gpus, os.environ)
            cpus = available_cpus()
            threads = max(job.threads or 1 for job in jobs)
            slots = parallel_jobs(len(devices), self.jobs_per_gpu, self.max_parallel, threads,
                                  cpus)
            where = (f"GPUs {','.join(devices)} (from {source}), {self.jobs_per_gpu} job(s) "
                     f"per GPU" if devices else f"CPU only ({source} gives no GPU), {cpus} cores")
            log.info(f"Workstation launcher: {len(jobs)} jobs in {sweep_dir}, "
                     f"{min(slots, len(jobs))} at a time; {where}")
            for job in jobs:
                log.info(f"\t#{job.num} : {' '.join(filter_overrides(job.overrides))}")
            pool = deque(device for device in devices for _ in range(self.jobs_per_gpu))
            share = max(1, cpus // slots)
            returns, pending = self._run(jobs, pool, slots, share, bool(devices), stop)
            if stop.first:
                self._exit_stopped(stop, [job for job in jobs if job.stopped_by], len(pending))
        return [returns[job.num] for job in jobs]

    # ------------------------------------------------------------------------- one job

    def _prepare(self, idx: int, overrides: list[str], sweep_dir: Path) -> Job:
        """Compose the job's config (as the basic launcher does) for its run dir, threads and
        wandb group, and make the job process's overrides."""
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = str(idx)
            config.hydra.job.num = idx
        hydra_config = HydraConfig.instance()
        previous = hydra_config.cfg
        hydra_config.set_config(config)  # ${hydra:job.num} in hydra.sweep.subdir
        try:
            run_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")),
                           str(OmegaConf.select(config, "hydra.sweep.subdir"))).absolute()
            threads = OmegaConf.select(config, "trainer.num_threads", default=None)
            group = OmegaConf.select(config, "logger.group", default=None)
        finally:
            hydra_config.cfg = previous
        arguments = list(overrides)
        if group is None:  # as in a multirun job, whose wandb group is the sweep id
            arguments.append(f"logger.group={override_value(sweep_dir.name, 'logger.group')}")
        for override in self.config.hydra.overrides.hydra:
            if not NOT_FOR_JOBS.match(override.lstrip("+~")):
                arguments.append(override)  # e.g. hydra.verbose, hydra/job_logging
        arguments += [f"hydra.run.dir={override_value(str(run_dir), 'hydra.run.dir')}",
                      f"hydra.job.num={idx}"]
        return Job(idx, overrides, config, run_dir, arguments, threads)

    def _start(self, job: Job, share: int) -> None:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = job.device or ""  # "": no GPU (CPU jobs)
        threads = str(job.threads or share)
        env.setdefault("OMP_NUM_THREADS", threads)
        env.setdefault("MKL_NUM_THREADS", threads)
        env.setdefault("PYTHONUNBUFFERED", "1")  # job.log follows the job as it runs
        command = [sys.executable, "-m", JOB_MODULE, *job.arguments]
        job.run_dir.mkdir(parents=True, exist_ok=True)
        started = now()
        with open(job.run_dir / JOB_LOG, "ab") as output:
            output.write(f"== {started} workstation launcher: job {job.num}, "
                         f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}\n".encode())
            output.flush()
            # own session: a Ctrl-C at the terminal reaches the driver only, which stops the
            # job once; the job's process group is what SIGKILL takes down with it
            job.process = subprocess.Popen(command, env=env, stdout=output,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True,
                                           preexec_fn=stop_with_driver())
        job.record = {
            "job": job.num, "run_dir": str(job.run_dir), "overrides": job.overrides,
            "command": command, "cuda_visible_devices": env["CUDA_VISIBLE_DEVICES"],
            "omp_num_threads": env["OMP_NUM_THREADS"], "host": socket.gethostname(),
            "driver_pid": os.getpid(), "pid": job.process.pid, "started": started,
            "ended": None, "returncode": None, "state": None, "stopped_by": None,
        }
        write_record(job.run_dir, job.record)
        device = f"GPU {job.device}" if job.device else "the CPU"
        log.info(f"#{job.num} started on {device} (pid {job.process.pid}, log "
                 f"{job.run_dir / JOB_LOG})")

    def _finish(self, job: Job) -> JobReturn:
        """The job's process has ended: record it and make its JobReturn."""
        assert job.process is not None and job.record is not None
        returncode = job.process.wait()
        ended = now()
        state, reason = run_state(job.run_dir)
        if state == "running":  # e.g. SIGKILL, the OOM killer, a crash in native code
            state = "interrupted" if job.stopped_by else "failed"
            reason = (f"the job process ended ({describe_exit(returncode)}) without recording "
                      f"its end; see {job.run_dir / JOB_LOG}")
            record_lost_job(job.run_dir, state, reason)
        job.record.update(ended=ended, returncode=returncode, state=state,
                          stopped_by=job.stopped_by)
        write_record(job.run_dir, job.record)
        seconds = (datetime.fromisoformat(ended)
                   - datetime.fromisoformat(job.record["started"])).total_seconds()
        result = JobReturn(overrides=job.overrides, working_dir=os.getcwd(),
                           task_name=str(job.config.hydra.job.name))
        result.cfg = OmegaConf.masked_copy(job.config, [k for k in job.config if k != "hydra"])
        result.hydra_cfg = OmegaConf.masked_copy(job.config, ["hydra"])
        if returncode == 0 and state == "ok":
            result.status = JobStatus.COMPLETED
            result.return_value = run_accuracy(job.run_dir)
            log.info(f"#{job.num} ok after {seconds:.0f} s")
            return result
        why = f"{describe_exit(returncode)}, status.json: {state or 'none'}"
        log.error(f"#{job.num} {state or 'failed'} after {seconds:.0f} s ({why}): "
                  f"{reason or '-'}; log: {job.run_dir / JOB_LOG}")
        result.status = JobStatus.FAILED
        result.return_value = WorkstationJobError(
            f"workstation job #{job.num} ({' '.join(job.overrides)}) ended with "
            f"{why}: {reason or 'no reason recorded'}; log: {job.run_dir / JOB_LOG}")
        return result

    # ------------------------------------------------------------------------- scheduling

    def _run(self, jobs: list[Job], pool: deque, slots: int, share: int, pinned: bool,
             stop: StopSignals) -> tuple[dict[int, JobReturn], deque]:
        """Start jobs while slots (and devices) are free, collect them as they end; on a stop
        signal start no more and stop the running ones. Returns the JobReturns of the jobs
        that ran and the jobs that never started."""
        pending, running = deque(jobs), []
        returns: dict[int, JobReturn] = {}
        try:
            while running or (pending and not stop.first):
                while pending and len(running) < slots and not stop.first:
                    job = pending.popleft()
                    job.device = pool.popleft() if pinned else None
                    running.append(job)
                    self._start(job, share)
                self._collect(running, pool, returns)
                if stop.first:
                    break
                time.sleep(POLL_S)
        finally:  # a stop signal, or an error in the launcher itself: no job left behind
            if running:
                self._stop(running, pool, returns, stop)
        return returns, pending

    def _collect(self, running: list[Job], pool: deque, returns: dict[int, JobReturn]) -> None:
        for job in list(running):
            if job.process is not None and job.process.poll() is None:
                continue
            if job.process is not None:
                returns[job.num] = self._finish(job)
            running.remove(job)
            if job.device is not None:
                pool.append(job.device)  # only now: the process that used it has ended

    def _stop(self, running: list[Job], pool: deque, returns: dict[int, JobReturn],
              stop: StopSignals) -> None:
        """SIGTERM to every running job (latentgeo.train records the run interrupted), then
        wait; SIGKILL after ``stop_grace_s`` or at one more stop signal."""
        log.warning(f"Workstation launcher: {stop.name or 'an error'} in the driver: stopping "
                    f"{len(running)} running job(s) (SIGTERM; SIGKILL after "
                    f"{self.stop_grace_s:g} s or at another signal)")
        signals_seen = stop.count
        for job in running:
            self._signal(job, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        killed = False
        while running:
            if not killed and (stop.count > signals_seen or time.monotonic() > deadline):
                for job in running:
                    self._signal(job, signal.SIGKILL)
                killed = True
            self._collect(running, pool, returns)
            time.sleep(POLL_S)

    @staticmethod
    def _signal(job: Job, signum: int) -> None:
        if job.process is None or job.process.poll() is not None:
            return
        job.stopped_by = signal.Signals(signum).name
        try:
            if signum == signal.SIGKILL:  # the job's own children (wandb's service) too
                os.killpg(job.process.pid, signum)
            else:
                job.process.send_signal(signum)
        except ProcessLookupError:
            pass

    def _exit_stopped(self, stop: StopSignals, stopped: list[Job], not_started: int) -> None:
        sweep_id = Path(str(self.config.hydra.sweep.dir)).name if self.config else "?"
        states = ", ".join(f"#{job.num} {job.record['state'] if job.record else '?'}"
                           for job in stopped) or "none"
        log.error(f"Workstation launcher: stopped by {stop.name}. Jobs stopped: {states}; "
                  f"{not_started} never started. Resume: LATENTGEO_SWEEP_ID={sweep_id} and "
                  f"the same command")
        raise SystemExit(128 + int(stop.first or 0))
