"""Intrinsic dimension: TwoNN (Facco et al. 2017) and the Levina–Bickel MLE, as
scikit-dimension 0.5.0 computes them (``skdim.id.TwoNN()`` and ``skdim.id.MLE()``, defaults).

Features are flattened, float64, centred (distances do not change; it keeps the
‖a‖² + ‖b‖² − 2⟨a, b⟩ distances accurate), with Euclidean distances between distinct rows.

- ``twonn``: μ_i = r_2(i) / r_1(i), the ratio of the distances to the second and first
  nearest neighbours; rows with r_1 = 0 (duplicates) are dropped (skdim warns). Of the N ratios
  the n = ⌊0.9·N⌋ smallest are kept (Facco et al.'s heuristic: the top 10 % discarded), and
  d = Σ x_i y_i / Σ x_i², the least-squares slope through the origin of
  y_i = −log(1 − i/N) on x_i = log μ_(i), i = 1..n (skdim's ``method='linear'``; note
  F_emp = i/N with N, not n, as in the paper).
- ``mle``: for each row, with T_1 ≤ … ≤ T_k its k = 20 nearest-neighbour distances (k = N − 1
  when N ≤ 20, as skdim), m_i = (k − 1) / Σ_{j≤k} log(T_k / T_j) (Levina & Bickel 2005);
  d = 1 / mean_i(1/m_i), the harmonic mean (skdim's ``comb='mle'``, MacKay & Ghahramani's
  correction; Levina & Bickel average the m_i arithmetically). A duplicate neighbour (T_j = 0)
  makes m_i = 0 and d = 0, as in skdim.

O(N²) time and memory: the families call these on a fixed subsample (``sample_rows``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TWONN_DISCARD_FRACTION = 0.1  # Facco et al. and skdim's default
MLE_NEIGHBORS = 20  # skdim's MLE._N_NEIGHBORS


def pairwise_distances(features: Tensor) -> Tensor:
    """Euclidean distances between the rows of ``features`` [N, ...], float64 [N, N], with
    +inf on the diagonal (a row is not its own neighbour)."""
    x = features.detach().reshape(features.shape[0], -1).to("cpu", torch.float64)
    x = x - x.mean(dim=0)
    squared_norms = x.square().sum(dim=1)
    squared = squared_norms.unsqueeze(1) + squared_norms.unsqueeze(0) - 2 * x @ x.T
    distances = squared.clamp(min=0).sqrt()
    distances.fill_diagonal_(math.inf)
    return distances


def nearest_distances(features: Tensor, neighbors: int) -> Tensor:
    """The ``neighbors`` smallest distances of each row to the others, ascending [N, k]."""
    return pairwise_distances(features).topk(neighbors, dim=1, largest=False).values


def twonn(features: Tensor, discard_fraction: float = TWONN_DISCARD_FRACTION) -> float:
    """TwoNN dimension (module docstring); NaN with fewer than 2 ratios kept."""
    if features.shape[0] < 3:
        return math.nan
    return _twonn(nearest_distances(features, 2), discard_fraction)


def levina_bickel_mle(features: Tensor, neighbors: int = MLE_NEIGHBORS) -> float:
    """Levina–Bickel MLE, harmonic mean over rows (module docstring); NaN for N < 3."""
    if features.shape[0] < 3:
        return math.nan
    return _mle(nearest_distances(features, min(neighbors, features.shape[0] - 1)))


def intrinsic_dimension_metrics(features: Tensor) -> dict[str, float]:
    """``twonn`` and ``mle`` of ``features`` [N, ...] from one distance matrix."""
    if features.shape[0] < 3:
        return {"twonn": math.nan, "mle": math.nan}
    nearest = nearest_distances(features, min(MLE_NEIGHBORS, features.shape[0] - 1))
    return {"twonn": _twonn(nearest[:, :2], TWONN_DISCARD_FRACTION), "mle": _mle(nearest)}


def _twonn(nearest: Tensor, discard_fraction: float) -> float:
    ratios = nearest[:, 1] / nearest[:, 0]
    ratios = ratios[torch.isfinite(ratios)]
    total = len(ratios)
    kept = int(total * (1 - discard_fraction))
    if kept < 2:
        return math.nan
    x = ratios.sort().values[:kept].log()
    y = -torch.log(1 - torch.arange(1, kept + 1, dtype=torch.float64) / total)
    return ((x * y).sum() / x.square().sum()).item()


def _mle(nearest: Tensor) -> float:
    k = nearest.shape[1]
    log_ratios = torch.log(nearest[:, -1:] / nearest).sum(dim=1)
    pointwise = (k - 1) / log_ratios
    return (1 / (1 / pointwise).mean()).item()
