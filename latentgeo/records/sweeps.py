"""Finding runs: a sweep dir's jobs in job order (``SweepDir``), a run or a sweep
(``find_runs``), and every run dir under a folder (``find_all_runs``).

Foundation layer: the standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from latentgeo.records.layout import ARTIFACTS, HYDRA_CONFIG, is_run_dir
from latentgeo.records.run_dir import RunDir


def job_order(path: Path) -> tuple[int, int | str]:
    return job_key(path.name)


def job_key(name: str) -> tuple[int, int | str]:
    """Jobs ``0, 1, 2, …, 10`` in number order, then other names."""
    return (0, int(name)) if name.isdigit() else (1, name)


class SweepDir:
    """A sweep dir: one run dir per job (``<sweep_dir>/<job_num>/``) and Hydra's
    ``multirun.yaml``."""

    def __init__(self, path: Path | str) -> None:
        self.dir = Path(path)

    def runs(self) -> list[RunDir]:
        """Run dirs in job order (``0, 1, …, 10``, then named ones)."""
        if not self.dir.is_dir():
            return []
        children = [p for p in self.dir.iterdir() if p.is_dir() and is_run_dir(p)]
        return [RunDir(p) for p in sorted(children, key=job_order)]

    def job(self, number: int) -> RunDir:
        return RunDir(self.dir / str(number))


def find_runs(path: Path | str) -> list[RunDir]:
    """``[run]`` for a run dir, else the sweep's runs in job order."""
    path = Path(path)
    return [RunDir(path)] if is_run_dir(path) else SweepDir(path).runs()


NOT_RUNS = ("archive", ARTIFACTS["eval"], ARTIFACTS["wandb"], ARTIFACTS["checkpoints"])


def find_all_runs(root: Path | str) -> list[RunDir]:
    """Every run dir under ``root`` (``root`` itself included), a sweep's jobs in job order;
    archived records (``archive/``) and evaluation outputs (``eval/``) are not runs, nor are
    hidden folders. A folder reached again through a symlink is read once (a link to a parent
    made an endless walk). One ``scandir`` per folder, no other system call per entry: listing
    10,000 runs costs little more than reading their status.json."""
    root = Path(root)
    if not root.exists():  # a typo in a path must not read as "no runs"
        raise FileNotFoundError(f"{root} does not exist")
    found: list[RunDir] = []
    _walk(os.fspath(root), found, set())
    return found


def _walk(folder: str, found: list[RunDir], seen: set[tuple[int, int]]) -> None:
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:  # not a folder (a file given as root), or unreadable: no runs there
        return
    files = {entry.name for entry in entries if entry.is_file()}  # d_type: no system call
    if ARTIFACTS["status"] in files or ARTIFACTS["config"] in files or (
            any(entry.name == ".hydra" for entry in entries)
            and os.path.isfile(os.path.join(folder, HYDRA_CONFIG))):
        found.append(RunDir(folder))
        return
    children = [entry for entry in entries if entry.name not in NOT_RUNS
                and not entry.name.startswith(".") and entry.is_dir()]
    for child in sorted(children, key=lambda entry: job_key(entry.name)):
        _walk(child.path, found, seen)
