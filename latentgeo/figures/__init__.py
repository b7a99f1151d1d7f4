"""Figures shared by the runs' own PNGs (``reinit.png``, ``alpha.png``, ``lr_find.png``) and the
HTML report (a run's and a sweep's report draw with the same functions). Object-oriented
matplotlib on the Agg canvas: no pyplot state, no display, safe in the training process and in
worker processes.

Every function takes plain numbers (lists, numpy arrays, small dataclasses) and returns a
``Figure``; reading run dirs and choosing what to show is the report's job. House rules, which
``tests/test_figures.py`` checks: every axis has a label (name and unit), one legend per figure
placed outside the panels (a colour key where colour means something), titles that fit, and
values that are missing are said in the panel where they would be.

By what they draw: ``base`` (the style, ``styled``, saving, layout, colours, legends),
``compared`` (final scores, ROC, curves over epochs), ``layers`` (values per layer against
depth, layer × layer similarity), ``code`` (the code itself: histograms, scatter, PCA, the
information plane), ``analyses`` (a run's own: re-initialisation, ReLU_α, LR range test). This
package only re-exports their names.

Component layer: matplotlib, numpy and ``latentgeo.records`` (atomic writes) only.
"""

from matplotlib.figure import Figure  # the type every figure function returns

from latentgeo.figures.analyses import (
    alpha_figure,
    alpha_sites,
    lr_find_figure,
    plot_alpha_trajectories,
    plot_lr_find,
    plot_reinit_heatmap,
    reinit_drop_matrix,
    reinit_heatmap_figure,
    source_order,
)
from latentgeo.figures.base import (
    ANNOTATE_MAX_CELLS,
    DPI,
    PAGE_WIDTH,
    REPORT_DPI,
    STYLE,
    axis_label,
    balanced_columns,
    colors,
    legend_below,
    log_axis,
    new_figure,
    note_in_axes,
    save_figure,
    save_png,
    sequence_colors,
    styled,
    wants_log,
    wrap,
)
from latentgeo.figures.code import (
    MAX_SCATTER_POINTS,
    SplitCodes,
    class_colours,
    code_histogram_figure,
    code_scatter_figure,
    information_plane_figure,
    pca,
    pca_figure,
    top_variance_nodes,
)
from latentgeo.figures.compared import (
    LINE_STYLES,
    SPLIT_STYLE,
    CurvePanel,
    Line,
    RocCurve,
    RocPanel,
    ScorePanel,
    ScoreRow,
    curves_figure,
    mean_std,
    roc_figure,
    roc_points,
    scores_figure,
)
from latentgeo.figures.layers import (
    DepthPanel,
    DepthSeries,
    MatrixPanel,
    depth_figure,
    similarity_figure,
)

__all__ = [
    "Figure",
    # base
    "REPORT_DPI", "DPI", "PAGE_WIDTH", "ANNOTATE_MAX_CELLS", "STYLE", "styled", "save_png",
    "save_figure", "new_figure", "colors", "sequence_colors", "legend_below", "log_axis",
    "wants_log", "balanced_columns", "wrap", "note_in_axes", "axis_label",
    # compared
    "ScoreRow", "ScorePanel", "mean_std", "scores_figure", "roc_points", "RocCurve", "RocPanel",
    "LINE_STYLES", "roc_figure", "Line", "CurvePanel", "SPLIT_STYLE", "curves_figure",
    # layers
    "DepthSeries", "DepthPanel", "depth_figure", "MatrixPanel", "similarity_figure",
    # code
    "MAX_SCATTER_POINTS", "class_colours", "SplitCodes", "code_histogram_figure",
    "top_variance_nodes", "pca", "code_scatter_figure", "pca_figure", "information_plane_figure",
    # analyses
    "source_order", "reinit_drop_matrix", "reinit_heatmap_figure",
    "plot_reinit_heatmap", "plot_alpha_trajectories", "alpha_sites", "alpha_figure",
    "lr_find_figure", "plot_lr_find",
]
