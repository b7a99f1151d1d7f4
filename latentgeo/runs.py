"""``python -m latentgeo.runs [DIR] [--state failed|running|dead|ok|interrupted]``

Lists the runs and sweeps under DIR (default: the outputs folder, ``$LATENTGEO_OUTPUT`` or
``outputs``): name, state, epoch / epochs, best test accuracy, age, and the reason when the run
did not end ok (or ended ok with an unreadable config or summary, or never learned). A run
whose status.json says ``running`` but whose process is gone (no live owner of its lock:
SIGKILL, a lost node) is shown ``dead``, never ``running``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
from pathlib import Path
from typing import Any

from latentgeo.records import BEST_KEY, RunDir, find_all_runs

REASON_WIDTH = 70


def age(iso: str | None, now: dt.datetime | None = None) -> str:
    """``3m``, ``5h``, ``2d`` since an ISO time; ``-`` when unknown."""
    if not iso:
        return "-"
    try:
        then = dt.datetime.fromisoformat(iso)
    except ValueError:
        return "-"
    seconds = ((now or dt.datetime.now(dt.timezone.utc)) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"


def is_finite(value: object) -> bool:
    """A real number, not NaN or inf (a damaged record may hold them: JSON reads NaN)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def listed_best_and_epochs(run: RunDir, status: dict) -> tuple[float | None, Any]:
    """Best test accuracy and planned epochs: from status.json (where training records them),
    else, for a run dir recorded before it did, from summary.json, its events and its config."""
    best = status.get(BEST_KEY)
    if not is_finite(best) and "epochs" not in status:
        best = (run.summary() or {}).get(BEST_KEY)
        if not is_finite(best):  # a run still going (or a damaged summary): its events' best
            accuracies = [e["test/accuracy"] for e in run.events()
                          if is_finite(e.get("test/accuracy"))]
            best = max(accuracies) if accuracies else None
    epochs = status.get("epochs")
    return (best if is_finite(best) else None,
            run.flat_config().get("trainer.epochs", "?") if epochs is None else epochs)


def row(run: RunDir, root: Path) -> list[str]:
    status = run.status() or {}
    best, epochs = listed_best_and_epochs(run, status)
    state = run.shown_state
    if state == "ok" and "epochs" in status:  # training recorded why in status.json (never
        reason = status.get("reason") or ""  # learned); listing parses nothing else
    else:  # an older record's ok run too: an unreadable config or summary, never learned
        reason = run.reason or ""
    if state == "dead":
        reason = "no live process holds the run (killed?); rerun the same command to resume"
    reason = reason.splitlines()[0] if reason else ""
    if len(reason) > REASON_WIDTH:
        reason = reason[:REASON_WIDTH - 3] + "..."
    return [str(run.dir.relative_to(root)) if run.dir != root else run.dir.name, state,
            f"{status.get('epoch', 0) if status else '-'}/{epochs}",
            "-" if best is None else f"{best:.4f}",
            age(status.get("ended") or status.get("resumed_at") or status.get("started")),
            reason]


def table(rows: list[list[str]]) -> str:
    header = ["run", "state", "epoch", "best test acc", "age", "reason"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentgeo.runs",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("dir", nargs="?", type=Path,
                        default=Path(os.environ.get("LATENTGEO_OUTPUT", "outputs")))
    parser.add_argument("--state", choices=("ok", "failed", "running", "dead", "interrupted",
                                            "missing", "unreadable"),
                        help="only runs in this state")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a directory", file=sys.stderr)
        return 2
    runs = find_all_runs(args.dir)
    rows = [row(run, args.dir) for run in runs]
    if args.state:
        rows = [r for r in rows if r[1] == args.state]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    print(table(rows) if rows else f"no runs under {args.dir}"
          + (f" in state {args.state}" if args.state else ""))
    if rows:
        print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
