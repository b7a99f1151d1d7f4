"""Static HTML report of a run dir or a sweep dir: the figures a paper would show, as PNG (on
the page) and SVG (for the paper) beside it.

    python -m latentgeo.report RUN_DIR|SWEEP_DIR [--out report.html] [--select METRIC]

Writes ``report.html`` and ``report_files/<figure>.png|.svg`` (relative links, no scripts, no
network: it opens offline in any browser). A sweep's variants are compared in one figure per
family (mean ± population std over the selected run of each seed, as the aggregate table); a
single run is a sweep of one variant, drawn by the same functions (``latentgeo.figures``). Each
figure is drawn only when its data exist; a value that is missing is explained where it would
be (e.g. "AUROC undefined: no class has more than 2 misclassified test samples").

======================  ================================================================
figure (file)           data it needs (run dir)
======================  ================================================================
scores                  summary.json: test/accuracy, test/mahalanobis/auroc_exact,
                        test/perturbation/score, test/same_encoding_fraction,
                        test/binarity/score (final epoch)
roc                     penultimate.npz with train/test x_pen, labels, preds
                        (metrics.penultimate.when=last)
training                <split>/accuracy, <split>/loss over ≥ 2 epochs
schedule                lr, gamma (γ: heads with the compression loss only)
encoding                <split>/binarity/*, <split>/same_encoding_fraction over epochs
collapse                <split>/collapse/* (BE, grouped by predictions) over epochs
nc1                     <split>/nc1/<block> (metrics.nc1.when)
hyperplanes             hyperplanes/<layer>/mean|mass (epoch 0 = init), hyperplanes/net/*
code_hist_<v>, code_2d  penultimate.npz with ≤ 16 nodes: per-node histograms by class,
                        the two highest-variance nodes, the code word per class
code_pca_<v>            penultimate.npz with > 16 dimensions (no_pen): PCA by class
reinit_<v>              reinit.json (metrics.reinit.when=last, analysis.reinit)
alpha_<v>               alpha.json, else alpha/<site> in metrics.jsonl
information_plane_<v>   dib/vmin/<block>/<split> and dib/vsuff/<block>/<split>
lr_find_<v>             lr_find.json
======================  ================================================================

``<v>`` is the variant (its short label); a run report has no suffix. Run-level figures
(those with ``<v>``) show one representative run per variant: the selected run of the lowest
seed (not the best one, to avoid showing a cherry-picked repeat). Metrics computed once
(``when=last``) are final scores, never curves; sample counts (``num_*``: how a metric was
computed) are not plotted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from latentgeo import aggregate as agg
from latentgeo import figures, selection
from latentgeo.families.latent import BINARY_CODE_HEADS
from latentgeo.records import DISK_FULL, RunDir, is_run_dir, write_problem
from latentgeo.report.compared import ENCODING_METRICS, curve_made, roc_made, scores_made
from latentgeo.report.geometry import (
    cka_made,
    collapse_made,
    field_collapse_made,
    hyperplanes_made,
    nc1_made,
    rank_made,
    spectra_made,
)
from latentgeo.report.markup import (
    FigureEntry,
    _aggregate_html,
    _esc,
    _figures_html,
    _nav,
    _page,
    _run_facts,
    _runs_html,
)
from latentgeo.report.reading import Made, Variant, run_variant, sweep_variants
from latentgeo.report.run_level import run_level_made

FORMATS = ("png", "svg")


def compared_made(variants: Sequence[Variant], variant_axis: str) -> list[Made]:
    """The figures comparing every variant (mean ± std over seeds)."""
    scores, _ = scores_made(variants, variant_axis)
    made = [
        scores,
        roc_made(variants),
        curve_made(variants, "training", "Accuracy and loss over epochs",
                   ["accuracy", "loss"], "Solid: test, dashed: train (eval mode, no "
                   "augmentation)."),
        curve_made(variants, "schedule", "Schedules", ["lr", "gamma"],
                   "γ exists only for heads with the compression loss (bin_enc).",
                   with_split=False, log=("lr", "gamma")),
        curve_made(variants, "encoding", "Binary encoding over epochs", ENCODING_METRICS,
                   f"BE's binarity metrics (heads {', '.join(BINARY_CODE_HEADS)} only) and the "
                   "same-encoding fraction, at every evaluation."),
        collapse_made(variants),
        nc1_made(variants),
        hyperplanes_made(variants),
        field_collapse_made(variants),
        *rank_made(variants),
        *cka_made(variants),
        spectra_made(variants),
    ]
    return [m for m in made if m is not None]


def _write(made: Made, files_dir: Path) -> FigureEntry:
    paths = figures.save_figure(made.fig, files_dir / made.name, FORMATS)
    return FigureEntry(made.figure_id, made.title,
                       [f"{files_dir.name}/{p.name}" for p in paths], made.caption)


SECTIONS = (  # (heading, anchor, figure ids) of the compared figures, in page order
    ("Final-epoch scores", "scores", ("scores", "roc")),
    ("Training", "training", ("training", "schedule")),
    ("Binary encoding", "encoding", ("encoding",)),
    ("Collapse and NC1", "collapse", ("collapse", "nc1")),
    ("Hyperplanes", "hyperplanes", ("hyperplanes",)),
    ("Field geometry", "field", ("neural_collapse", "rank", "effective_rank_erank_depth",
                                 "effective_rank_rankme_depth", "intrinsic_dimension_twonn_depth",
                                 "intrinsic_dimension_mle_depth", "cka", "cka_init",
                                 "weight_spectra")),
)


def figures_body(variants: Sequence[Variant], files_dir: Path, variant_axis: str,
                 sweep: bool) -> tuple[str, list[tuple[str, str]]]:
    """The figure sections (compared figures, then each variant's own); returns the HTML and
    the (anchor, heading) list of the sections written."""
    compared = {m.figure_id: _write(m, files_dir) for m in compared_made(variants, variant_axis)}
    parts, nav = [], []
    for heading, anchor, ids in SECTIONS:
        entries = [compared[i] for i in ids if i in compared]
        empty = training_gap(variants) if anchor == "training" and not entries else None
        if entries or empty:  # Training stays, saying why it is empty
            nav.append((anchor, heading))
            note = f'<p class="warn">{_esc(empty)}</p>' if empty else ""
            parts.append(f'<h2 id="{anchor}">{_esc(heading)}</h2>{note}'
                         f"{_figures_html(entries)}")
    for variant in variants:
        made, notes = run_level_made(variant, f"_{variant.slug}" if variant.slug else "")
        entries = [_write(m, files_dir) for m in made]
        anchor = f"variant-{variant.slug}" if variant.slug else "run-figures"
        heading = (f"{variant.label}: the code and the run's own figures" if sweep
                   else "The code and the run's own figures")
        seed = variant.seeds[0] if variant.seeds else None
        lr = agg.format_number(variant.lrs[0]) if variant.lrs else "-"
        intro = (f"<p>Representative run <code>{_esc(variant.representative.name)}</code> "
                 f"(seed {_esc(seed)}, lr {_esc(lr)}): the selected run of the lowest "
                 "seed.</p>" if sweep else "")
        notes_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
        if entries or notes:
            nav.append((anchor, variant.label if sweep else "the code"))
            parts.append(f'<h2 id="{anchor}">{_esc(heading)}</h2>{intro}{notes_html}'
                         f"{_figures_html(entries)}")
    if not compared and not any("<figure" in p for p in parts):
        parts.append("<p>No figure: none of the data they need exist.</p>")
    return "\n".join(parts), nav


def training_gap(variants: Sequence[Variant]) -> str:
    """Why there are no training curves: each shown run's metrics.jsonl is missing, holds no
    readable event, or no accuracy or loss."""
    why = []
    for run in (run for variant in variants for run in variant.runs):
        if not run.artifact("metrics").is_file():
            why.append(f"{run.name}: no metrics.jsonl")
        elif not run.events():
            why.append(f"{run.name}: metrics.jsonl holds no readable event")
        else:
            why.append(f"{run.name}: metrics.jsonl has no accuracy or loss")
    return "No training curves: " + ("; ".join(why) if why else "no run to show") + "."


def run_report_body(run_dir: Path, files_dir: Path) -> str:
    run = RunDir(run_dir)
    variant = run_variant(run)
    body, nav = figures_body([variant], files_dir, "run", sweep=False)
    return f"{_nav([('run', 'run'), *nav])}<h2 id=\"run\">Run</h2>{_run_facts(run)}\n{body}"


def sweep_report_body(sweep_dir: Path, files_dir: Path, select: str) -> str:
    runs = selection.sweep_runs(sweep_dir)
    try:
        result = selection.aggregate(runs, select=select, sweep_dir=sweep_dir)
    except KeyError as error:  # nothing selectable yet (all running or failed): still list runs
        return (f'<p class="warn">No aggregate: {_esc(error.args[0])}</p>'
                f"<h2>Runs</h2>{_runs_html(runs, select)}")
    by_name = {run.name: run for run in runs}
    variants = sweep_variants(result, by_name)
    axis = ", ".join(result.variant_keys) or "variant"
    body, nav = figures_body(variants, files_dir, axis, sweep=True)
    unusable = "".join(f"<p class=\"warn\">{_esc(v.label)}: no usable run.</p>"
                       for v in result.variants if not v.selected)
    return (f"{_nav([('aggregate', 'aggregate'), ('runs', 'runs'), *nav])}"
            f'<h2 id="aggregate">Aggregate</h2>{_aggregate_html(result)}{unusable}'
            f'<h2 id="runs">Runs</h2>{_runs_html(runs, select, result)}\n{body}')


def build_report(path: str | Path, out: str | Path | None = None,
                 select: str = selection.DEFAULT_SELECT) -> Path:
    """Write the report of a run dir or sweep dir; return the HTML path (default
    ``<path>/report.html``, figures in ``report_files/`` beside it)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    out = Path(out) if out else path / "report.html"
    files_dir = out.parent / f"{out.stem}_files"
    files_dir.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:  # a figure whose data disappeared must not linger
        for stale in files_dir.glob(f"*.{fmt}"):
            stale.unlink()
    if is_run_dir(path):
        title, body = f"latentgeo run {path.resolve().name}", run_report_body(path, files_dir)
    else:
        title = f"latentgeo sweep {path.resolve().name}"
        body = sweep_report_body(path, files_dir, select)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(_page(title, body), encoding="utf-8")
    tmp.replace(out)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.report",
        description="Write a static report.html (figures as PNG and SVG in report_files/) for "
                    "a run dir or a sweep dir. Each figure appears only when its data exist.",
        epilog="figures and the data each needs:\n\n" + (__doc__ or "")[
            (__doc__ or "=").index("="):],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="a run dir or a sweep dir")
    parser.add_argument("--out", type=Path, help="HTML file to write (default PATH/report.html)")
    parser.add_argument("--select", default=selection.DEFAULT_SELECT, metavar="METRIC",
                        help="sweep only: summary key for the best-LR selection "
                             "(test/accuracy or val/accuracy)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = build_report(args.path, args.out, args.select)
    except (FileNotFoundError, KeyError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"error: {write_problem(error, Path(args.path))}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
