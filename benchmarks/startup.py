"""Start-up of the command line ÷ ``python -c "import torch"``, measured side by side in this
run (whole processes, wall time, median of ``--repeats``). Target: ≤ 0.5 for ``--help``,
``--cfg job``, a rejected value and a shell-completion query, none of which imports torch.

Run: ``python benchmarks/startup.py [--repeats 5]`` (≈ 30 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "latentgeo.train"]
COMMANDS = {
    "import torch (baseline)": ([sys.executable, "-c", "import torch"], {}),
    "--help": ([*TRAIN, "--help"], {}),
    "--cfg job": ([*TRAIN, "--cfg", "job", "model=mlp"], {}),
    "rejected value (trainer.epochs=0)": ([*TRAIN, "trainer.epochs=0"], {}),
    "completion query (model=res)": ([*TRAIN, "-sc", "query=bash"],
                                     {"COMP_LINE": "latentgeo-train model=res",
                                      "COMP_POINT": "26"}),
}


def wall(command: list[str], env: dict[str, str]) -> float:
    tic = time.perf_counter()
    subprocess.run(command, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as outputs:
        env = {"LATENTGEO_OUTPUT": outputs, "OMP_NUM_THREADS": "1"}
        seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.repeats):  # interleaved, so machine load hits every row alike
            for name, (command, extra) in COMMANDS.items():
                seconds[name].append(wall(command, {**env, **extra}))
    print(f"# {Path(__file__).name}  load avg {os.getloadavg()[0]:.1f}  "
          f"median of {args.repeats} (min–max), wall seconds")
    baseline = statistics.median(seconds["import torch (baseline)"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<36}{median:>7.2f}{min(values):>8.2f}–{max(values):<6.2f}"
              f"{median / baseline:>8.2f}× import torch")
    ratios = {n: statistics.median(v) / baseline for n, v in seconds.items()
              if n != "import torch (baseline)"}
    print("ratio vs import torch: " + "  ".join(f"{n.split(' (')[0]} {r:.2f}"
                                                 for n, r in ratios.items())
          + f"  (target <= 0.5; worst {max(ratios.values()):.2f})")


if __name__ == "__main__":
    main()
