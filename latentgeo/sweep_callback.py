"""End every multirun with one table of its jobs, read from their ``status.json``.

Registered in ``conf/train.yaml`` under ``hydra.callbacks``. The table lists
``job, state, reason, run dir`` for every job ``<sweep_dir>/<job_num>/`` of the sweep and ends
with ``N ok, M failed, K other``; the driver exits 1 unless every run is ok. ``status.json`` is
the truth: Slurm may say COMPLETED for a job whose run failed, and a job cancelled before it
started has no run dir at all (shown as ``missing``).

Why an ``atexit`` hook as well as ``on_multirun_end``: in hydra-core 1.3 the sweeper reads every
job's ``JobReturn.return_value`` (``BasicSweeper.sweep``), which re-raises the first failed
job's exception; ``Hydra.multirun`` then never reaches ``callbacks.on_multirun_end`` and
``run_and_report`` prints the error and calls ``sys.exit(1)``. The hook registered in
``on_multirun_start`` prints the summary on that way out (after Hydra's error, so the summary is
still the last thing the driver prints); ``on_multirun_end`` unregisters it and prints the
summary itself. ``on_job_end`` would not do: with submitit it runs inside the job, not the driver.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from latentgeo.records import LockHeld, RunDir

REASON_WIDTH = 100  # characters of the failure reason shown in the table (status.json has it all)


def expected_job_count(config: DictConfig) -> int | None:
    """How many jobs Hydra's basic sweeper launches for ``config``; None for other sweepers.

    Same expansion as ``BasicSweeper.sweep``: ``hydra.sweeper.params`` then the command line,
    a later value of a key replacing an earlier one, cartesian product over the keys.
    """
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
            return None
        params = config.hydra.sweeper.get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += list(config.hydra.overrides.task)
        overrides = OverridesParser.create().parse_overrides(arguments)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception:  # glob() sweeps need the config loader; a summary must never fail a sweep
        return None


NOT_RUN = "not run here"  # the state of a job whose run dir another process was writing


def job_states(sweep_dir: Path, expected: int | None = None,
               refused: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """One row per job: jobs ``0 .. expected-1`` when the count is known (a job dir beyond it
    is left from an earlier, larger grid re-entered with the same sweep id), else every job dir
    ``<sweep_dir>/<n>/``. A job in ``refused`` (its run dir was in use by another process,
    e.g. a second driver with the same sweep id) is ``not run here``, whatever its record
    says: this driver did not run it."""
    sweep_dir = Path(sweep_dir)
    found = {}
    if sweep_dir.is_dir():
        found = {int(p.name): p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    numbers = range(expected) if expected is not None else sorted(found)
    rows = []
    for number in numbers:
        run = RunDir(found.get(number, sweep_dir / str(number)))
        if not run.dir.is_dir():
            state, reason = "missing", "no run dir (the job never started)"
        elif run.state == "missing":
            state, reason = "missing", "no status.json (the job never reached training)"
        else:
            state, reason = run.state, run.reason
        if number in (refused or {}):
            state, reason = NOT_RUN, f"its record says {state}; {refused[number]}"
        rows.append({"job": number, "state": state, "reason": reason, "run_dir": str(run.dir)})
    return rows


def format_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    """The table and the closing ``N ok, M failed, K other`` line."""
    def short(reason: Any) -> str:
        text = str(reason).strip().splitlines()[0] if reason else "-"
        return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 3] + "..."

    table = [("job", "state", "reason", "run dir")]
    table += [(str(r["job"]), r["state"], short(r["reason"]), r["run_dir"]) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines = [f"sweep summary: {sweep_dir} (from each job's status.json)"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths)) + "  " + line[3]
              for line in table]
    ok = sum(r["state"] == "ok" for r in rows)
    failed = sum(r["state"] == "failed" for r in rows)
    lines.append(f"{ok} ok, {failed} failed, {len(rows) - ok - failed} other")
    lines.append(f"details and best LR per seed: python -m latentgeo.aggregate {sweep_dir}")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Print the sweep's job table when the multirun driver ends, however it ends."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.expected: int | None = None
        self.refused: dict[int, str] = {}  # job -> why this driver could not run it

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.expected = expected_job_count(config)
        atexit.register(self._print_summary)
        jobs = "" if self.expected is None else f"{self.expected} jobs, "
        print(f"sweep {self.sweep_dir} ({jobs}re-enter it with "
              f"LATENTGEO_SWEEP_ID={self.sweep_dir.name})", flush=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A job refused because its run dir is in use (LockHeld): noted for the summary.
        Runs in the driver with the basic launcher (in the job's process with submitit)."""
        failure = job_return._return_value if job_return.status == JobStatus.FAILED else None
        cause = getattr(failure, "__cause__", None)
        if isinstance(failure, LockHeld) or isinstance(cause, LockHeld):
            self.refused[int(config.hydra.job.num)] = str(cause or failure)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._print_summary)
        rows = self._print_summary()
        if any(row["state"] != "ok" for row in rows):
            # every job returned, yet not every run is ok: still a failed sweep
            raise SystemExit(1)  # BaseException: Hydra's callback wrapper lets it through

    def _print_summary(self) -> list[dict[str, Any]]:
        if self.sweep_dir is None:
            return []
        rows = job_states(self.sweep_dir, self.expected, self.refused)
        sys.stderr.flush()
        print(format_summary(self.sweep_dir, rows), flush=True)
        return rows
