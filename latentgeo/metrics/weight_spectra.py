"""Heavy-tailed self-regularisation metrics of each layer's weights, as WeightWatcher computes them.

Martin & Mahoney 2021, "Predicting trends in the quality of state-of-the-art neural networks
without access to training or testing data" (Nature Communications 12:4122), and Martin &
Mahoney 2021 JMLR ("Implicit self-regularization in deep neural networks"); the numbers are
those of WeightWatcher 0.7.7 (``WeightWatcher().analyze()`` with its defaults:
``conv2d_norm=True``, ``pool=True``, ``pl_package="ww"``, ``fix_fingers=False``), data-free.

Eigenvalues (the empirical spectral density, ESD). A ``Linear`` weight W [out, in] is one
matrix; a ``Conv2d`` weight [out, in, kh, kw] is split, as WeightWatcher does by default, into
its kh·kw slices W[:, :, i, j] [out, in], each a matrix. The ESD of a layer pools the
eigenvalues λ = σ² of every slice's WᵀW (σ its singular values): kh·kw·min(out, in) of them.
WeightWatcher's normalisation: conv slices are first scaled by √(1/2) (its ``conv2d_norm``,
√(conv2d_count/2) with conv2d_count = 1 when pooling), so a conv layer's λ are σ²/2; linear
layers are not scaled, and no 1/N normalisation of WᵀW is applied (the paper's X = WᵀW/N is
not used). WeightWatcher reads weights through float32; here they are used as stored (float32
in a model) and every computation is float64. Layers with fewer than ``MIN_EIGENVALUES``
eigenvalues are skipped, as WeightWatcher's ``min_evals`` does (it counts M·kh·kw with M its
own "smaller" dimension, which for even kernel sizes with out < in is ``in``: there the two
rules can differ).

Power-law exponent α (Clauset, Shalizi & Newman 2009, as WeightWatcher's ``WWFit``): of the
eigenvalues λ > 10⁻⁵ sorted ascending x_1 ≤ … ≤ x_N, every x_i (i < N) is a candidate x_min
with tail x_i … x_N (n = N − i + 1 values) and the MLE

    α_i = 1 + n / Σ_{j ≥ i} ln(x_j / x_i),

and x_min is the candidate with the smallest Kolmogorov–Smirnov distance
D_i = max_j |1 − (x_j/x_i)^{1−α_i} − (j − i)/n| (first on ties). Deviations from the paper:
the empirical CDF is only the lower step (j − i)/n (Clauset takes the sup over both steps);
every eigenvalue is a candidate, repeated values included; with fewer than 20 eigenvalues
above 10⁻⁵ WeightWatcher switches to a "small-N" fit (its ``fit_powerlaw_smallN``): the
bias-corrected α_i = 1 + (n − 1)/Σ ln(x_j/x_i), candidates with tails of at least 8, and x_min
minimising D_i − 0.868/√n instead of D_i. A fit that fails (fewer than two eigenvalues above
10⁻⁵) gives NaN here (WeightWatcher reports −1).

Per layer, with λ the pooled ESD:
    alpha              α of the fit above
    alpha_weighted     α · log10 λ_max            (Martin & Mahoney's α̂)
    log_alpha_norm     log10 Σ λ^α               (the Schatten α-norm, as WeightWatcher)
    spectral_norm      λ_max = σ_max² (WeightWatcher's "spectral norm" is the squared one)
    log_spectral_norm  log10 λ_max
    log_norm           log10 Σ λ = log10 ‖W‖²_F (of the scaled slices, for conv layers)
    stable_rank        Σ λ / λ_max
    num_spikes         the number of λ ≥ x_min (the fitted tail)
    ks_distance        D at the chosen x_min
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from latentgeo.metrics.hyperplanes import included_layers

SPECTRA_LAYER_TYPES = (nn.Linear, nn.Conv2d)  # WeightWatcher's DENSE and CONV2D types
MIN_EIGENVALUES = 8  # WeightWatcher's min_evals: smaller layers are skipped
FIT_FLOOR = 1e-5  # WeightWatcher's EVALS_THRESH: only λ above it enter the power-law fit
SMALL_FIT = 20  # WeightWatcher's SMALL_N_CUTOFF: fewer fitted λ use its small-N fit
SMALL_FIT_MIN_TAIL = 8  # fit_powerlaw_smallN's k_min
SMALL_FIT_TAIL_BONUS = 0.868  # fit_powerlaw_smallN's objective D − 0.868/√n
CONV_SLICE_SCALE = math.sqrt(1 / 2.0)  # WeightWatcher's conv2d_norm with conv2d_count = 1
SPECTRA_KEYS = ("alpha", "alpha_weighted", "log_alpha_norm", "spectral_norm",
                "log_spectral_norm", "log_norm", "stable_rank", "num_spikes", "ks_distance")


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    xmin: float
    ks_distance: float


def layer_matrices(weight: Tensor) -> Tensor:
    """The matrices whose singular values form the ESD, float64 [slices, out, in]: a linear
    weight itself, a conv weight's kh·kw slices scaled by ``CONV_SLICE_SCALE``."""
    w = weight.detach().to("cpu", torch.float64)
    if w.ndim == 2:
        return w.unsqueeze(0)
    if w.ndim == 4:
        return w.permute(2, 3, 0, 1).reshape(-1, w.shape[0], w.shape[1]) * CONV_SLICE_SCALE
    raise ValueError(f"a weight of shape {tuple(w.shape)} is neither linear [out, in] nor "
                     "Conv2d [out, in, kh, kw]")


def layer_eigenvalues(weight: Tensor) -> np.ndarray:
    """The pooled eigenvalues λ = σ² of every matrix of ``layer_matrices``, ascending."""
    singular_values = torch.linalg.svdvals(layer_matrices(weight))
    return np.sort((singular_values**2).flatten().numpy())


def fit_power_law(eigenvalues: np.ndarray) -> PowerLawFit | None:
    """WeightWatcher's power-law fit of the ESD (module docstring); None when it fails."""
    data = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    data = data[data > FIT_FLOOR]
    if len(data) < 2:
        return None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if len(data) < SMALL_FIT:
            return _fit_small(data)
        return _fit_standard(data)


def _fit_standard(data: np.ndarray) -> PowerLawFit:
    """WWFit.fit_power_law_standard, the same float64 operations in the same order."""
    count = len(data)
    log_data = np.log(data, dtype=np.float64)
    alphas = np.zeros(count - 1, dtype=np.float64)
    distances = np.ones(count - 1, dtype=np.float64)
    for i, xmin in enumerate(data[:-1]):
        n = float(count - i)
        alpha = 1 + n / (np.sum(log_data[i:]) - n * log_data[i])
        alphas[i] = alpha
        if alpha > 1:
            distances[i] = np.max(np.abs(1 - (data[i:] / xmin) ** (-alpha + 1)
                                         - np.arange(n) / n))
    best = int(np.argmin(distances))
    return PowerLawFit(float(alphas[best]), float(data[best]), float(distances[best]))


def _fit_small(data: np.ndarray) -> PowerLawFit:
    """WWFit.fit_powerlaw_smallN (k_min = 8, no prior), the same float64 operations."""
    count = len(data)
    log_data = np.log(data, dtype=np.float64)
    alphas = np.zeros(count - 1, dtype=np.float64)
    distances = np.ones(count - 1, dtype=np.float64)
    objectives = np.full(count - 1, np.inf, dtype=np.float64)
    for i, xmin in enumerate(data[:-1]):
        tail = count - i
        if tail < SMALL_FIT_MIN_TAIL:
            continue
        n = float(tail)
        log_sum = np.sum(log_data[i:]) - n * log_data[i]
        if log_sum <= 1e-12:  # a degenerate tail (all equal)
            continue
        alpha = 1.0 + (n - 1.0) / log_sum
        alphas[i] = alpha
        if alpha <= 1.0:
            continue
        fitted = 1.0 - (data[i:] / xmin) ** (1.0 - alpha)
        distance = float(np.max(np.abs(np.arange(tail, dtype=np.float64) / n - fitted)))
        distances[i] = distance
        objectives[i] = distance - SMALL_FIT_TAIL_BONUS / np.sqrt(n)
    if np.isfinite(objectives).any():
        best = int(np.nanargmin(objectives))
        return PowerLawFit(float(alphas[best]), float(data[best]), float(distances[best]))
    # no candidate had a tail of 8: the whole ESD is the tail
    n = float(count)
    log_sum = np.sum(log_data) - n * log_data[0]
    if log_sum <= 1e-12:
        return PowerLawFit(1.0, float(data[0]), 1.0)
    alpha = 1.0 + (n - 1.0) / log_sum
    fitted = 1.0 - (data / data[0]) ** (1.0 - alpha)
    distance = float(np.max(np.abs(np.arange(count, dtype=np.float64) / n - fitted)))
    return PowerLawFit(float(alpha), float(data[0]), distance)


def spectral_metrics(eigenvalues: np.ndarray) -> dict[str, float]:
    """``SPECTRA_KEYS`` of one layer's ESD (module docstring)."""
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    norm = float(np.sum(eigenvalues))
    spectral_norm = float(np.max(eigenvalues))
    log_spectral_norm = math.log10(spectral_norm)
    fit = fit_power_law(eigenvalues)
    alpha = fit.alpha if fit else math.nan
    return {
        "alpha": alpha,
        "alpha_weighted": alpha * log_spectral_norm,
        "log_alpha_norm": float(np.log10(np.sum(eigenvalues**alpha))) if fit else math.nan,
        "spectral_norm": spectral_norm,
        "log_spectral_norm": log_spectral_norm,
        "log_norm": math.log10(norm),
        "stable_rank": norm / spectral_norm,
        "num_spikes": int(np.count_nonzero(eigenvalues >= fit.xmin)) if fit else 0,
        "ks_distance": fit.ks_distance if fit else math.nan,
    }


def spectra_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Linear and Conv2d of ``model`` in module order, 1×1 convs included."""
    return [(name, module)
            for name, module in included_layers(model, with_linear=True, skip_pointwise=False)
            if isinstance(module, SPECTRA_LAYER_TYPES)]


def weight_spectra(model: nn.Module) -> dict[str, dict[str, float]]:
    """``spectral_metrics`` of every layer of ``spectra_layers`` with at least
    ``MIN_EIGENVALUES`` eigenvalues, by module name."""
    out: dict[str, dict[str, float]] = {}
    for name, module in spectra_layers(model):
        eigenvalues = layer_eigenvalues(module.weight)
        if len(eigenvalues) >= MIN_EIGENVALUES:
            out[name] = spectral_metrics(eigenvalues)
    return out
