"""Binarity of a latent layer: per-dimension bimodality and shared binary codes (BE §1.5)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

BINARITY_KEYS = ("score", "stds", "peaks_distance_mean", "peaks_distance_std")
_MAX_PACKED_BITS = 62  # codes of ≤ 62 bits fit in one non-negative int64


def binarity_metrics(features: Tensor, seed: int = 0) -> dict[str, float]:
    """BE's binarity metrics of ``features`` [N, P] (BE §1.5, ``get_binarity_metrics``).

    For each dimension d: z-score it (sklearn ``StandardScaler``: population std), fit a 1-D
    2-component ``GaussianMixture`` (sklearn defaults: full covariance, k-means init,
    n_init 1, max_iter 100, tol 1e-3, reg_covar 1e-6; ``random_state=seed``, where BE set no
    seed), and take s_d = ``gmm.score`` (mean log-likelihood per sample, nats), the two
    component σ's, and the peaks distance δ_d = |μ₁ − μ₂| / mean(σ₁, σ₂).

    - ``score`` = mean_d s_d; ``stds`` = mean of all 2·P' component σ's;
    - ``peaks_distance_mean`` / ``peaks_distance_std`` = mean / population std of δ_d.

    Constant dimensions (sklearn's own zero-variance test, under which ``StandardScaler``
    leaves the scale at 1) are skipped: z-scoring maps them to a point mass whose fitted
    σ² = reg_covar would dominate ``score``. P' = number of non-constant dims; all values
    are NaN when P' = 0. Computed in float64 (BE used the features' float32).
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [N, P], got shape {tuple(features.shape)}")
    x = features.detach().to("cpu", torch.float64).numpy()
    num_samples = x.shape[0]
    if num_samples < 2:
        return {key: math.nan for key in BINARITY_KEYS}
    from sklearn.exceptions import ConvergenceWarning  # scikit-learn: imported when first fit
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)  # column-wise, so the same as one scaler per dim
    z_scored = scaler.transform(x)
    eps = np.finfo(np.float64).eps
    # sklearn.preprocessing._data._is_constant_feature: var below its float64 error bound
    constant = scaler.var_ <= (
        num_samples * eps * scaler.var_ + (num_samples * scaler.mean_ * eps) ** 2
    )

    scores, sigmas, peak_distances = [], [], []
    for d in np.flatnonzero(~constant):
        z = z_scored[:, d : d + 1]
        gmm = GaussianMixture(n_components=2, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # BE silenced these too
            gmm.fit(z)
        component_means = gmm.means_.ravel()
        component_sigmas = np.sqrt(gmm.covariances_.ravel())
        scores.append(gmm.score(z))
        sigmas.append(component_sigmas)
        peak_distances.append(
            abs(component_means[0] - component_means[1]) / component_sigmas.mean()
        )
    if not scores:
        return {key: math.nan for key in BINARITY_KEYS}
    return {
        "score": float(np.mean(scores)),
        "stds": float(np.mean(sigmas)),
        "peaks_distance_mean": float(np.mean(peak_distances)),
        "peaks_distance_std": float(np.std(peak_distances)),
    }


def same_encoding_fraction(features: Tensor, labels: Tensor) -> float:
    """Fraction of samples sharing their class's most frequent binary code (BE §1.5).

    Code b_i = 1[x_i > 0] per dimension; classes = distinct values of ``labels`` (the engine
    passes predictions, as BE does); fraction = Σ_c max_b #{i : y_i = c, b_i = b} / N.

    Vectorised: codes of ≤ 62 bits are packed into one int64 each, wider codes are
    identified with ``torch.unique(dim=0)``; both give the same code ids. NaN for N = 0.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [N, P], got shape {tuple(features.shape)}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be [N] with N={features.shape[0]}, got shape {tuple(labels.shape)}"
        )
    num_samples, dim = features.shape
    if num_samples == 0:
        return math.nan
    bits = features.detach() > 0
    if dim <= _MAX_PACKED_BITS:
        powers = torch.ones(dim, dtype=torch.int64, device=bits.device) << torch.arange(
            dim, device=bits.device
        )
        packed = (bits.long() * powers).sum(dim=1)
        _, code_ids = torch.unique(packed, return_inverse=True)
    else:
        _, code_ids = torch.unique(bits.to(torch.uint8), dim=0, return_inverse=True)
    _, class_ids = torch.unique(labels, return_inverse=True)
    num_codes = int(code_ids.max()) + 1
    pair_keys, pair_counts = torch.unique(class_ids * num_codes + code_ids, return_counts=True)
    num_present = int(class_ids.max()) + 1
    most_frequent = torch.zeros(num_present, dtype=torch.int64, device=pair_counts.device)
    most_frequent.scatter_reduce_(0, pair_keys // num_codes, pair_counts, reduce="amax")
    return int(most_frequent.sum()) / num_samples
