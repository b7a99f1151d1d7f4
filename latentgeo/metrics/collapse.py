"""Neural-collapse geometry of a latent layer: BE's collapse metrics and TH's NC1.

Two definitions coexist on purpose (docs/definitions.md §5 note 1):

- ``collapse_metrics`` is BE's family (§1.5): classes from the labels it is given (the engine
  passes *predictions* to reproduce BE), Σ_W = unweighted mean of unbiased per-class
  covariances, divided by K'.
- ``nc1`` / ``NC1Accumulator`` is TH's NC1 (§2.4): true labels, pooled Σ_W / N, no 1/C,
  streamed in two passes with memory O(C·D), so it scales to conv activations (D = 65536).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

COLLAPSE_KEYS = (
    "within_class_variation",
    "within_class_variation_weighted",
    "sigma_w",
    "equiangular",
    "maxangle",
    "equinorm",
    "relative_norm_std",
)
SINGLETON_CLASS_OPTIONS = ("exclude", "nan")
EIGENVALUE_CUT = 1e-5  # TH keeps eigenpairs of G = MᵀM with λ_j > 1e-5·λ_max
# μ̄ of NC1Accumulator: TH's mean of all N rows, or the unweighted mean of the class means
# (rhubarbwu/neural-collapse's default); they coincide for balanced classes.
CENTRES = ("samples", "class_means")
# Batches are processed in row chunks of at most this many elements (4 MiB in float64; at least
# one row), so the float64 copies made per batch stay small whatever batch size the caller uses.
_CHUNK_ELEMENTS = 1 << 19


def collapse_metrics(
    features: Tensor, labels: Tensor, *, singleton_classes: str = "exclude"
) -> dict[str, float]:
    """BE's collapse metrics of ``features`` [N, P] grouped by ``labels`` [N] (BE §1.5).

    Classes are the K' distinct values in ``labels`` (the engine passes predictions, as BE
    does). With μ_G the mean of all rows, μ_c the mean of class c and m_c = μ_c − μ_G:

    - Σ_W = (1/K') Σ_c cov_c, cov_c the unbiased (N_c − 1) covariance of class c (``np.cov``);
      Σ_B = (1/K') Σ_c m_c m_cᵀ.
    - ``within_class_variation`` = tr(Σ_W Σ_B⁺) / K' (Σ_B⁺ the SVD pseudo-inverse with the
      cutoff P·eps·σ_max, as scipy's ``pinv`` in BE); ``within_class_variation_weighted`` =
      that / P.
    - ``sigma_w`` = mean of all P² entries of Σ_W (not its trace).
    - Over pairs i < j, cos_ij = ⟨m_i, m_j⟩ / (‖m_i‖‖m_j‖): ``equiangular`` = std(cos_ij),
      ``maxangle`` = mean |cos_ij + 1/(K'−1)|.
    - ``equinorm`` = std(‖m_c‖) / mean(‖m_c‖); ``relative_norm_std`` = std / mean of
      ‖m_i − m_j‖ over pairs i < j.

    Every std is numpy's population std (ddof = 0), as in BE. Computed in float64.

    A class with a single sample has no covariance (``np.cov`` returns NaN for it, so in BE
    every Σ_W-derived value becomes NaN). ``singleton_classes="exclude"`` (default) averages
    Σ_W over the classes with ≥ 2 samples only (Σ_B, K' and the geometry keys still use all
    K' classes); ``"nan"`` reproduces BE. If no class has ≥ 2 samples, the Σ_W keys are NaN.

    Fewer than 2 classes: every value is NaN (BE crashes there). A centred mean of norm 0
    makes the cosines, hence ``equiangular`` and ``maxangle``, NaN, as in BE.
    """
    if singleton_classes not in SINGLETON_CLASS_OPTIONS:
        raise ValueError(
            f"singleton_classes={singleton_classes!r} is not one of {SINGLETON_CLASS_OPTIONS}"
        )
    x = _checked_matrix(features, "features").detach().to("cpu", torch.float64)
    y = _as_labels(labels, x.shape[0]).to("cpu")
    classes, class_index, counts = torch.unique(y, return_inverse=True, return_counts=True)
    num_present = classes.numel()
    if num_present < 2:
        return {key: math.nan for key in COLLAPSE_KEYS}
    dim = x.shape[1]

    class_means = torch.zeros(num_present, dim, dtype=torch.float64).index_add_(0, class_index, x)
    class_means /= counts.unsqueeze(1)
    global_mean = x.mean(dim=0)
    centred_means = class_means - global_mean  # m_c, [K', P]

    # Σ_W = Σ_c S_c / ((N_c − 1)·K'_W) as one weighted Gram matrix of the class-centred rows.
    residuals = x - class_means[class_index]
    multi_sample = counts >= 2
    some_singleton_as_be = singleton_classes == "nan" and not bool(multi_sample.all())
    if some_singleton_as_be or not bool(multi_sample.any()):
        sigma_within = torch.full((dim, dim), math.nan, dtype=torch.float64)
    else:
        per_class_weight = (
            torch.where(multi_sample, 1.0 / (counts.clamp(min=2) - 1).double(), 0.0)
            / multi_sample.sum()
        )
        row_weight = per_class_weight[class_index]
        sigma_within = (residuals * row_weight.unsqueeze(1)).T @ residuals
    sigma_between = centred_means.T @ centred_means / num_present

    within_class_variation = (
        torch.trace(sigma_within @ torch.linalg.pinv(sigma_between)).item() / num_present
    )

    norms = centred_means.norm(dim=1)
    first, second = torch.triu_indices(num_present, num_present, offset=1)
    cosines = (centred_means[first] * centred_means[second]).sum(dim=1) / (
        norms[first] * norms[second]
    )
    pair_distances = (centred_means[first] - centred_means[second]).norm(dim=1)
    return {
        "within_class_variation": within_class_variation,
        "within_class_variation_weighted": within_class_variation / dim,
        "sigma_w": sigma_within.mean().item(),
        "equiangular": _population_std(cosines),
        "maxangle": (cosines + 1.0 / (num_present - 1)).abs().mean().item(),
        "equinorm": _population_std(norms) / norms.mean().item(),
        "relative_norm_std": _population_std(pair_distances) / pair_distances.mean().item(),
    }


def nc1(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """TH's NC1 = tr(Σ_W Σ_B⁺) of ``features`` [N, ...] with true ``labels`` [N] (TH §2.4).

    μ_c = class means, μ̄ = global sample mean (over all N rows, not the mean of the μ_c),
    M = [μ_c − μ̄]_c (D × C), Σ_B = (1/C) M Mᵀ, Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ
    (pooled, no per-class re-weighting, no extra 1/C). Σ_B⁺ = C · M V Λ⁻² Vᵀ Mᵀ where
    G = MᵀM = V Λ Vᵀ, keeping eigenpairs with λ_j > 1e-5·λ_max. Hence

        NC1 = (C/N) Σ_i Σ_j (κ_ij / λ_j)²,   κ_i = Vᵀ Mᵀ (h_i − μ_{y_i}).

    Features are flattened to [N, D]. Classes absent from ``labels`` are dropped: C is then the
    number of classes present (TH would divide by a zero count and return NaN). Returns NaN
    when fewer than 2 classes are present or all class means coincide (Σ_B = 0).

    One-shot front end of ``NC1Accumulator``; use that directly to stream over batches.
    """
    accumulator = NC1Accumulator(num_classes, device=features.device)
    accumulator.update_means(features, labels)
    accumulator.start_second_pass()
    accumulator.update_scatter(features, labels)
    return accumulator.value()


class NC1Accumulator:
    """Two-pass streaming ``nc1`` (TH §2.4) with O(C·D) memory, never a D × D matrix.

    Call order (the same batches, in any order and batching, in both passes)::

        acc = NC1Accumulator(num_classes)
        for h, y in batches: acc.update_means(h, y)     # pass 1: per-class float64 sums
        acc.start_second_pass()                         # means, G = MᵀM, eigh, 1e-5 cut
        for h, y in batches: acc.update_scatter(h, y)   # pass 2: Σ ‖Λ⁻¹ Vᵀ Mᵀ (h − μ_y)‖²
        acc.value()                                     # (C/N) · sum

    ``h`` may have any trailing shape (e.g. [B, 64, 32, 32]); it is flattened to [B, D].
    State lives on ``device`` (default: that of the first batch), in float64: pass 1 holds the
    C × D class sums, pass 2 the C' × D class means, W = M V Λ⁻¹ (D × k, k ≤ C − 1) and the
    C × k table μ_c W,
    since κ/λ of a sample is hᵀW − μ_yᵀW (``start_second_pass`` briefly holds two C × D
    arrays). Per batch, the only float64 copy of the features is one row chunk of at most
    max(2¹⁹, D) elements (4 MiB for D ≤ 2¹⁹), whatever the batch size.
    ``value()`` checks that pass 2 saw exactly the per-class counts of pass 1.

    Options (defaults: TH): ``centre`` is μ̄ (``"samples"``: the mean of all N rows;
    ``"class_means"``: the unweighted mean of the present classes' means), ``eigenvalue_cut``
    the relative cut on λ_j (None: a pseudo-inverse's, max(D, C')·ε_float64, see
    ``pinv_cut``). After ``start_second_pass`` the float64 ``class_means`` [C', D] of the C'
    present classes (``present``: their mask over the C classes) and ``global_mean`` [D] stay
    readable for metrics built on the same passes.
    """

    def __init__(
        self, num_classes: int, dim: int | None = None, device: torch.device | str | None = None,
        *, centre: str = "samples", eigenvalue_cut: float | None = EIGENVALUE_CUT,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be ≥ 1")
        if dim is not None and dim < 1:
            raise ValueError(f"dim={dim} must be ≥ 1 or None")
        if centre not in CENTRES:
            raise ValueError(f"centre={centre!r} is not one of {CENTRES}")
        self.centre = centre
        self.eigenvalue_cut = eigenvalue_cut
        self.num_classes = num_classes
        self.dim = dim
        self.device = torch.device(device) if device is not None else None
        self._phase = "means"
        self._class_sums: Tensor | None = None  # [C, D], pass 1
        self._counts = torch.zeros(num_classes, dtype=torch.int64)
        self._scatter_counts = torch.zeros(num_classes, dtype=torch.int64)
        self._projection: Tensor | None = None  # W = M V Λ⁻¹, [D, k], pass 2
        self._projected_means: Tensor | None = None  # μ_c W, [C, k], pass 2
        self._scatter_sum = 0.0
        self._num_present = 0
        self._degenerate = False  # < 2 classes present or Σ_B = 0: value is NaN
        self.class_means: Tensor | None = None  # [C', D] float64, after start_second_pass
        self.global_mean: Tensor | None = None  # μ̄ [D]
        self.present: Tensor | None = None  # [C] bool: classes seen in pass 1

    @property
    def state_nbytes(self) -> int:
        """Bytes held by the accumulator's tensors now (O(C·D); for memory reports)."""
        tensors = (
            self._class_sums,
            self.class_means,
            self._counts,
            self._scatter_counts,
            self._projection,
            self._projected_means,
        )
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    @property
    def counts(self) -> Tensor:
        """Samples per class seen in pass 1, int64 [C] on the CPU."""
        return self._counts

    def update_means(self, features: Tensor, labels: Tensor) -> None:
        """Pass 1: add the batch to the per-class float64 sums (``index_add_``)."""
        if self._phase != "means":
            raise RuntimeError(
                "NC1Accumulator.update_means called after start_second_pass(); "
                "pass 1 (update_means) must finish before pass 2 (update_scatter)"
            )
        h, y = self._batch(features, labels)
        if self._class_sums is None:
            self._class_sums = torch.zeros(
                self.num_classes, h.shape[1], dtype=torch.float64, device=self.device
            )
        for rows in self._row_chunks(h.shape[0], h.shape[1]):
            self._class_sums.index_add_(0, y[rows], h[rows].to(torch.float64))
        self._counts += torch.bincount(y, minlength=self.num_classes).cpu()

    def start_second_pass(self) -> None:
        """Between passes: class means, G = MᵀM = VΛVᵀ, keep λ_j > 1e-5·λ_max."""
        if self._phase != "means":
            raise RuntimeError("NC1Accumulator.start_second_pass called twice")
        if self._class_sums is None:
            raise RuntimeError(
                "NC1Accumulator.start_second_pass called before any update_means batch"
            )
        self._phase = "scatter"
        counts = self._counts.to(self._class_sums.device)
        present = counts > 0
        self._num_present = int(present.sum())
        global_mean = self._class_sums.sum(dim=0) / counts.sum()
        class_means = self._class_sums
        self._class_sums = None  # the sums become the means in place; kept as class_means
        class_means /= counts.clamp(min=1).unsqueeze(1).to(torch.float64)
        self.present = present.cpu()
        self.class_means = class_means[present]
        if self.centre == "class_means" and self._num_present > 0:
            global_mean = self.class_means.mean(dim=0)
        self.global_mean = global_mean
        if self._num_present < 2:
            self._degenerate = True
            return
        centred = self.class_means - global_mean  # Mᵀ, [C', D]
        gram = centred @ centred.T  # G = MᵀM, [C', C']
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        largest = eigenvalues.max()
        if not bool(largest > 0):
            self._degenerate = True
            return
        cut = (pinv_cut(centred.shape[1], self._num_present) if self.eigenvalue_cut is None
               else self.eigenvalue_cut)
        keep = eigenvalues > cut * largest
        # κ_j / λ_j for all kept j at once: (h − μ_y)ᵀ M V_k Λ_k⁻¹ = hᵀ W − (μ_yᵀ W), so that
        # pass 2 needs no gathered [B, D] copy of the means, only the C × k table μ W.
        self._projection = centred.T @ (eigenvectors[:, keep] / eigenvalues[keep])  # W, [D, k]
        self._projected_means = class_means @ self._projection  # μ_c W, [C, k]

    def update_scatter(self, features: Tensor, labels: Tensor) -> None:
        """Pass 2: add Σ_j (κ_j/λ_j)² of each sample, κ = Vᵀ Mᵀ (h − μ_y)."""
        if self._phase != "scatter":
            raise RuntimeError(
                "NC1Accumulator.update_scatter needs start_second_pass() first "
                f"(current phase: {self._phase!r})"
            )
        h, y = self._batch(features, labels)  # also checks D against pass 1
        self._scatter_counts += torch.bincount(y, minlength=self.num_classes).cpu()
        if self._degenerate:
            return
        assert self._projection is not None
        assert self._projected_means is not None
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for rows in self._row_chunks(h.shape[0], h.shape[1]):
            scaled_kappa = h[rows].to(torch.float64) @ self._projection
            scaled_kappa -= self._projected_means[y[rows]]
            total += scaled_kappa.square().sum()
        self._scatter_sum += total.item()  # one host sync per batch

    def value(self) -> float:
        """NC1 = (C/N) · Σ_i Σ_j (κ_ij/λ_j)² (C = classes present); NaN if degenerate."""
        if self._phase != "scatter":
            raise RuntimeError("NC1Accumulator.value needs both passes (start_second_pass first)")
        if not torch.equal(self._counts, self._scatter_counts):
            raise RuntimeError(
                "NC1Accumulator: pass 2 saw per-class counts "
                f"{self._scatter_counts.tolist()} but pass 1 saw {self._counts.tolist()}; "
                "both passes must see the same samples"
            )
        if self._degenerate:
            return math.nan
        return self._num_present / int(self._counts.sum()) * self._scatter_sum

    def _batch(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if features.dim() < 1:
            raise ValueError("features must have a batch dimension, got a 0-d tensor")
        h = features.detach().reshape(features.shape[0], -1)
        if self.dim is None:
            self.dim = h.shape[1]
        elif h.shape[1] != self.dim:
            raise ValueError(
                f"features flatten to {h.shape[1]} dims per sample, expected dim={self.dim}"
            )
        if self.device is None:
            self.device = h.device
        y = _as_labels(labels, h.shape[0]).to(self.device)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got range "
                f"[{int(y.min())}, {int(y.max())}]"
            )
        return h.to(self.device), y

    @staticmethod
    def _row_chunks(num_rows: int, dim: int) -> list[slice]:
        return row_chunks(num_rows, dim)


def row_chunks(num_rows: int, dim: int) -> list[slice]:
    """Row slices of at most max(2¹⁹, D) elements: bounded float64 copies of a batch."""
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // dim)
    starts = range(0, num_rows, rows_per_chunk)
    return [slice(start, start + rows_per_chunk) for start in starts]


def pinv_cut(dim: int, num_classes: int) -> float:
    """The relative cut of a pseudo-inverse of the D × D Σ_B (torch/numpy: max(rows, cols)·ε,
    here max(D, C)·ε so that a numerically zero λ of the C × C Gram is dropped when D < C)."""
    return max(dim, num_classes) * torch.finfo(torch.float64).eps


def _checked_matrix(features: Tensor, name: str) -> Tensor:
    if features.dim() != 2:
        raise ValueError(f"{name} must be [N, P], got shape {tuple(features.shape)}")
    return features


def _as_labels(labels: Tensor, num_samples: int) -> Tensor:
    if labels.dim() != 1 or labels.shape[0] != num_samples:
        raise ValueError(
            f"labels must be [N] with N={num_samples}, got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    return labels.long()


def _population_std(values: Tensor) -> float:
    """numpy's default std (ddof = 0), as BE uses."""
    return values.std(correction=0).item()
