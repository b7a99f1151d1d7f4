"""The geometry families against closed forms, their streaming and sampling paths, their
config errors, and a real run: trained with them on, then evaluated post hoc."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from latentgeo import evaluate, families
from latentgeo.build import build_loaders, load_data
from latentgeo.checks import validate
from latentgeo.config import ConfigError, to_typed
from latentgeo.metrics.collapse import NC1Accumulator
from latentgeo.metrics.effective_rank import effective_rank_metrics
from latentgeo.metrics.features import collect_features, sample_rows
from latentgeo.metrics.intrinsic_dimension import intrinsic_dimension_metrics
from latentgeo.metrics.neural_collapse import (
    CLASS_MEAN_KEYS,
    CLASSIFIER_KEYS,
    neural_collapse_metrics,
    self_duality_distance,
)
from latentgeo.models import build_model
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg

FAMILY_NAMES = ("neural_collapse", "effective_rank", "intrinsic_dimension")
ROUNDING = 1e-12  # float64 rounding of O(1) quantities built from a few hundred terms


def simplex_etf(num_classes: int, dim: int, scale: float = 3.0) -> torch.Tensor:
    """K unit-norm·scale vectors with pairwise cosine −1/(K−1), in a random K-dim subspace."""
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=g, dtype=torch.float64))
    centred = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    return scale * math.sqrt(num_classes / (num_classes - 1)) * centred @ basis.T


def test_a_perfect_simplex_etf_has_zero_nc_errors_and_full_ncc_agreement():
    num_classes, dim = 5, 12
    means = simplex_etf(num_classes, dim) + 2.0  # collapse is translation invariant
    labels = torch.arange(num_classes).repeat(20)
    features = means[labels]  # every sample on its class mean
    weight = 0.3 * (means - means.mean(0))  # self-dual up to scale
    predictions = (features @ weight.T).argmax(1)
    values = neural_collapse_metrics(features, labels, num_classes, weight, predictions)
    for key in ("nc1", "nc1_svd", "nc1_trace_ratio", "nc2_equinorm", "nc2_etf_error",
                "nc2_equiangularity", "cdnv", "nc3_self_duality"):
        assert abs(values[key]) < ROUNDING, (key, values[key])
    assert values["nc4_ncc_agreement"] == 1.0
    assert self_duality_distance(weight, means - means.mean(0)) < ROUNDING


def test_departures_from_the_etf_raise_the_errors_by_the_worked_amounts():
    """Three classes in the plane, worked by hand: NC1's trace ratio, the ETF error of means
    that are not equiangular, and CDNV of a known within-class spread."""
    num_classes = 3
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    offsets = torch.tensor([[0.1, 0], [-0.1, 0], [0, 0.2], [0, -0.2], [0, 0], [0, 0]],
                           dtype=torch.float64)
    values = neural_collapse_metrics(means[labels] + offsets, labels, num_classes)
    # tr Σ_W = (2·0.01 + 2·0.04) / 6; M = means (they sum to 0), tr Σ_B = ‖M‖²_F / 3 = 4/3
    assert values["nc1_trace_ratio"] == pytest.approx((0.1 / 6) / (4 / 3), rel=1e-12)
    gram = means @ means.T
    simplex = (torch.eye(3, dtype=torch.float64) - 1 / 3) / math.sqrt(2)
    expected = (gram / gram.norm() - simplex).norm().item()
    assert values["nc2_etf_error"] == pytest.approx(expected, rel=1e-12) and expected > 0.1
    # CDNV: V = (0.01, 0.04, 0), ‖μ_i − μ_j‖² = 2, 5, 5 for the pairs (0,1), (0,2), (1,2)
    cdnv = ((0.01 + 0.04) / 2 / 2 + (0.01 + 0) / 2 / 5 + (0.04 + 0) / 2 / 5) / 3
    assert values["cdnv"] == pytest.approx(cdnv, rel=1e-12)


def test_fewer_than_two_classes_give_nan_not_an_error():
    features = torch.randn(10, 4)
    values = neural_collapse_metrics(features, torch.zeros(10, dtype=torch.long), 3,
                                     torch.randn(3, 4), torch.zeros(10, dtype=torch.long))
    assert sorted(values) == sorted(CLASS_MEAN_KEYS + CLASSIFIER_KEYS)
    assert all(math.isnan(v) for v in values.values())


def test_nc1_accumulator_defaults_are_th_and_options_are_the_reference():
    """The default NC1Accumulator is unchanged (TH: sample-mean centring, 1e-5 cut); the
    reference's centring differs on unbalanced classes."""
    g = torch.Generator().manual_seed(1)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([10, 30, 60])])
    features = torch.randn(3, 8, generator=g)[labels] + 0.5 * torch.randn(100, 8, generator=g)
    values = {}
    for centre in ("samples", "class_means"):
        accumulator = NC1Accumulator(3, centre=centre)
        accumulator.update_means(features, labels)
        accumulator.start_second_pass()
        accumulator.update_scatter(features, labels)
        values[centre] = accumulator.value()
    assert abs(values["samples"] / values["class_means"] - 1) > 1e-3
    with pytest.raises(ValueError, match="centre='median' is not one of"):
        NC1Accumulator(3, centre="median")


def test_effective_rank_of_a_rank_r_matrix_is_at_most_r():
    g = torch.Generator().manual_seed(2)
    rank = 4
    x = torch.randn(200, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, 30, generator=g, dtype=torch.float64) + 5.0  # the offset is centred away
    values = effective_rank_metrics(x)
    assert 1 <= values["erank"] <= rank + 1e-9 and values["erank"] > rank - 1.5
    # reptrix's +1e-7 per component lifts RankMe above r by at most ~26·1e-7·log(1e7)
    assert values["rankme"] <= rank + 1e-4
    # equal singular values: exactly r
    left = torch.randn(200, rank, generator=g, dtype=torch.float64)
    left, _ = torch.linalg.qr(left - left.mean(0))  # orthonormal, centred columns
    right, _ = torch.linalg.qr(torch.randn(30, rank, generator=g, dtype=torch.float64))
    flat = left @ right.T  # r singular values, all 1
    assert effective_rank_metrics(flat)["erank"] == pytest.approx(rank, rel=1e-9)


@pytest.mark.parametrize("dim", [2, 5])
def test_intrinsic_dimension_of_a_linear_subspace_is_its_dimension(dim):
    """1000 Gaussian points on a random ``dim``-subspace of R^40. TwoNN's standard error is
    about d/√(0.9·N) ≈ 3.3 % of d; 15 % is 4.5 of them, and an error of one dimension fails."""
    g = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(40, dim, generator=g, dtype=torch.float64))
    x = torch.randn(1000, dim, generator=g, dtype=torch.float64) @ basis.T + 3.0
    values = intrinsic_dimension_metrics(x)
    assert values["twonn"] == pytest.approx(dim, rel=0.15)
    assert values["mle"] == pytest.approx(dim, rel=0.15)


def test_sample_rows_is_a_fixed_sorted_subset():
    rows = sample_rows(100, 10, seed=4)
    assert rows is not None and len(rows) == 10 and torch.equal(rows, rows.sort().values)
    assert torch.equal(rows, sample_rows(100, 10, seed=4))
    assert not torch.equal(rows, sample_rows(100, 10, seed=5))
    assert sample_rows(100, None, seed=4) is None and sample_rows(100, 100, seed=4) is None


POINT = TINY + ["model=cnn3", "model.width=4", "trainer.eval_batch_size=50"]


@pytest.fixture(scope="module")
def point():
    cfg = to_typed(compose_cfg(POINT))
    validate(cfg)
    torch.manual_seed(0)
    data, _ = load_data(cfg)
    model = build_model(cfg, data.input_shape, data.num_classes)
    loaders = build_loaders(cfg, data, torch.device("cpu"))
    return families.Point(cfg, model, 1, False, data, loaders)


def with_metrics(point, *overrides: str) -> families.Point:
    cfg = to_typed(compose_cfg([*POINT, *overrides]))
    return families.Point(cfg, point.model, 1, False, point.data, point.loaders)


def test_blocks_stream_to_the_values_of_the_collected_block_features(point):
    """The per-block path (two hooked passes in batches of 50) equals the one-shot function
    on the same block outputs collected whole; x_pen gets the classifier keys too."""
    p = with_metrics(point, "metrics.neural_collapse.when=every",
                     "metrics.neural_collapse.blocks=[block1,block3]")
    values = families.FAMILIES["neural_collapse"].compute(p)
    split = "test"
    collected = collect_features(p.model, p.batches(split)(), ["block1", "block3"])
    for block in ("block1", "block3"):
        expected = neural_collapse_metrics(collected.blocks[block], collected.labels, 10)
        for key in CLASS_MEAN_KEYS:
            ours = values[f"{split}/neural_collapse/{block}/{key}"]
            assert ours == pytest.approx(expected[key], rel=1e-9), (block, key)
    assert f"{split}/neural_collapse/block2/nc1" not in values
    assert f"{split}/neural_collapse/block1/nc3_self_duality" not in values
    assert {f"{split}/neural_collapse/penultimate/{k}" for k in CLASS_MEAN_KEYS + CLASSIFIER_KEYS
            } <= set(values)


def test_subsampled_blocks_are_the_same_rows_as_x_pen(point):
    """``metrics.<family>.samples`` picks the same rows for x_pen and for the blocks."""
    p = with_metrics(point, "metrics.effective_rank.when=every",
                     "metrics.effective_rank.blocks=all", "metrics.effective_rank.samples=40")
    values = families.FAMILIES["effective_rank"].compute(p)
    features = p.features["test"]
    rows = sample_rows(len(features.labels), 40, p.cfg.metrics.seed)
    expected = effective_rank_metrics(features.x_pen[rows])
    assert values["test/effective_rank/penultimate/erank"] == expected["erank"]
    sampled = collect_features(p.model, p.batches("test")(), ["block2"], rows)
    assert torch.equal(sampled.x_pen, features.x_pen[rows])
    assert values["test/effective_rank/block2/rankme"] == \
        effective_rank_metrics(sampled.blocks["block2"])["rankme"]
    assert {k.split("/")[2] for k in values} == {"penultimate", "block1", "block2", "block3"}


def test_bad_blocks_or_samples_name_the_key_the_value_and_what_is_allowed(point):
    p = with_metrics(point, "metrics.intrinsic_dimension.when=every",
                     "metrics.intrinsic_dimension.blocks=[layer9]")
    with pytest.raises(ConfigError, match=r"metrics.intrinsic_dimension.blocks=\['layer9'\] "
                                          r"is not allowed: .*\['block1', 'block2', 'block3'\]"):
        families.FAMILIES["intrinsic_dimension"].compute(p)
    cfg = to_typed(compose_cfg(TINY + ["metrics.effective_rank.samples=2"]))
    with pytest.raises(ConfigError, match="metrics.effective_rank.samples"):
        validate(cfg)
    cfg = to_typed(compose_cfg(TINY + ["metrics.neural_collapse.blocks=7"]))
    with pytest.raises(ConfigError, match="metrics.neural_collapse.blocks"):
        validate(cfg)


def test_off_by_default_and_on_in_metrics_all():
    default = to_typed(compose_cfg(TINY))
    everything = to_typed(compose_cfg(TINY + ["metrics=all"]))
    for name in FAMILY_NAMES:
        family = families.FAMILIES[name]
        assert not families.schedule(default, family).due(1, True, 1)
        assert families.schedule(everything, family).due(10, False, 10)


@pytest.mark.slow
def test_a_real_run_records_them_and_evaluate_recomputes_them(tmp_path):
    """A tiny cnn3 run on digits with the three families on (x_pen and one block), then
    ``python -m latentgeo.evaluate RUN_DIR metrics.<family>.when=every`` on the same run."""
    run_dir = tmp_path / "run"
    on = ["metrics.neural_collapse.when=every", "metrics.neural_collapse.blocks=[block3]",
          "metrics.effective_rank.when=every", "metrics.intrinsic_dimension.when=last",
          "metrics.intrinsic_dimension.samples=300"]
    cfg = compose_cfg(["model=cnn3", "model.width=8", "dataset=digits", "trainer.epochs=3",
                       "trainer.batch_size=64", "optimizer.lr=1e-2", "schedule=constant",
                       "metrics.every=1", "logger=local", "trainer.progress=false",
                       "trainer.deterministic=true", *on])
    train(cfg, run_dir)
    run = RunDir(run_dir)
    assert run.state == "ok"
    events = run.events()
    last = events[-1]
    for split in ("train", "test"):
        for key in CLASS_MEAN_KEYS + CLASSIFIER_KEYS:
            assert math.isfinite(last[f"{split}/neural_collapse/penultimate/{key}"])
        assert f"{split}/neural_collapse/block3/cdnv" in last
        assert 1 <= last[f"{split}/effective_rank/penultimate/erank"] <= 64
        assert last[f"{split}/intrinsic_dimension/penultimate/twonn"] > 0
    def epochs_with(key):
        return [e["epoch"] for e in events if key in e]
    assert epochs_with("train/effective_rank/penultimate/rankme") == [1, 2, 3]  # every
    assert epochs_with("train/intrinsic_dimension/penultimate/mle") == [3]  # last
    # post hoc on the last checkpoint, as for a run recorded before these families existed
    # (their nodes removed from config.yaml): the same numbers (deterministic features)
    stored = yaml.safe_load(run.artifact("config").read_text())
    for name in FAMILY_NAMES:
        del stored["metrics"][name]
    run.artifact("config").write_text(yaml.safe_dump(stored))
    assert evaluate.main([str(run_dir), *[o.replace("=last", "=every") for o in on]]) == 0
    evaluated = run.evaluations()["last"]
    for key in ("train/neural_collapse/penultimate/nc1", "test/neural_collapse/block3/cdnv",
                "test/effective_rank/penultimate/rankme",
                "test/intrinsic_dimension/penultimate/mle"):
        assert evaluated[key] == pytest.approx(last[key], rel=1e-9), key
