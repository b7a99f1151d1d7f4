"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def default_threads() -> int:
    """$OMP_NUM_THREADS when set (e.g. 1 on a machine shared with other jobs), else all cores."""
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def print_header(device: torch.device) -> None:
    """Script, device, torch version, threads and load: what the numbers below depend on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# {Path(sys.argv[0]).name}  device {device} ({name or platform.machine()})  "
          f"torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"load avg {os.getloadavg()[0]:.1f}")


def timed(fn, device: torch.device) -> float:
    """Seconds ``fn()`` takes, the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic


def repeated(fn, device: torch.device, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn()`` after one warm-up call."""
    timed(fn, device)
    return [timed(fn, device) for _ in range(repeats)]


@torch.no_grad()
def bare_forward(model, loaders) -> None:
    """The metric-cost benchmarks' baseline: one eval-mode forward pass over every evaluation
    split, nothing kept (the floor of any metric that needs the features)."""
    was_training = model.training
    model.eval()
    for loader in loaders.eval.values():
        for x, _ in loader.epoch(0):
            model(x)
    model.train(was_training)


def print_ratios(seconds: dict[str, list[float]], baseline: float, ratio_header: str,
                 name_width: int, digits: int = 3, ratio_width: int = 9,
                 ratio_digits: int = 2) -> None:
    """One row per measurement: median seconds, min–max, median ÷ ``baseline``."""
    print(f"{'':<{name_width}}{'seconds':>9}{'min–max':>16}{ratio_header:>{ratio_width}}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<{name_width}}{median:>9.{digits}f}{min(values):>8.{digits}f}–"
              f"{max(values):<7.{digits}f}{median / baseline:>{ratio_width}.{ratio_digits}f}")


def start(parser) -> tuple:
    """Add --threads, parse, set torch's threads, print the header; returns (args, device)."""
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch CPU threads (default: $OMP_NUM_THREADS, else all cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print_header(device)
    return args, device


WEIGHT_FAMILIES = ("hyperplanes", "alpha")  # data-free: every epoch, not part of an evaluation


def evaluate(cfg, model, data, loaders, epoch: int, last: bool) -> dict:
    """One evaluation as ``engine.fit`` runs it at an evaluation epoch (``last``: the last
    epoch): the due metric families on the data, without the data-free weight families."""
    from latentgeo import families
    from latentgeo.config import to_typed

    cfg = to_typed(cfg)
    due = [f for f in families.due(cfg, epoch, last) if f.name not in WEIGHT_FAMILIES]
    return families.measure(families.Point(cfg, model, epoch, last, data, loaders), due)


def weight_metrics(cfg, model, data, loaders, init_state) -> dict:
    """The data-free families of one epoch (hyperplane statistics, distance from init)."""
    from latentgeo import families
    from latentgeo.config import to_typed

    cfg = to_typed(cfg)
    point = families.Point(cfg, model, 1, False, data, loaders, init_state=init_state)
    return families.measure(point, [families.FAMILIES[name] for name in WEIGHT_FAMILIES])
