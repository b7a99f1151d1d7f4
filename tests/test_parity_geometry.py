"""The geometry families equal their public references on fixed inputs, in float64.

- neural_collapse: rhubarbwu/neural-collapse at c05a0b8 (not on PyPI; its code is transcribed
  verbatim in tests/reference_neural_collapse.py), fed batch by batch as its README does.
- effective_rank: reptrix 0.1.0 (``get_rankme``); ``erank`` has no reference without reptrix's
  1e-7 smoothing, so it is checked against the formula in numpy (and closed forms elsewhere).
- intrinsic_dimension: scikit-dimension 0.5.0 (``skdim.id.TwoNN``, ``skdim.id.MLE``).

skdim and reptrix come with ``make test`` (``.[dev,parity]``): imported at the top, so a missing
one fails the collection instead of skipping. Tolerance: 1e-9 relative (RTOL), far above the
float64 rounding of these sums (~1e-13 measured) and far below any difference of definition
(K vs K−1, a dropped ratio, a missing centring: ≥ 1e-3 here).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import skdim
import torch
from reptrix.rankme import get_rankme

import tests.reference_neural_collapse as ref
from latentgeo.metrics.effective_rank import effective_rank_metrics, rankme_of_singular_values
from latentgeo.metrics.intrinsic_dimension import intrinsic_dimension_metrics
from latentgeo.metrics.neural_collapse import (
    NeuralCollapseAccumulator,
    neural_collapse_metrics,
)

RTOL = 1e-9
K, D = 6, 32


def assert_close(ours: float, reference: float, rtol: float = RTOL) -> None:
    assert math.isclose(ours, reference, rel_tol=rtol, abs_tol=0.0), (ours, reference)


@pytest.fixture
def float64_default():
    """The reference builds its pair grids with ``torch.zeros`` in the default dtype: float64
    here so that the comparison is float64 throughout (see the float32 test below)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def clustered(seed: int, counts: list[int], dim: int = D, spread: float = 0.7):
    """Features around K random class centres, unbalanced ``counts`` per class, shuffled."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(counts), dim, generator=g, dtype=torch.float64) * 2 + 0.5
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=g,
                                                      dtype=torch.float64)
    # classifier rows near the centred class centres, so that NC4 agreement is neither 0 nor 1
    weight = centres - centres.mean(0) + 6 * torch.randn(len(counts), dim, generator=g,
                                                          dtype=torch.float64)
    return features, labels, weight


def reference_values(features, labels, weight, batch_size=64):
    """The reference's README recipe: accumulate means, then covariance / variance norms /
    decisions, batch by batch, then its measures."""
    n_classes, dim = weight.shape
    batches = list(zip(features.split(batch_size), labels.split(batch_size)))
    mean_accum = ref.MeanAccumulator(n_classes, dim, "cpu", dtype=torch.float64)
    for x, y in batches:
        mean_accum.accumulate(x, y)
    means, m_g = mean_accum.compute()
    var_norms_accum = ref.VarNormAccumulator(n_classes, dim, "cpu", dtype=torch.float64, M=means)
    covar_accum = ref.CovarAccumulator(n_classes, dim, "cpu", dtype=torch.float64, M=means)
    dec_accum = ref.DecAccumulator(n_classes, dim, "cpu", dtype=torch.float64, M=means, W=weight)
    for x, y in batches:
        var_norms_accum.accumulate(x, y, means)
        covar_accum.accumulate(x, y, means)
        dec_accum.accumulate(x, y, weight, means)
    var_norms, _ = var_norms_accum.compute()
    covar_within = covar_accum.compute()

    def cosine_kernel(data, tile_size=None):  # the inner product of kernel_grid's unit vectors
        return ref.tiling(data, lambda tile_i, tile_j: tile_i @ tile_j.mT, tile_size)

    norms = ref.mean_norms(means, m_g)
    return {
        "nc1": ref.covariance_ratio(covar_within, means, m_g),
        "nc1_svd": ref.covariance_ratio(covar_within, means, m_g, "svd"),
        "nc1_trace_ratio": ref.covariance_ratio(covar_within, means, m_g, "quotient"),
        "nc2_equinorm": (norms.std() / norms.mean()).item(),
        "nc2_etf_error": ref.simplex_etf_error(means, m_g),
        "nc2_equiangularity": math.sqrt(ref.kernel_stats(means, m_g, cosine_kernel)[1]),
        "cdnv": ref.variability_cdnv(var_norms, means),
        "nc3_self_duality": ref.self_duality_error(weight, means, m_g),
        "nc4_ncc_agreement": ref.clf_ncc_agreement(dec_accum),
    }


@pytest.mark.parametrize("counts", [[100] * K, [40, 90, 150, 60, 120, 75]],
                         ids=["balanced", "unbalanced"])
def test_neural_collapse_equals_rhubarbwu_neural_collapse(float64_default, counts):
    features, labels, weight = clustered(1, counts)
    expected = reference_values(features, labels, weight)
    # the reference's NC4 is the bias-free linear rule; ours takes the network's predictions
    predictions = (features @ weight.T).argmax(1)
    ours = neural_collapse_metrics(features, labels, K, weight, predictions)
    assert sorted(ours) == sorted(expected)
    for key in expected:
        assert_close(ours[key], expected[key])
    assert 0.5 < ours["nc4_ncc_agreement"] < 1  # a test where agreement is not trivial


def test_streamed_in_batches_equals_the_reference(float64_default):
    """The per-block path: our accumulator fed in uneven batches of float32 activations
    [B, 2, 4, 4] (flattened as the blocks' outputs are) against the reference on the same."""
    features, labels, weight = clustered(2, [50, 80, 65, 70, 90, 45])
    features = features.float().reshape(-1, 2, 4, 4)
    accumulator = NeuralCollapseAccumulator(K)
    for x, y in zip(features.split(37), labels.split(37)):
        accumulator.update_means(x, y)
    accumulator.start_second_pass()
    for x, y in zip(features.split(53), labels.split(53)):
        accumulator.update_scatter(x, y)
    ours = accumulator.value()
    flat = features.reshape(len(labels), -1).double()
    expected = reference_values(flat, labels, weight)
    for key in ours:
        assert_close(ours[key], expected[key])


def test_the_reference_in_its_default_float32_grid_agrees_at_float32_precision():
    """With torch's default float32, the reference's pair grid (``tiling``) rounds each CDNV
    term to float32: agreement then is only ~1e-7, which is why the comparison above sets the
    default dtype to float64."""
    features, labels, weight = clustered(3, [100] * K)
    expected = reference_values(features, labels, weight)
    ours = neural_collapse_metrics(features, labels, K)
    assert_close(ours["cdnv"], expected["cdnv"], rtol=1e-6)
    assert_close(ours["nc1"], expected["nc1"])  # no grid: float64 all along


def test_rankme_equals_reptrix():
    g = torch.Generator().manual_seed(4)
    # a spectrum over several decades, off-centre, N > D and N < D
    for n, d in ((300, 40), (30, 80)):
        scales = torch.logspace(0, -3, d, dtype=torch.float64)
        x = torch.randn(n, d, generator=g, dtype=torch.float64) * scales + 3.0
        ours = effective_rank_metrics(x)["rankme"]
        assert_close(ours, float(get_rankme(x)))


def test_rankme_caps_the_eigenvalues_as_reptrix():
    """reptrix keeps the top ``max_eigenvals`` (2048) PCA ratios: the same cap, made small."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(200, 30, generator=g, dtype=torch.float64)
    centred = x - x.mean(0)
    singular_values = torch.linalg.svdvals(centred)
    ours = rankme_of_singular_values(singular_values, len(x), max_eigenvalues=7)
    assert_close(ours, float(get_rankme(x, max_eigenvals=7)))


def test_erank_is_exp_entropy_of_normalised_centred_singular_values():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(120, 25, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 25) + 7
    s = np.linalg.svd(x.numpy() - x.numpy().mean(0), compute_uv=False)
    p = s / s.sum()
    assert_close(effective_rank_metrics(x)["erank"], float(np.exp(-(p * np.log(p)).sum())))


def manifold(seed: int, n: int, intrinsic: int, ambient: int) -> torch.Tensor:
    """A curved ``intrinsic``-dimensional set embedded in ``ambient`` dimensions."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, intrinsic, generator=g, dtype=torch.float64)
    lifted = torch.cat([t, torch.sin(3 * t), torch.cos(2 * t)], dim=1)
    return lifted @ torch.randn(lifted.shape[1], ambient, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n,ambient", [(400, 40), (300, 12), (15, 30)],
                         ids=["pairwise_path", "tree_path", "fewer_than_k"])
def test_intrinsic_dimension_equals_scikit_dimension(n, ambient):
    """skdim takes exact pairwise distances above 25 features and a kNN tree below; with
    N ≤ 20 its MLE uses k = N − 1 neighbours (and warns)."""
    x = manifold(7, n, 3, ambient)
    ours = intrinsic_dimension_metrics(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(ours["twonn"], skdim.id.TwoNN().fit(x.numpy()).dimension_)
        assert_close(ours["mle"], skdim.id.MLE().fit(x.numpy()).dimension_)


def test_twonn_drops_duplicates_as_scikit_dimension():
    x = manifold(8, 200, 2, 30)
    x = torch.cat([x, x[:10]])  # ten duplicated rows: r1 = 0 for twenty rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skdim.id.TwoNN().fit(x.numpy()).dimension_
    assert_close(intrinsic_dimension_metrics(x)["twonn"], expected)
