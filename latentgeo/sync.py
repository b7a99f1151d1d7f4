"""Upload a sweep's offline wandb runs, several ``wandb sync`` processes at a time.

    python -m latentgeo.sync SWEEP_DIR [--jobs N] [--dry-run] [--include-synced]

One ``wandb sync <offline-run dirs>`` process per run dir (all offline-run dirs of a resumed run
go to the same process: wandb replays them in start order, so they must not race), ``--jobs`` of
them at once. What counts as synced is what wandb itself writes: after a successful upload,
wandb-core (0.31) leaves ``run-<id>.wandb.synced`` beside ``run-<id>.wandb`` and ``wandb sync``
skips files that have it. A run dir is skipped when every ``.wandb`` file has its marker, or
while its ``status.json`` says ``running`` (a partial upload would be marked synced and the rest
never sent). A sync counts as failed when the process exits non-zero, times out, or exits 0
without writing the marker (``wandb sync`` can report some errors only in its output). The exit
code is 1 when any run failed, 2 for a bad SWEEP_DIR, else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from latentgeo.records import RunDir

SYNCED_SUFFIX = ".synced"  # wandb-core: <file>.wandb → <file>.wandb.synced
OUTPUT_TAIL = 800  # characters of wandb's output kept for a failure

Runner = Callable[[list[str], float | None], subprocess.CompletedProcess]


@dataclass
class SyncTarget:
    """The offline wandb runs of one run dir."""

    run: str  # run dir name relative to the sweep dir ("." for a run dir given directly)
    run_dir: Path
    offline_dirs: list[Path]  # every wandb/offline-run-* dir, in name (= start time) order
    pending: list[Path]  # those with a .wandb file that has no .synced marker
    state: str | None  # status.json state, None when unreadable


@dataclass
class SyncResult:
    run: str
    status: str  # synced | skipped | failed
    detail: str  # one line
    seconds: float = 0.0
    output: str = ""  # the tail of wandb's output, for failures


def wandb_files(offline_dir: Path) -> list[Path]:
    return sorted(offline_dir.glob("*.wandb"))


def is_synced(offline_dir: Path) -> bool:
    """True when the dir has .wandb files and each has wandb's ``.wandb.synced`` marker."""
    files = wandb_files(offline_dir)
    return bool(files) and all(f.with_name(f.name + SYNCED_SUFFIX).exists() for f in files)


def _state(run_dir: Path) -> str | None:
    status = RunDir(run_dir).status()
    return status.get("state") if status else None


def find_targets(sweep_dir: str | Path) -> list[SyncTarget]:
    """Run dirs holding ``wandb/offline-run-*`` dirs: the sweep dir itself and its children.
    ``latest-run`` (a symlink wandb keeps) is not followed, so nothing is counted twice."""
    sweep_dir = Path(sweep_dir)
    run_dirs = [sweep_dir, *sorted((p for p in sweep_dir.iterdir() if p.is_dir()),
                                   key=lambda p: (not p.name.isdigit(),
                                                  int(p.name) if p.name.isdigit() else 0,
                                                  p.name))]
    targets = []
    for run_dir in run_dirs:
        offline = sorted(p for p in RunDir(run_dir).artifact("wandb").glob("offline-run-*")
                         if p.is_dir() and not p.is_symlink())
        if not offline:
            continue
        name = "." if run_dir == sweep_dir else run_dir.name
        targets.append(SyncTarget(run=name, run_dir=run_dir, offline_dirs=offline,
                                  pending=[d for d in offline if not is_synced(d)],
                                  state=_state(run_dir)))
    return targets


def wandb_sync_command(paths: Sequence[Path], extra_args: Sequence[str] = ()) -> list[str]:
    """``wandb sync`` of this interpreter's wandb (works in a venv that is not activated)."""
    return [sys.executable, "-m", "wandb", "sync", *extra_args, *[str(p) for p in paths]]


def run_subprocess(command: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    """The process boundary: the only place a ``wandb sync`` process is started."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def _tail(process: subprocess.CompletedProcess) -> str:
    text = "\n".join(part for part in (process.stdout, process.stderr) if part).strip()
    return text[-OUTPUT_TAIL:]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def sync_target(target: SyncTarget, runner: Runner = run_subprocess,
                extra_args: Sequence[str] = (), timeout: float | None = None,
                include_synced: bool = False) -> SyncResult:
    """Run one ``wandb sync`` for the target's pending offline dirs and check the markers."""
    dirs = target.offline_dirs if include_synced else target.pending
    missing = [d for d in dirs if not wandb_files(d)]
    if missing:
        return SyncResult(target.run, "failed", f"no .wandb file in {missing[0]}")
    args = [*extra_args, *(["--include-synced"] if include_synced else [])]
    command = wandb_sync_command(dirs, args)
    start = time.perf_counter()
    try:
        process = runner(command, timeout)
    except subprocess.TimeoutExpired:
        return SyncResult(target.run, "failed", f"wandb sync timed out after {timeout} s",
                          time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - one run's problem must not stop the others
        return SyncResult(target.run, "failed", f"could not run wandb sync: {error!r}",
                          time.perf_counter() - start)
    seconds = time.perf_counter() - start
    output = _tail(process)
    if process.returncode != 0:
        return SyncResult(target.run, "failed", f"wandb sync exited {process.returncode}: "
                          f"{_last_line(output)}", seconds, output)
    unmarked = [d for d in dirs if not is_synced(d)]
    if unmarked:
        return SyncResult(target.run, "failed",
                          f"wandb sync exited 0 but left no *.wandb{SYNCED_SUFFIX} marker in "
                          f"{unmarked[0].name}: {_last_line(output)}", seconds, output)
    return SyncResult(target.run, "synced", f"{len(dirs)} offline run dir(s)", seconds)


def skip_reason(target: SyncTarget, include_synced: bool = False,
                include_running: bool = False) -> str | None:
    """Why the target is not synced now, or None."""
    if not include_synced and not target.pending:
        return "already synced"
    if target.state == "running" and not include_running:
        return "run still running (status.json); sync it after it ends or pass --include-running"
    return None


def sync_runs(
    targets: Sequence[SyncTarget],
    jobs: int = 4,
    runner: Runner = run_subprocess,
    extra_args: Sequence[str] = (),
    timeout: float | None = None,
    include_synced: bool = False,
    include_running: bool = False,
    report: Callable[[SyncResult], None] | None = None,
) -> list[SyncResult]:
    """Sync every target that needs it, ``jobs`` processes at a time; results in target order.
    ``report`` is called (from this thread) as each result arrives."""
    results: dict[str, SyncResult] = {}
    todo = []
    for target in targets:
        reason = skip_reason(target, include_synced, include_running)
        if reason is None:
            todo.append(target)
        else:
            results[target.run] = SyncResult(target.run, "skipped", reason)
            if report:
                report(results[target.run])
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(sync_target, target, runner, extra_args, timeout, include_synced)
                   for target in todo]
        for future in as_completed(futures):
            result = future.result()
            results[result.run] = result
            if report:
                report(result)
    return [results[target.run] for target in targets]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.sync",
        description="Upload the offline wandb runs of a sweep (or of one run dir) with several "
                    "`wandb sync` processes in parallel, skipping runs wandb already marked "
                    "synced (run-*.wandb.synced). Exit code 1 if any run failed.",
    )
    parser.add_argument("sweep_dir", type=Path, help="sweep dir (one run dir per job) or run dir")
    parser.add_argument("--jobs", "-j", type=int, default=4,
                        help="wandb sync processes at a time (default 4)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds before one run's sync is abandoned (default: none)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be synced")
    parser.add_argument("--include-synced", action="store_true",
                        help="sync again runs that wandb already marked synced")
    parser.add_argument("--include-running", action="store_true",
                        help="also sync runs whose status.json says running (e.g. killed jobs)")
    parser.add_argument("--project", help="override the wandb project of every run")
    parser.add_argument("--entity", help="override the wandb entity of every run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs={args.jobs} is not allowed: an integer >= 1", file=sys.stderr)
        return 2
    targets = find_targets(args.sweep_dir)
    if not targets:
        print(f"no offline wandb runs (<run>/wandb/offline-run-*) under {args.sweep_dir}")
        return 0
    if args.dry_run:
        for target in targets:
            reason = skip_reason(target, args.include_synced, args.include_running)
            dirs = target.offline_dirs if args.include_synced else target.pending
            print(f"{target.run}: " + (f"skip ({reason})" if reason else
                                       "would sync " + " ".join(d.name for d in dirs)))
        return 0

    extra = [*(["--project", args.project] if args.project else []),
             *(["--entity", args.entity] if args.entity else [])]
    done = [0]

    def report(result: SyncResult) -> None:
        done[0] += 1
        took = f" ({result.seconds:.1f} s)" if result.seconds else ""
        print(f"[{done[0]}/{len(targets)}] {result.status:7s} {result.run}{took}: "
              f"{result.detail}", flush=True)

    results = sync_runs(targets, jobs=args.jobs, extra_args=extra, timeout=args.timeout,
                        include_synced=args.include_synced,
                        include_running=args.include_running, report=report)
    counts = {status: sum(r.status == status for r in results)
              for status in ("synced", "skipped", "failed")}
    print(f"{counts['synced']} synced, {counts['skipped']} skipped, {counts['failed']} failed")
    for result in results:
        if result.status == "failed":
            print(f"FAILED {result.run}: {result.detail}", file=sys.stderr)
            if result.output:
                print("    " + result.output.replace("\n", "\n    "), file=sys.stderr)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
