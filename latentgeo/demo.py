"""``make demo``: the binary-encoding ablation in miniature, offline, on 2 CPU cores.

Runs ``experiment=demo`` for the four heads as one Hydra multirun, prints one row per head
(final test accuracy and the binary-encoding metrics) and builds the sweep's report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from latentgeo.records import read_json

HEADS = ("bin_enc", "lin_pen", "nonlin_pen", "no_pen")
COLUMNS = [
    ("test/accuracy", "test acc"),
    ("test/binarity/score", "binarity"),
    ("test/binarity/peaks_distance_mean", "peaks dist"),
    ("test/same_encoding_fraction", "same enc"),
    ("test/mahalanobis/auroc", "AUROC"),
    ("test/perturbation/score", "perturb"),
]


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(sweep_dir: Path) -> str:
    rows = [["head", *(title for _, title in COLUMNS), "state", "run dir"]]
    for run_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                          key=lambda p: int(p.name)):
        config = (run_dir / "config.yaml").read_text()
        head = next(h for h in HEADS if f"name: {h}\n" in config)
        status = read_json(run_dir / "status.json")
        summary = read_json(run_dir / "summary.json") if status["state"] == "ok" else {}
        rows.append([head, *(fmt(summary.get(key)) for key, _ in COLUMNS), status["state"],
                     str(run_dir)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    os.environ.setdefault("LATENTGEO_SWEEP_ID", f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    os.environ.setdefault("WANDB_MODE", "offline")
    outputs = Path(os.environ.get("LATENTGEO_OUTPUT", "outputs"))
    sweep_dir = outputs / "sweeps" / os.environ["LATENTGEO_SWEEP_ID"]
    tic = time.perf_counter()
    command = [sys.executable, "-m", "latentgeo.train", "-m", "experiment=demo",
               f"head={','.join(HEADS)}", "trainer.progress=false", *args.overrides]
    print("$", " ".join(command), flush=True)
    code = subprocess.call(command)
    elapsed = time.perf_counter() - tic
    print(f"\nbinary-encoding ablation on digits ({elapsed / 60:.1f} min):\n")
    print(table(sweep_dir))
    from latentgeo.report import build_report

    report = build_report(sweep_dir)
    print(f"\nresults: {sweep_dir}\nreport:  {report}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
