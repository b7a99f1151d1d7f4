"""The shared figure functions (``latentgeo.figures``) on small inputs whose picture is known:
the plotted numbers are the inputs, the ROC of a perfect separator is the unit step with AUC 1,
and every figure keeps the house rules (labelled axes, one legend outside the panels, nothing
drawn outside the canvas)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from sklearn.metrics import roc_auc_score

from latentgeo import figures


def figure_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def assert_house_rules(fig: Figure, name: str = "figure", drawn: bool = False) -> None:
    """Every axis with tick labels has a label; at most one legend, the figure's, never one
    inside a panel; after drawing (``drawn``: it was saved, so its layout is done), nothing
    (titles, labels, legend) sticks out of the canvas."""
    if not drawn:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        assert ax.get_legend() is None, f"{name}: a legend inside a panel"
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            ticks = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
            if ticks and axis.get_visible():
                assert label.strip(), f"{name}: an axis with ticks {ticks[:3]} has no label"
    assert len(fig.legends) <= 1, f"{name}: {len(fig.legends)} legends"
    box = fig.get_tightbbox(renderer)  # inches, the drawn artists only
    width, height = fig.get_size_inches()
    tolerance = 4 / fig.dpi  # a few pixels: rotated text extents are approximate
    assert box.x0 >= -tolerance and box.y0 >= -tolerance, f"{name}: clipped at left/bottom {box}"
    assert box.x1 <= width + tolerance and box.y1 <= height + tolerance, \
        f"{name}: clipped at right/top {box} (canvas {width:.2f} × {height:.2f} in)"


# ----------------------------------------------------------------------------- ROC


def test_roc_of_a_perfect_separator_is_the_unit_step() -> None:
    fpr, tpr, auc = figures.roc_points(correct=[0.1, 0.2, 0.3], wrong=[0.7, 0.9])
    assert auc == 1.0
    # every misclassified sample is flagged before any correct one: up the y axis, then across
    assert list(zip(fpr, tpr, strict=True)) == [(0, 0), (0, 0.5), (0, 1), (1 / 3, 1),
                                                (2 / 3, 1), (1, 1)]
    _, _, reverse = figures.roc_points(correct=[0.7, 0.9], wrong=[0.1, 0.2, 0.3])
    assert reverse == 0.0
    fpr, tpr, tied = figures.roc_points(correct=[1.0, 1.0], wrong=[1.0])  # all tied: diagonal
    assert tied == 0.5 and list(fpr) == [0, 1] and list(tpr) == [0, 1]
    fpr, tpr, empty = figures.roc_points(correct=[0.1], wrong=[])
    assert math.isnan(empty) and fpr.size == tpr.size == 0


def test_roc_area_is_sklearns_auroc_with_ties() -> None:
    rng = np.random.default_rng(3)
    correct = rng.integers(0, 20, 200) / 4.0  # many ties
    wrong = rng.integers(5, 25, 60) / 4.0
    fpr, tpr, auc = figures.roc_points(correct, wrong)
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(60)], np.r_[correct, wrong])
    assert auc == pytest.approx(expected, abs=1e-12)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)


def test_roc_figure_draws_the_curves_and_says_why_one_is_missing() -> None:
    fpr, tpr, auc = figures.roc_points([0.1, 0.2, 0.3], [0.7, 0.9])
    fig = figures.roc_figure([
        figures.RocPanel("bin_enc", [figures.RocCurve("seed 0", fpr, tpr, auc)]),
        figures.RocPanel("no_pen", [], "seed 0: ROC undefined: no class has more than 2 "
                                       "misclassified test samples")])
    assert_house_rules(fig, "roc")
    curve = fig.axes[0].lines[1]  # after the chance diagonal
    assert list(curve.get_xdata()) == list(fpr) and list(curve.get_ydata()) == list(tpr)
    texts = " ".join(figure_texts(fig)).replace("\n", " ")
    assert "seed 0: AUC 1.000" in texts
    assert "seed 0: ROC undefined: no class has more than 2 misclassified test samples" in texts
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["seed 0", "chance"]


# ----------------------------------------------------------------------------- scores


def test_scores_figure_plots_the_means_and_stds_of_its_inputs() -> None:
    accuracy = figures.ScorePanel("test accuracy", "fraction correct", [
        figures.ScoreRow("bin_enc", [0.80, 0.90], [0, 1]),
        figures.ScoreRow("no_pen", [0.70, 0.72, 0.74], [0, 1, 2])], (0.0, 1.0))
    auroc = figures.ScorePanel("AUROC", "AUROC (0.5 = chance)", [
        figures.ScoreRow("bin_enc", [0.95], [0], "seed 1: AUROC undefined: no class has more "
                                                "than 2 misclassified test samples"),
        figures.ScoreRow("no_pen", [], [], "AUROC undefined: no class has more than 2 "
                                           "misclassified test samples")], (0.0, 1.0))
    fig = figures.scores_figure([accuracy, auroc], "head.name")
    assert_house_rules(fig, "scores")
    ax = fig.axes[0]
    containers = ax.containers  # one errorbar per variant, in row order
    means = [float(c.lines[0].get_xdata()[0]) for c in containers]
    assert means == pytest.approx([0.85, 0.72])
    # the bar is ± population std: (0.80, 0.90) → 0.05; (0.70, 0.72, 0.74) → 0.01633
    spans = [c.lines[2][0].get_segments()[0][:, 0] for c in containers]
    assert [float(np.ptp(span)) / 2 for span in spans] == pytest.approx(
        [0.05, np.std([0.70, 0.72, 0.74])])
    rows = [float(c.lines[0].get_ydata()[0]) for c in containers]
    assert rows[0] > rows[1]  # the first variant on top
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert sorted(v for line in crosses for v in line.get_xdata()) == [0.70, 0.72, 0.74, 0.80,
                                                                       0.90]
    texts = " ".join(figure_texts(fig)).replace("\n", " ")
    assert "0.85 ± 0.05 (n=2)" in texts
    assert "AUROC undefined: no class has more than 2 misclassified test samples" in texts
    assert "seed 1: AUROC undefined" in texts
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["no_pen", "bin_enc"]
    assert all(t.get_text() == "" for t in fig.axes[1].get_yticklabels())  # shared rows


def test_scores_figure_of_one_run_has_no_error_bars_and_no_legend() -> None:
    fig = figures.scores_figure([figures.ScorePanel("test accuracy", "fraction correct", [
        figures.ScoreRow("bin_enc", [0.9], [0])])], "run")
    assert_house_rules(fig, "scores of one run")
    assert fig.axes[0].containers == [] and fig.legends == []
    assert list(fig.axes[0].lines[0].get_xdata()) == [0.9]


# ----------------------------------------------------------------------------- curves and depth


def test_curves_figure_one_legend_for_colours_and_splits() -> None:
    lines = [figures.Line("bin_enc", "train", [1, 2, 3], [0.5, 0.6, 0.7], [0.01, 0.02, 0.0]),
             figures.Line("bin_enc", "test", [1, 2, 3], [0.4, 0.5, 0.6]),
             figures.Line("no_pen", "test", [1, 2, 3], [0.3, 0.2, 0.1])]
    fig = figures.curves_figure([figures.CurvePanel("accuracy", "fraction correct", lines)])
    assert_house_rules(fig, "curves")
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.lines] == [[0.5, 0.6, 0.7], [0.4, 0.5, 0.6],
                                                             [0.3, 0.2, 0.1]]
    assert [line.get_linestyle() for line in ax.lines] == ["--", "-", "-"]
    assert len(ax.collections) == 1  # the one band of ± std given
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["bin_enc", "no_pen", "train",
                                                                   "test"]


def test_log_axis_only_over_a_decade() -> None:
    narrow = figures.CurvePanel("γ", "γ", [figures.Line("a", "", [1, 2], [0.010, 0.011])],
                                log=True)
    wide = figures.CurvePanel("lr", "lr", [figures.Line("a", "", [1, 2], [1e-3, 1e-1])], log=True)
    fig = figures.curves_figure([narrow, wide])
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log"]
    assert fig.axes[1].get_ylabel() == "lr (log scale)"


def test_depth_figure_plots_each_epoch_against_the_layers() -> None:
    layers = ["stem.0", "layer1.0.residual.0", "layer1.0.residual.3"]
    series = [figures.DepthSeries("epoch 0 (init)", [0.0, 0.1, -0.1], [0.01, 0.02, 0.03],
                                  extra=0.0),
              figures.DepthSeries("epoch 5 (final)", [-0.2, -0.1, 0.05], extra=-0.1)]
    fig = figures.depth_figure([figures.DepthPanel("mean projection", "mean cos∠(w, 1)", layers,
                                                   series, extra="whole net", reference=0.0)],
                               key_title="epoch (0 = init)")
    assert_house_rules(fig, "depth")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if len(c.lines[0].get_xdata()) == 3]
    assert [list(c.lines[0].get_ydata()) for c in bars] == [[0.0, 0.1, -0.1], [-0.2, -0.1, 0.05]]
    dodged = [c.lines[0].get_xdata() for c in bars]
    assert np.allclose(dodged[0] + 0.035, [0, 1, 2]) and np.allclose(dodged[1] - 0.035, [0, 1, 2])
    assert [t.get_text() for t in ax.get_xticklabels()] == [*layers, "whole net"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["epoch 0 (init)",
                                                                   "epoch 5 (final)"]


# ----------------------------------------------------------------------------- the code itself


def two_class_code(samples: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 has the code (+, −, +), class 1 (−, +, −); node 2 has 3× the scale."""
    rng = np.random.default_rng(0)
    labels = np.arange(samples) % 2
    signs = np.where(labels[:, None] == 0, [1.0, -1.0, 1.0], [-1.0, 1.0, -1.0])
    return signs * [1.0, 1.0, 3.0] + 0.1 * rng.standard_normal((samples, 3)), labels


def test_code_histograms_are_stacked_by_class() -> None:
    x, labels = two_class_code()
    splits = [figures.SplitCodes("train", x, labels),
              figures.SplitCodes("test", x[:10], labels[:10])]
    fig = figures.code_histogram_figure(splits, [0, 1, 2])
    assert_house_rules(fig, "code histograms")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 6  # 3 nodes × 2 splits
    first = fig.axes[0]  # node 0, train: class 0 all above 0, class 1 all below
    heights = {}
    for patch in first.patches:
        heights.setdefault(patch.get_facecolor(), []).append(patch)
    assert len(heights) == 2  # one colour per class
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "1"]


def test_code_scatter_shows_the_code_word_per_class() -> None:
    x, labels = two_class_code()
    fig = figures.code_scatter_figure([figures.SplitCodes("test", x, labels)], (2, 0))
    assert_house_rules(fig, "code scatter")
    word = fig.axes[1].images[0].get_array()
    assert np.array_equal(word, [[1, 0, 1], [0, 1, 0]])  # fraction with x_pen > 0
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert sorted(offsets[:, 0]) == pytest.approx(sorted(x[:, 2]))


def test_top_variance_nodes_and_pca() -> None:
    x, _ = two_class_code()
    assert figures.top_variance_nodes(x, 2)[0] == 2
    rng = np.random.default_rng(1)
    line = np.outer(rng.standard_normal(500), [3.0, 4.0]) / 5  # all variance along (0.6, 0.8)
    mean, axes, ratio = figures.pca(line + [1.0, 2.0], components=1)
    assert np.allclose(mean, np.mean(line + [1.0, 2.0], axis=0))
    assert np.allclose(np.abs(axes[0]), [0.6, 0.8]) and ratio[0] == pytest.approx(1.0)


def test_pca_figure() -> None:
    rng = np.random.default_rng(2)
    labels = np.arange(300) % 3
    x = rng.standard_normal((300, 40)) + 4 * np.eye(40)[labels]
    fig = figures.pca_figure([figures.SplitCodes("train", x, labels),
                              figures.SplitCodes("test", x[:60], labels[:60])])
    assert_house_rules(fig, "pca")
    assert fig.axes[0].get_xlabel().startswith("PC 1 (")
    bars = [p.get_height() for p in fig.axes[2].patches]
    assert len(bars) == 20 and bars == sorted(bars, reverse=True) and sum(bars) <= 1 + 1e-9


# ----------------------------------------------------------------------------- run-level figures


def test_alpha_figure_on_alphas_scale() -> None:
    fig = figures.alpha_figure({"site": {"epochs": [0, 1, 2], "mean": [0.5, 0.5004, 0.5008]}})
    assert_house_rules(fig, "alpha")
    full, change = fig.axes[:2]
    low, high = full.get_ylim()
    assert low < 0 and high > 1  # the whole [0, 1] range: α = 0 identity, α = 1 ReLU
    assert list(change.lines[0].get_ydata()) == pytest.approx([0.0, 0.0004, 0.0008])


def test_information_plane_without_a_colour_bar_for_one_epoch() -> None:
    planes = {"test": {"block0": ([5], [0.5], [2.0]), "block1": ([5], [0.3], [2.1])}}
    fig = figures.information_plane_figure(planes)
    assert_house_rules(fig, "information plane")
    assert len(fig.axes) == 1 and "epoch 5" in fig.axes[0].get_title()
    several = {"test": {"block0": ([1, 2, 3], [0.5, 1.0, 1.5], [1.9, 1.8, 1.7])}}
    fig = figures.information_plane_figure(several)
    assert len(fig.axes) == 2  # the panel and the colour bar over the epochs
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["1", "2", "3"]


def test_reinit_heatmap_marks_missing_cells() -> None:
    result = {"layers": ["backbone.stem.0", "backbone.blocks.layer1.0.residual.0"],
              "sources": {"rand": [0.1, None], "init": [0.5, 0.8]},
              "baseline": {"top1": 0.8}}
    fig = figures.reinit_heatmap_figure(result)
    assert_house_rules(fig, "reinit")
    drop = fig.axes[0].images[0].get_array()
    assert drop[0].tolist() == pytest.approx([0.375, 0.0])  # init first
    assert "n/a" in figure_texts(fig)


def test_save_figure_writes_png_and_svg(tmp_path: Path) -> None:
    fig = figures.curves_figure([figures.CurvePanel("accuracy", "fraction correct", [
        figures.Line("a", "test", [1, 2], [0.5, 0.6])])])
    png, svg = figures.save_figure(fig, tmp_path / "report_files" / "training")
    assert (png.name, svg.name) == ("training.png", "training.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert "accuracy" in svg.read_text()  # text stays text (svg.fonttype none)
    again = tmp_path / "again"
    again.mkdir()
    figures.save_figure(fig, again / "training")
    assert (again / "training.svg").read_bytes() == svg.read_bytes()  # reproducible
    assert fig.get_layout_engine() is not None  # the layout engine is restored
