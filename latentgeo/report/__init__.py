"""Static HTML report of a run dir or a sweep dir: the figures a paper would show, as PNG (on
the page) and SVG (for the paper) beside it.

    python -m latentgeo.report RUN_DIR|SWEEP_DIR [--out report.html] [--select METRIC]

The figures and the data each needs: ``latentgeo.report.page`` (and ``--help``). By what they
do: ``reading`` (the variants, their runs' curves and mean curves, penultimate features, why a
value is missing), ``compared`` (final scores, ROC, curves over epochs), ``geometry`` (collapse,
NC1, hyperplanes and the "Field geometry" section), ``run_level`` (the code itself, re-init,
ReLU_α, the information plane, the LR range test), ``markup`` (CSS, tables, figure elements),
``page`` (the sections in page order, ``build_report``, the command line). This package only
re-exports their names.
"""

from latentgeo.report.compared import (
    ENCODING_METRICS,
    METRIC_TEXT,
    curve_made,
    roc_made,
    roc_panels,
    scores_made,
)
from latentgeo.report.geometry import (
    FIELD_COLLAPSE,
    cka_made,
    collapse_made,
    depth_made,
    field_collapse_made,
    hyperplanes_made,
    nc1_made,
    rank_made,
    spectra_made,
)
from latentgeo.report.markup import (
    CSS,
    LR_CHOICES_SHOWN,
    RUN_FACTS,
    RUNS_SHOWN,
    FigureEntry,
    lr_choices,
)
from latentgeo.report.page import (
    FORMATS,
    SECTIONS,
    build_parser,
    build_report,
    compared_made,
    figures_body,
    main,
    run_report_body,
    sweep_report_body,
    training_gap,
)
from latentgeo.report.reading import (
    DEPTH_EPOCHS,
    SCORES,
    SPLITS,
    Curve,
    Made,
    RunCurves,
    Variant,
    choose_epochs,
    curves,
    is_sample_count,
    is_time_series,
    load_penultimate,
    mean_curves,
    missing_reason,
    run_variant,
    short_labels,
    sweep_variants,
    table_curves,
)
from latentgeo.report.run_level import (
    MAX_CODE_NODES,
    code_made,
    information_plane_made,
    run_level_made,
)

__all__ = [
    # reading
    "SPLITS", "DEPTH_EPOCHS", "Curve", "SCORES", "Variant", "curves", "RunCurves",
    "table_curves", "mean_curves", "is_sample_count", "is_time_series", "choose_epochs",
    "load_penultimate", "short_labels", "sweep_variants", "run_variant", "missing_reason", "Made",
    # compared
    "METRIC_TEXT", "ENCODING_METRICS", "scores_made", "roc_panels", "roc_made", "curve_made",
    # geometry
    "collapse_made", "depth_made", "nc1_made", "FIELD_COLLAPSE", "field_collapse_made",
    "rank_made", "cka_made", "spectra_made", "hyperplanes_made",
    # run_level
    "MAX_CODE_NODES", "code_made", "information_plane_made", "run_level_made",
    # markup
    "CSS", "FigureEntry", "RUN_FACTS", "LR_CHOICES_SHOWN", "lr_choices", "RUNS_SHOWN",
    # page
    "FORMATS", "compared_made", "SECTIONS", "figures_body", "training_gap", "run_report_body",
    "sweep_report_body", "build_report", "build_parser", "main",
]
