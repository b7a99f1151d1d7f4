"""Neural collapse NC1–NC4 and CDNV with true labels, as rhubarbwu/neural-collapse computes them.

Papyan, Han & Donoho 2020 (NC1–NC4), Han et al. 2022 (the top-(K−1) NC1), Tirer et al. 2023
(the trace ratio), Kothapalli 2023 (the ETF / self-duality errors as matrix norms), Galanti et
al. 2022 (CDNV). The reference is rhubarbwu/neural-collapse at commit c05a0b8 (its
``accumulate.py`` and ``measure.py``); ``tests/test_parity_geometry.py`` holds its transcription
and compares in float64.

Notation: the C' classes present in the labels (K = C' below; the reference uses all K of the
head and gives an absent class the mean 0), μ_c the class means, μ_G = (1/K) Σ_c μ_c the
UNWEIGHTED mean of the class means (reference default; Papyan uses the mean of all N samples:
equal for balanced classes), M = [μ_c − μ_G] (K × D), r_i = h_i − μ_{y_i}.

- Σ_W = (1/N) Σ_i r_i r_iᵀ (pooled, population: the reference's ``CovarAccumulator``),
  Σ_B = (1/K) Mᵀ M.
- ``nc1`` = tr(Σ_W Σ_B⁺) / K (Papyan). Σ_B⁺ is the pseudo-inverse with the relative cut
  max(D, K)·ε (torch's ``pinv``: D·ε; the max keeps a numerically zero eigenvalue out when
  D < K). Streamed: ``NC1Accumulator`` with ``centre="class_means"`` is (K/N) Σ_i ‖Λ⁻¹VᵀMᵀr_i‖²
  = tr(Σ_W Σ_B⁺), divided here by K.
- ``nc1_svd`` = tr(Σ_W Σ̃_B⁻¹) / K with Σ̃_B⁻¹ the inverse on the top K−1 singular pairs of Σ_B
  (Han et al.; the reference's ``svds(Σ_B, k=K−1)``). Centred on the mean of the class means,
  Σ_B has rank ≤ K−1, so its top K−1 pairs are all its non-zero ones and this EQUALS ``nc1``
  (the reference differs only where Σ_B has rank < K−1 and it inverts a zero singular value,
  and it needs D ≥ K). Han et al. centre on the sample mean, where rank K is possible; that
  variant is not offered.
- ``nc1_trace_ratio`` = tr Σ_W / tr Σ_B (Tirer et al.; reference ``metric="quotient"``).
- ``nc2_equinorm`` = std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖ (Papyan's coefficient of
  variation), std with K−1 (torch's default ``std``); the reference only returns the norms
  (``mean_norms``), the ratio is taken on them.
- ``nc2_etf_error`` = ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F with G = M Mᵀ (Kothapalli; reference
  ``simplex_etf_error``); 0 for a simplex ETF. (Papyan's NC2 plots the std of the cosines and
  the mean |cos + 1/(K−1)|; the Frobenius form is the reference's.)
- ``nc2_equiangularity`` = std of cos(μ_i − μ_G, μ_j − μ_G) over the pairs i < j (Papyan's
  equiangularity), divided by the number of pairs: the square root of the reference's
  ``kernel_stats`` variance with a cosine kernel on its unit-normalised centred means.
- ``nc3_self_duality`` = ‖S/‖S‖_F − (I − 11ᵀ/K)/√(K−1)‖_F with S = W Mᵀ, W the K × D output
  weights (reference ``self_duality_error``, Kothapalli). Papyan's NC3 is
  ‖W/‖W‖_F − M/‖M‖_F‖_F instead: ``self_duality_distance``. Neither uses the bias.
- ``nc4_ncc_agreement`` = fraction of samples whose network prediction equals
  argmin_c ‖h − μ_c‖ (Papyan). The reference's ``DecAccumulator`` compares with
  argmax_c ⟨w_c, h⟩ WITHOUT the bias; here the network's own prediction (with the bias), as in
  the paper. The class means are those of the same split (the reference's example takes the
  train means for test agreement).
- ``cdnv`` = mean over pairs i < j of (V_i + V_j) / (2 ‖μ_i − μ_j‖²), V_c = (1/N_c) Σ_{i∈c}
  ‖r_i‖² (Galanti et al.; reference ``variability_cdnv`` on ``VarNormAccumulator``). The
  reference stores its pair grid in torch's default dtype (float32 unless changed).

Everything is float64. Fewer than two classes present: every value NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from latentgeo.metrics.collapse import NC1Accumulator, row_chunks

CLASS_MEAN_KEYS = ("nc1", "nc1_svd", "nc1_trace_ratio", "nc2_equinorm", "nc2_etf_error",
                   "nc2_equiangularity", "cdnv")  # any layer, streamed
CLASSIFIER_KEYS = ("nc3_self_duality", "nc4_ncc_agreement")  # the layer the output reads


class NeuralCollapseAccumulator:
    """``CLASS_MEAN_KEYS`` of one layer in two streamed passes, O(K·D) memory.

    The same call order as ``NC1Accumulator`` (which it wraps, with the reference's centring and
    cut): ``update_means`` over all batches, ``start_second_pass``, ``update_scatter`` over the
    same batches, then ``value()``. Pass 2 also sums ‖r_i‖² per class (for CDNV and tr Σ_W).
    """

    def __init__(self, num_classes: int) -> None:
        self.nc1 = NC1Accumulator(num_classes, centre="class_means", eigenvalue_cut=None)
        self._residual_sums: Tensor | None = None  # Σ_{i∈c} ‖r_i‖², [C]

    def update_means(self, features: Tensor, labels: Tensor) -> None:
        self.nc1.update_means(features, labels)

    def start_second_pass(self) -> None:
        self.nc1.start_second_pass()

    def update_scatter(self, features: Tensor, labels: Tensor) -> None:
        self.nc1.update_scatter(features, labels)
        means = self.nc1.class_means
        assert means is not None and self.nc1.present is not None
        h = features.detach().reshape(features.shape[0], -1).to(means.device)
        y = labels.long().to(means.device)
        # class index among the present classes, for the C' × D means
        index = (torch.cumsum(self.nc1.present.long(), 0) - 1).to(means.device)[y]
        if self._residual_sums is None:
            self._residual_sums = torch.zeros(self.nc1.num_classes, dtype=torch.float64,
                                              device=means.device)
        for rows in row_chunks(h.shape[0], h.shape[1]):
            residual = h[rows].to(torch.float64) - means[index[rows]]
            self._residual_sums.index_add_(0, y[rows], residual.square().sum(dim=1))

    def value(self) -> dict[str, float]:
        nc1 = self.nc1.value()  # also checks that both passes saw the same samples
        means, global_mean, present = self.nc1.class_means, self.nc1.global_mean, self.nc1.present
        assert means is not None and global_mean is not None and present is not None
        if means.shape[0] < 2:
            return {key: math.nan for key in CLASS_MEAN_KEYS}
        assert self._residual_sums is not None
        counts = self.nc1.counts[present].to(torch.float64)
        residual_sums = self._residual_sums.cpu()[present]
        centred = (means - global_mean).cpu()
        num_classes = centred.shape[0]
        nc1_value = nc1 / num_classes
        return {
            "nc1": nc1_value,
            "nc1_svd": nc1_value,  # equal for this centring (module docstring)
            "nc1_trace_ratio": (residual_sums.sum() / counts.sum()).item()
            / (centred.square().sum() / num_classes).item(),
            **class_mean_geometry(centred),
            "cdnv": cdnv(residual_sums / counts, means.cpu()),
        }


def class_mean_geometry(centred_means: Tensor) -> dict[str, float]:
    """``nc2_equinorm``, ``nc2_etf_error``, ``nc2_equiangularity`` of M = [μ_c − μ_G] [K, D]."""
    m = centred_means.to(torch.float64)
    num_classes = m.shape[0]
    norms = m.norm(dim=1)
    unit = m / norms.unsqueeze(1)
    first, second = torch.triu_indices(num_classes, num_classes, offset=1)
    cosines = (unit[first] * unit[second]).sum(dim=1)
    return {
        "nc2_equinorm": (norms.std() / norms.mean()).item(),
        "nc2_etf_error": etf_error(m @ m.T),
        "nc2_equiangularity": cosines.std(correction=0).item(),
    }


def etf_error(gram: Tensor) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F of a K × K (cross-)Gram matrix (Kothapalli 2023)."""
    num_classes = gram.shape[0]
    normalised = gram / torch.linalg.matrix_norm(gram)
    simplex = (torch.eye(num_classes, dtype=gram.dtype) - 1.0 / num_classes) / math.sqrt(
        num_classes - 1)
    return torch.linalg.matrix_norm(normalised - simplex).item()


def cdnv(variances: Tensor, class_means: Tensor) -> float:
    """Mean over pairs i < j of (V_i + V_j) / (2‖μ_i − μ_j‖²) (Galanti et al. 2022)."""
    num_classes = class_means.shape[0]
    first, second = torch.triu_indices(num_classes, num_classes, offset=1)
    distances = (class_means[first] - class_means[second]).square().sum(dim=1)
    return ((variances[first] + variances[second]) / 2 / distances).mean().item()


def self_duality_error(classifier_weight: Tensor, centred_means: Tensor) -> float:
    """The reference's NC3: ``etf_error`` of S = W Mᵀ (W: K × D output weights)."""
    w = classifier_weight.detach().to("cpu", torch.float64)
    return etf_error(w @ centred_means.to(torch.float64).T)


def self_duality_distance(classifier_weight: Tensor, centred_means: Tensor) -> float:
    """Papyan et al.'s NC3, ‖W/‖W‖_F − M/‖M‖_F‖_F (offered; not recorded)."""
    w = classifier_weight.detach().to("cpu", torch.float64)
    m = centred_means.to(torch.float64)
    return (w / torch.linalg.matrix_norm(w) - m / torch.linalg.matrix_norm(m)).norm().item()


def ncc_agreement(features: Tensor, class_means: Tensor, class_ids: Tensor,
                  predictions: Tensor) -> float:
    """Fraction of rows whose ``predictions`` equal the nearest class mean's id (``class_ids``
    [K] names the rows of ``class_means`` [K, D]); ‖h‖² + ‖μ‖² − 2⟨h, μ⟩ as the reference."""
    h = features.detach().to("cpu", torch.float64)
    means = class_means.to("cpu", torch.float64)
    distances = (h.square().sum(1, keepdim=True) + means.square().sum(1)
                 - 2 * h @ means.T)
    nearest = class_ids.cpu()[distances.argmin(dim=1)]
    return (nearest == predictions.cpu()).double().mean().item()


def neural_collapse_metrics(features: Tensor, labels: Tensor, num_classes: int,
                            classifier_weight: Tensor | None = None,
                            predictions: Tensor | None = None) -> dict[str, float]:
    """``CLASS_MEAN_KEYS`` of ``features`` [N, ...] with true ``labels``; with the output
    layer's ``classifier_weight`` [num_classes, D] and the network's ``predictions`` [N] also
    ``CLASSIFIER_KEYS`` (module docstring)."""
    accumulator = NeuralCollapseAccumulator(num_classes)
    accumulator.update_means(features, labels)
    accumulator.start_second_pass()
    accumulator.update_scatter(features, labels)
    values = accumulator.value()
    if classifier_weight is None or predictions is None:
        return values
    means, present = accumulator.nc1.class_means, accumulator.nc1.present
    assert means is not None and present is not None and accumulator.nc1.global_mean is not None
    if means.shape[0] < 2:
        return {**values, **{key: math.nan for key in CLASSIFIER_KEYS}}
    centred = (means - accumulator.nc1.global_mean).cpu()
    class_ids = present.nonzero().squeeze(1)
    return {
        **values,
        "nc3_self_duality": self_duality_error(classifier_weight[present.to(
            classifier_weight.device)], centred),
        "nc4_ncc_agreement": ncc_agreement(features.reshape(features.shape[0], -1), means,
                                           class_ids, predictions),
    }
