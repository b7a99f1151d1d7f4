"""The report's field-geometry section: drawn from the names the five field families record
(neural_collapse, effective_rank, intrinsic_dimension, cka, weight_spectra), absent without
them, and the numbers in the figures are the recorded ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentgeo import figures, report
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import compose_cfg

FIELD = ["model=cnn3", "model.width=4", "dataset=digits", "trainer.epochs=2", "metrics.every=1",
         "logger=local", "trainer.progress=false", "metrics=all", "metrics.perturbation.when=off",
         "metrics.ood.when=off", "metrics.cka.samples=100", "metrics.dib.when=off",
         "metrics.neural_collapse.blocks=all", "metrics.effective_rank.blocks=all",
         "metrics.intrinsic_dimension.blocks=all", "metrics.intrinsic_dimension.samples=100"]
FIELD_FIGURES = ("neural_collapse", "rank", "effective_rank_erank_depth",
                 "intrinsic_dimension_twonn_depth", "cka", "cka_init", "weight_spectra")


@pytest.fixture(scope="module")
def field_run(tmp_path_factory) -> RunDir:
    run_dir = tmp_path_factory.mktemp("field")
    train(compose_cfg(FIELD), run_dir)
    return RunDir(run_dir)


def test_the_field_section_draws_every_family_recorded(field_run):
    page = report.build_report(field_run.dir).read_text()
    assert '<h2 id="field">Field geometry</h2>' in page
    for name in FIELD_FIGURES:
        assert (field_run.dir / "report_files" / f"{name}.png").is_file(), name
        assert f"report_files/{name}.png" in page


def test_no_field_section_without_its_names(tmp_path):
    train(compose_cfg(["model=mlp", "model.widths=[16]", "dataset=digits", "trainer.epochs=1",
                       "logger=local", "trainer.progress=false", "metrics.every=1"]), tmp_path)
    page = report.build_report(tmp_path).read_text()
    assert 'id="field"' not in page
    assert not any((tmp_path / "report_files" / f"{n}.png").exists() for n in FIELD_FIGURES)


def test_the_cka_heatmap_holds_the_recorded_values(field_run, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "similarity_figure",
                        lambda panels, colorbar: drawn.extend(panels) or figures.Figure())
    variant = report.run_variant(field_run)
    report.cka_made([variant])
    (panel,) = drawn
    last = field_run.events()[-1]
    assert panel.labels[-1] == "penultimate" and len(panel.labels) == 4
    assert np.allclose(np.diag(panel.matrix), 1.0) and np.allclose(panel.matrix, panel.matrix.T)
    for i, a in enumerate(panel.labels):
        for j, b in enumerate(panel.labels[i + 1:], start=i + 1):
            assert panel.matrix[i, j] == last[f"test/cka/{a}/{b}"]


def test_alpha_per_layer_shows_weightwatchers_band_and_the_recorded_alphas(field_run,
                                                                          monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "depth_figure",
                        lambda panels, **_: drawn.extend(panels) or figures.Figure())
    report.spectra_made([report.run_variant(field_run)])
    (panel,) = drawn
    assert panel.band == (2.0, 6.0)
    last = field_run.events()[-1]
    final = panel.series[-1]
    assert final.label.endswith("(final)")
    for layer, value in zip(panel.layers, final.mean, strict=True):
        recorded = last[f"weight_spectra/{layer}/alpha"]
        assert value == recorded or (math.isnan(value) and math.isnan(recorded))
