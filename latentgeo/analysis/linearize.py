"""Fold the ReLU_α sites a run has made (nearly) linear into identities and measure the cost.

    python -m latentgeo.analysis.linearize RUN_DIR [--threshold 0.05] [--device D]

ReLU_α(x) = x + α·ReLU(−x) (docs/definitions.md §4.2): α = 0 is the identity, so a site whose α is
≤ ``threshold`` on every channel is replaced by ``nn.Identity`` (``fold_linear_alphas``). The
folded function differs from the trained one by at most threshold·|x⁻| per folded site, and
not at all for α exactly 0. Reports test top-1 before and after, a table (site, α mean, α max,
folded?) and writes ``linearize.json`` = ``{"threshold", "folded": [sites], "accuracy_before",
"accuracy_after", "alphas": {site: mean α}, "alpha_max": {site: max α}}`` into the run dir.
The run's checkpoints are not modified. Exit code 2 when the model has no ReLU_α site.

The α trajectories of a run (``alpha.json`` → ``alpha.png``) are drawn by
``latentgeo.figures.analyses.plot_alpha_trajectories``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from torch import nn

from latentgeo.build import load_run, owning
from latentgeo.metrics.features import Batches, collect_features
from latentgeo.models.relu_alpha import alpha_stats, fold_linear_alphas, relu_alpha_modules

DEFAULT_THRESHOLD = 0.05


def linearize(model: nn.Module, test_batches_factory: Batches,
              threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Test top-1 of ``model``, then fold every ReLU_α site with α ≤ ``threshold`` on all
    channels into ``nn.Identity`` **in place**, then test top-1 again. Returns the
    ``linearize.json`` structure (module docstring); ``alphas``/``alpha_max`` are the values
    before folding. Raises ValueError when the model has no ReLU_α site or the threshold is
    outside [0, 1]."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold={threshold!r} must lie in [0, 1] (α's range)")
    if not relu_alpha_modules(model):
        raise ValueError("the model has no ReLU_α (ReLUAlpha) sites: nothing to linearise "
                         "(train with model.activation=relu_alpha)")
    stats = alpha_stats(model)
    maxima = {name: float(module.alpha().detach().max()) for name, module in
              relu_alpha_modules(model)}
    before = collect_features(model, test_batches_factory()).accuracy
    folded = fold_linear_alphas(model, threshold)
    after = collect_features(model, test_batches_factory()).accuracy
    return {"threshold": threshold, "folded": folded, "accuracy_before": before,
            "accuracy_after": after, "alphas": {site: s["mean"] for site, s in stats.items()},
            "alpha_max": maxima}


def format_table(result: dict[str, Any]) -> str:
    folded = set(result["folded"])
    width = max([len("site"), *map(len, result["alphas"])])
    lines = [f"{'site'.ljust(width)}  {'α mean':>8}  {'α max':>8}  folded"]
    for site, mean in result["alphas"].items():
        lines.append(f"{site.ljust(width)}  {mean:8.4f}  {result['alpha_max'][site]:8.4f}  "
                     f"{'yes' if site in folded else 'no'}")
    lines.append(f"threshold {result['threshold']}: {len(folded)}/{len(result['alphas'])} "
                 f"sites folded; test top-1 {result['accuracy_before']:.4f} -> "
                 f"{result['accuracy_after']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.analysis.linearize",
        description="Fold ReLU_α sites with α <= threshold into identities; compare test "
                    "accuracy before/after; writes linearize.json into the run dir.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"fold a site when α <= this on every channel "
                             f"(default {DEFAULT_THRESHOLD})")
    parser.add_argument("--device", default=None, help="default: the run's trainer.device")
    args = parser.parse_args(argv)
    return owning(args.run_dir, "python -m latentgeo.analysis.linearize", lambda: run_command(args))


def run_command(args: argparse.Namespace) -> int:
    """The command's body, with the run dir's owner lock held."""
    try:
        run = load_run(args.run_dir, "last", args.device)
        result = linearize(run.model, run.loaders.eval["test"].epoch, args.threshold)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = run.run.write_artifact("linearize", result)
    print(format_table(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
