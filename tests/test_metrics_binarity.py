"""binarity_metrics and same_encoding_fraction (BE §1.5) against closed forms, a direct
sklearn/numpy reference and hand-made codes."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from latentgeo.metrics.binarity import BINARITY_KEYS, binarity_metrics, same_encoding_fraction

GAUSSIAN_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)  # −E log N(z; 0, 1) = 1.4189 nats


def _bimodal(num_samples, half_gaps, sigma, seed):
    """Each column d: ±half_gaps[d] with probability 1/2, plus N(0, σ²) noise."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.where(
        torch.rand(num_samples, len(half_gaps), generator=generator) < 0.5, -1.0, 1.0
    ).double()
    noise = torch.randn(num_samples, len(half_gaps), generator=generator, dtype=torch.float64)
    return signs * torch.tensor(half_gaps, dtype=torch.float64) + sigma * noise


def _be_reference(x: np.ndarray, seed: int) -> dict[str, float]:
    """BE's get_binarity_metrics loop (one scaler and one GMM per dim), seeded."""
    scores, stds, distances = [], [], []
    for d in range(x.shape[1]):
        column = StandardScaler().fit_transform(x[:, d].reshape(-1, 1))
        gmm = GaussianMixture(n_components=2, random_state=seed).fit(column)
        scores.append(gmm.score(column))
        sigma = np.sqrt(gmm.covariances_).flatten()
        stds.append(sigma)
        means = gmm.means_.flatten()
        distances.append(abs(means[0] - means[1]) / np.mean(sigma))
    return {
        "score": np.mean(scores),
        "stds": np.mean(stds),
        "peaks_distance_mean": np.mean(distances),
        "peaks_distance_std": np.std(distances),
    }


def test_well_separated_bimodal_dims_match_closed_forms():
    # modes ±5, σ = 0.5: peaks distance (μ₁ − μ₂)/σ = 20 whatever the z-scoring.
    # z-scored, each mode has σ_z = 0.5 / √(25 + 0.25); mean log-likelihood of an equal-weight
    # well-separated mixture = −½ log(2πe σ_z²) − log 2 = 0.1955.
    x = _bimodal(2000, [5.0, 5.0, 5.0], 0.5, seed=0)
    result = binarity_metrics(x)
    sigma_z = 0.5 / math.sqrt(25.25)
    assert result["peaks_distance_mean"] == pytest.approx(20.0, rel=0.05)
    assert result["stds"] == pytest.approx(sigma_z, rel=0.05)
    assert result["score"] == pytest.approx(
        -GAUSSIAN_ENTROPY - math.log(sigma_z) - math.log(2), abs=0.03
    )


def test_unimodal_gaussian_has_low_peaks_distance_and_gaussian_score():
    x = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = binarity_metrics(x)
    # a 2-component fit of one Gaussian: overlapping components, log-likelihood ≈ −1.419
    assert result["peaks_distance_mean"] < 2.5
    assert result["score"] == pytest.approx(-GAUSSIAN_ENTROPY, abs=0.02)
    bimodal = binarity_metrics(_bimodal(2000, [5.0] * 4, 0.5, seed=1))
    assert bimodal["score"] > result["score"] + 1.5
    assert bimodal["peaks_distance_mean"] > 5 * result["peaks_distance_mean"]


def test_matches_be_reference_loop_and_is_deterministic_per_seed():
    # dims with different separations, so that the std over dims is not trivial
    x = _bimodal(600, [0.5, 1.5, 3.0, 6.0], 1.0, seed=2)
    for seed in (0, 3):
        expected = _be_reference(x.numpy(), seed)
        result = binarity_metrics(x, seed=seed)
        assert set(result) == set(BINARITY_KEYS)
        for key in BINARITY_KEYS:
            assert result[key] == pytest.approx(expected[key], rel=1e-10), (seed, key)
            assert isinstance(result[key], float)
    assert binarity_metrics(x, seed=5) == binarity_metrics(x, seed=5)


def test_constant_dimensions_are_skipped():
    x = _bimodal(500, [2.0, 4.0], 0.7, seed=3)
    with_constants = torch.cat(
        [x[:, :1], torch.full((500, 1), 3.25), x[:, 1:], torch.zeros(500, 1)], dim=1
    )
    assert binarity_metrics(with_constants) == binarity_metrics(x)
    assert all(math.isnan(v) for v in binarity_metrics(torch.full((50, 3), -1.0)).values())


def test_same_encoding_fraction_on_hand_made_codes():
    # class 0: codes 101, 101, 011 → 2;  class 1: 000, 000, 000, 111 → 3;  class 5: 110 → 1.
    # (2 + 3 + 1) / 8 = 0.75. Zero is not > 0, so it encodes as 0.
    features = torch.tensor(
        [
            [1.0, -2.0, 0.3],
            [0.1, 0.0, 7.0],
            [-1.0, 2.0, 3.0],
            [0.0, 0.0, 0.0],
            [-1.0, -1.0, -0.5],
            [-3.0, 0.0, -2.0],
            [1.0, 1.0, 1.0],
            [2.0, 5.0, -1.0],
        ]
    )
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 5])
    assert same_encoding_fraction(features, labels) == 0.75
    # one class, all codes distinct → 1/N
    assert same_encoding_fraction(features[:3], torch.zeros(3, dtype=torch.long)) == 2 / 3
    assert same_encoding_fraction(torch.eye(4) - 0.5, torch.zeros(4, dtype=torch.long)) == 0.25


def test_packed_and_unique_paths_agree_with_naive_count():
    generator = torch.Generator().manual_seed(4)
    # few distinct codes per class so that the maxima are not all 1
    prototypes = torch.randn(6, 40, generator=generator)
    labels = torch.randint(0, 4, (500,), generator=generator)
    features = prototypes[torch.randint(0, 6, (500,), generator=generator)]
    features = features + 0.05 * torch.randn(500, 40, generator=generator)

    naive = (
        sum(
            Counter(tuple((row > 0).tolist()) for row in features[labels == c]).most_common(1)[0][1]
            for c in labels.unique()
        )
        / 500
    )
    packed = same_encoding_fraction(features, labels)  # P = 40 ≤ 62: int64 packing
    padded = torch.cat([features, -torch.ones(500, 70)], dim=1)  # P = 110: unique(dim=0)
    assert packed == naive
    assert same_encoding_fraction(padded, labels) == naive
    assert 0.1 < naive < 1.0  # 0.172: neither all-distinct (1/N per class) nor all-equal


def test_highest_packed_bit_and_first_fallback_width():
    # rows differ only in the last column: bit 61 (P = 62, packed) and column 62 (P = 63)
    for dim in (62, 63):
        features = -torch.ones(4, dim)
        features[2:, dim - 1] = 1.0
        labels = torch.zeros(4, dtype=torch.long)
        assert same_encoding_fraction(features, labels) == 0.5
