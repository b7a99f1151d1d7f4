"""The results commands on a lab-sized sweep ÷ the unavoidable work, side by side in this run.

Generates N synthetic run dirs in the layout training writes (``latentgeo.synthetic_sweep``:
config.yaml + config.json, status.json, summary.json, metrics.jsonl with 40 metrics per event
over ``--epochs`` epochs; about 1 % failed and 0.5 % still running), then times each results
path as a whole process (``python -m ...``, its imports included), first call (caches
emptied) and second call, beside its baseline: a process that lists the run dirs and
``json.loads`` the files the command needs. Peak RSS is the child's own (``os.wait4``).

Goals at N = 10,000 (issue #25): runs ≤ 2× (status.json) and ≤ 100 MB; aggregate and load_runs
≤ 3× (status + summary + config), ≤ 1 GB, second call ≤ 0.2× the first; load_history of one
metric ≤ 2× parsing every metrics.jsonl first, ≤ 0.1× later, ≤ 2 GB; report ≤ 2× aggregate.

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_scale.py --runs 1000 10000`` (the 10,000
runs take ~6 GB of disk and several minutes); ``--dir`` keeps the sweeps for a second look.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRIC = "test/accuracy"

# the unavoidable work of each command: list the run dirs, json.loads the files it needs
BASELINE = """
import json, os, sys
root, names = sys.argv[1], sys.argv[2].split(",")
for child in os.scandir(root):
    if not child.is_dir() or child.name.startswith("."):
        continue
    for name in names:
        path = os.path.join(child.path, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            if name.endswith(".jsonl"):
                for line in f:
                    json.loads(line)
            else:
                json.loads(f.read())
"""
STATUS, RECORDS, EVENTS = ("status.json",), ("status.json", "summary.json", "config.json"), (
    "metrics.jsonl",)


def commands(sweep: Path, out: Path) -> list[tuple[str, list[str], tuple[str, ...], str]]:
    """(name, command, baseline files, goal) of every results path."""
    python = sys.executable
    load = "from latentgeo.results import {0}; {0}({1!r}{2})"
    return [
        ("runs", [python, "-m", "latentgeo.runs", str(sweep)], STATUS, "≤ 2×, ≤ 100 MB"),
        ("aggregate --no-history", [python, "-m", "latentgeo.aggregate", str(sweep), "--out",
                                    str(out), "--no-wandb", "--no-history"], RECORDS,
         "≤ 3×, ≤ 1 GB, 2nd ≤ 0.2× 1st"),
        ("aggregate (+ history.csv)", [python, "-m", "latentgeo.aggregate", str(sweep),
                                       "--out", str(out), "--no-wandb"], RECORDS + EVENTS,
         "(writes every number)"),
        ("load_runs", [python, "-c", load.format("load_runs", str(sweep), "")], RECORDS,
         "≤ 3×, ≤ 1 GB, 2nd ≤ 0.2× 1st"),
        (f"load_history({METRIC})", [python, "-c", load.format(
            "load_history", str(sweep), f", metrics=[{METRIC!r}]")], EVENTS,
         "1st ≤ 2×, 2nd ≤ 0.1×, ≤ 2 GB"),
        ("report", [python, "-m", "latentgeo.report", str(sweep), "--out",
                    str(out / "report.html")], RECORDS + EVENTS, "≤ 2× aggregate"),
    ]


def measure(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of one child process."""
    tic = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE":
                                                             "disabled"})
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - tic
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


# the parent imports nothing heavy: a forked child's peak RSS would count the parent's pages
CLEAR = """
import shutil, sys
from latentgeo.results_cache import cache_dir
place = cache_dir(sys.argv[1])
if place is not None:
    shutil.rmtree(place)
"""
GENERATE = """
import sys
from latentgeo.synthetic_sweep import write_sweep
write_sweep(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


def clear_caches(sweep: Path) -> None:
    subprocess.run([sys.executable, "-c", CLEAR, str(sweep)], cwd=REPO, check=True)


def bench(sweep: Path, runs: int, epochs: int) -> None:
    out = sweep.parent / f"{sweep.name}-out"
    out.mkdir(parents=True, exist_ok=True)
    if not (sweep / str(runs - 1) / "status.json").is_file():
        tic = time.perf_counter()
        shutil.rmtree(sweep, ignore_errors=True)
        subprocess.run([sys.executable, "-c", GENERATE, str(sweep), str(runs), str(epochs)],
                       cwd=REPO, check=True)
        print(f"# generated {runs} runs × {epochs} epochs in {time.perf_counter() - tic:.0f} s")
    print(f"# N = {runs}, {epochs} epochs, load avg {os.getloadavg()[0]:.1f} "
          f"(machine shared: other jobs may slow any row)")
    print(f"{'command':<30}{'call':>5}{'wall s':>9}{'base s':>8}{'ratio':>7}{'RSS MB':>8}"
          f"{'vs 1st':>8}  goal")
    for name, command, files, goal in commands(sweep, out):
        base, _, _ = measure([sys.executable, "-c", BASELINE, str(sweep), ",".join(files)])
        clear_caches(sweep)
        first = None
        for call in (1, 2):
            wall, rss, code = measure(command)
            first = first or wall
            note = "" if code == 0 else f"  exit {code}"
            print(f"{name:<30}{call:>5}{wall:>9.2f}{base:>8.2f}{wall / base:>7.2f}{rss:>8.0f}"
                  f"{wall / first:>8.2f}  {goal if call == 1 else ''}{note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--dir", type=Path, help="where the sweeps go (kept); default a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        for runs in args.runs:
            bench(root / f"sweep-{runs}x{args.epochs}", runs, args.epochs)


if __name__ == "__main__":
    main()
