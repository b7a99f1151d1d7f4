"""collapse_metrics (BE §1.5) and nc1 / NC1Accumulator (TH §2.4) against closed forms,
naive numpy float64 formulas, hand-worked examples and invariants."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from latentgeo.metrics.collapse import COLLAPSE_KEYS, NC1Accumulator, collapse_metrics, nc1


def _class_structured(num_samples, dim, num_classes, seed, spread=3.0, counts=None):
    generator = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    if counts is None:
        labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    else:
        labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(counts))
        labels = labels[torch.randperm(labels.numel(), generator=generator)]
    noise = torch.randn(labels.numel(), dim, generator=generator, dtype=torch.float64)
    return means[labels] + noise, labels


def _be_reference(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """BE's get_collapse_metrics written out with numpy loops (classes = labels present)."""
    global_mean = x.mean(axis=0)
    centred, covariances, outers = [], [], []
    for c in np.unique(y):
        rows = x[y == c]
        m = rows.mean(axis=0) - global_mean
        centred.append(m)
        covariances.append(np.cov(rows.T))
        outers.append(np.outer(m, m))
    k = len(centred)
    sigma_w = np.mean(covariances, axis=0)
    sigma_b = np.mean(outers, axis=0)
    wcv = np.trace(sigma_w @ scipy.linalg.pinv(sigma_b)) / k
    cosines, shifted, distances = [], [], []
    for i in range(k):
        for j in range(i + 1, k):
            cos = centred[i] @ centred[j] / np.linalg.norm(centred[i]) / np.linalg.norm(centred[j])
            cosines.append(cos)
            shifted.append(abs(cos + 1.0 / (k - 1)))
            distances.append(np.linalg.norm(centred[i] - centred[j]))
    norms = np.linalg.norm(centred, axis=1)
    return {
        "within_class_variation": wcv,
        "within_class_variation_weighted": wcv / x.shape[1],
        "sigma_w": np.mean(sigma_w),
        "equiangular": np.std(cosines),
        "maxangle": np.mean(shifted),
        "equinorm": np.std(norms) / np.mean(norms),
        "relative_norm_std": np.std(distances) / np.mean(distances),
    }


def _th_reference(x: np.ndarray, y: np.ndarray) -> float:
    """TH's NC1 written out with D × D matrices: tr(Σ_W pinv(Σ_B)), pooled Σ_W / N."""
    classes = np.unique(y)
    global_mean = x.mean(axis=0)
    means = {c: x[y == c].mean(axis=0) for c in classes}
    residuals = x - np.stack([means[c] for c in y])
    sigma_w = residuals.T @ residuals / len(x)
    m = np.stack([means[c] - global_mean for c in classes], axis=1)  # D × C
    sigma_b = m @ m.T / len(classes)
    # explicit cut well above float64 noise and far below the smallest real eigenvalue
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)))


# ---------------------------------------------------------------- collapse_metrics (BE)


def test_two_classes_worked_by_hand():
    # class 0: (0,0),(2,0); class 1: (4,1),(4,3). μ_G = (2.5, 1), m_0 = −m_1 = (−1.5, −1).
    # cov_0 = diag(2, 0), cov_1 = diag(0, 2) → Σ_W = I; Σ_B = v vᵀ, v = (1.5, 1), ‖v‖² = 13/4.
    # tr(Σ_W Σ_B⁺) = 1/‖v‖² = 4/13 → /K' = 2/13; /P = 1/13; mean entry of I₂ = 1/2.
    # One pair with cos = −1: std 0, |−1 + 1/(2−1)| = 0; equal norms → 0; one distance → 0.
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 1.0], [4.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1])
    result = collapse_metrics(x, y)
    expected = {
        "within_class_variation": 2 / 13,
        "within_class_variation_weighted": 1 / 13,
        "sigma_w": 0.5,
        "equiangular": 0.0,
        "maxangle": 0.0,
        "equinorm": 0.0,
        "relative_norm_std": 0.0,
    }
    assert set(result) == set(COLLAPSE_KEYS)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(result[key], float)


def test_matches_numpy_reference_on_random_data_for_every_key():
    x, y = _class_structured(400, 12, 5, seed=1)
    y = y + 3  # labels need not start at 0 (predictions of a larger label set)
    expected = _be_reference(x.numpy(), y.numpy())
    result = collapse_metrics(x.float(), y)
    for key in COLLAPSE_KEYS:
        # float32 input, float64 inside: agreement limited by the float32 rounding of x
        assert result[key] == pytest.approx(expected[key], rel=1e-5), key
    result64 = collapse_metrics(x, y)
    for key in COLLAPSE_KEYS:
        assert result64[key] == pytest.approx(expected[key], rel=1e-10), key


def test_rank_deficient_between_class_matrix_matches_reference():
    # P = 30 > K' = 4: Σ_B has rank 3; the pseudo-inverse must drop the null space
    x, y = _class_structured(200, 30, 4, seed=2)
    expected = _be_reference(x.numpy(), y.numpy())
    result = collapse_metrics(x, y)
    for key in COLLAPSE_KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-9), key


def test_perfect_collapse_gives_zero_within_class_variation():
    # simplex ETF: K centred means with equal norms and cos = −1/(K−1)
    num_classes = 4
    etf = torch.eye(num_classes) - 1.0 / num_classes
    y = torch.arange(num_classes).repeat(25)
    result = collapse_metrics(etf[y] + 7.0, y)
    assert result["within_class_variation"] == 0.0
    assert result["sigma_w"] == 0.0
    assert result["equiangular"] == pytest.approx(0.0, abs=1e-12)
    assert result["maxangle"] == pytest.approx(0.0, abs=1e-12)
    assert result["equinorm"] == pytest.approx(0.0, abs=1e-12)
    assert result["relative_norm_std"] == pytest.approx(0.0, abs=1e-12)


def test_invariant_to_permuting_class_ids_and_sample_order():
    x, y = _class_structured(300, 8, 6, seed=3)
    base = collapse_metrics(x, y)
    relabel = torch.tensor([4, 0, 5, 2, 1, 3])
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    permuted = collapse_metrics(x[order], relabel[y][order])
    for key in COLLAPSE_KEYS:
        assert permuted[key] == pytest.approx(base[key], rel=1e-10), key


def test_fewer_than_two_classes_gives_nan():
    x = torch.randn(10, 3)
    result = collapse_metrics(x, torch.full((10,), 7))
    assert set(result) == set(COLLAPSE_KEYS)
    assert all(math.isnan(value) for value in result.values())


def test_singleton_class_excluded_by_default_and_nan_like_be():
    x, y = _class_structured(60, 5, 3, seed=4)
    lone = torch.randn(1, 5, dtype=torch.float64)
    x_all, y_all = torch.cat([x, lone]), torch.cat([y, torch.tensor([9])])
    excluded = collapse_metrics(x_all, y_all)
    # Σ_W = mean of the three multi-sample covariances; Σ_B, K' = 4 from all four classes
    xs, ys = x_all.numpy(), y_all.numpy()
    sigma_w = np.mean([np.cov(xs[ys == c].T) for c in range(3)], axis=0)
    global_mean = xs.mean(axis=0)
    centred = [xs[ys == c].mean(axis=0) - global_mean for c in (0, 1, 2, 9)]
    sigma_b = np.mean([np.outer(m, m) for m in centred], axis=0)
    wcv = np.trace(sigma_w @ scipy.linalg.pinv(sigma_b)) / 4
    assert excluded["within_class_variation"] == pytest.approx(wcv, rel=1e-10)
    assert excluded["sigma_w"] == pytest.approx(np.mean(sigma_w), rel=1e-10)
    be_like = collapse_metrics(x_all, y_all, singleton_classes="nan")
    assert math.isnan(be_like["within_class_variation"])
    assert math.isnan(be_like["sigma_w"])
    assert be_like["equinorm"] == pytest.approx(excluded["equinorm"], rel=1e-12)
    with pytest.raises(ValueError, match="singleton_classes"):
        collapse_metrics(x_all, y_all, singleton_classes="zero")


# ---------------------------------------------------------------- nc1 (TH)


def test_nc1_two_classes_worked_by_hand():
    # same points as above: pooled Σ_W = (diag(2,0) + diag(0,2)) / 4 = I/2,
    # Σ_B = (1/2)(m_0 m_0ᵀ + m_1 m_1ᵀ) = v vᵀ → NC1 = tr(I/2 · v vᵀ/‖v‖⁴) = 1/(2·13/4) = 2/13
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 1.0], [4.0, 3.0]])
    assert nc1(x, torch.tensor([0, 0, 1, 1]), num_classes=2) == pytest.approx(2 / 13, rel=1e-12)


def test_nc1_matches_direct_formula_with_rank_deficient_between_class_matrix():
    # D = 40 > C = 6 (unbalanced) → Σ_B has rank C − 1 = 5; tolerance rel 1e-9 (float64 both)
    x, y = _class_structured(0, 40, 6, seed=5, counts=[50, 80, 35, 120, 64, 91])
    assert nc1(x, y, 6) == pytest.approx(_th_reference(x.numpy(), y.numpy()), rel=1e-9)


def test_nc1_streaming_over_uneven_batches_equals_one_shot():
    x, y = _class_structured(0, 3 * 8 * 8, 10, seed=6, counts=[37 + 5 * c for c in range(10)])
    images = x.float().reshape(-1, 3, 8, 8)  # flattened by the accumulator itself
    one_shot = nc1(images, y, 10)
    boundaries = [0, 1, 8, 9, 100, 101, 250, 333, 400, y.numel()]
    spans = list(zip(boundaries[:-1], boundaries[1:], strict=True))
    accumulator = NC1Accumulator(10, dim=3 * 8 * 8)
    for start, stop in spans:
        accumulator.update_means(images[start:stop], y[start:stop])
    accumulator.start_second_pass()
    for start, stop in reversed(spans):  # any order and batching in pass 2
        accumulator.update_scatter(images[start:stop], y[start:stop])
    assert accumulator.value() == pytest.approx(one_shot, rel=1e-10)
    assert one_shot == pytest.approx(
        _th_reference(images.double().reshape(len(y), -1).numpy(), y.numpy()), rel=1e-9
    )


def test_nc1_collapsed_is_zero_and_invariant_to_scale_shift_and_class_ids():
    y = torch.arange(5).repeat(20)
    means = torch.randn(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert nc1(means[y], y, 5) == pytest.approx(0.0, abs=1e-20)
    x, y = _class_structured(300, 16, 5, seed=8)
    base = nc1(x, y, 5)
    assert base > 0.1
    assert nc1(1000.0 * x - 3.0, y, 5) == pytest.approx(base, rel=1e-10)
    relabel = torch.tensor([3, 0, 4, 1, 2])
    assert nc1(x, relabel[y], 5) == pytest.approx(base, rel=1e-10)


def test_nc1_absent_classes_are_dropped():
    # labels 0, 2, 5 of num_classes = 8: same as the compact 3-class problem
    x, y = _class_structured(150, 10, 3, seed=9)
    sparse_labels = torch.tensor([0, 2, 5])[y]
    assert nc1(x, sparse_labels, 8) == pytest.approx(nc1(x, y, 3), rel=1e-12)
    assert nc1(x, sparse_labels, 8) == pytest.approx(_th_reference(x.numpy(), y.numpy()), rel=1e-9)
    assert math.isnan(nc1(x, torch.zeros(150, dtype=torch.long), 3))  # one class present


def test_accumulator_rejects_out_of_order_calls_and_mismatched_passes():
    x, y = _class_structured(40, 6, 3, seed=10)
    accumulator = NC1Accumulator(3)
    with pytest.raises(RuntimeError, match="start_second_pass"):
        accumulator.update_scatter(x, y)
    with pytest.raises(RuntimeError, match="both passes"):
        accumulator.value()
    with pytest.raises(RuntimeError, match="before any update_means"):
        accumulator.start_second_pass()
    accumulator.update_means(x, y)
    accumulator.start_second_pass()
    with pytest.raises(RuntimeError, match="after start_second_pass"):
        accumulator.update_means(x, y)
    with pytest.raises(RuntimeError, match="called twice"):
        accumulator.start_second_pass()
    accumulator.update_scatter(x[:30], y[:30])
    with pytest.raises(RuntimeError, match="same samples"):
        accumulator.value()
    with pytest.raises(ValueError, match="labels must lie in"):
        accumulator.update_scatter(x, y + 3)
    with pytest.raises(ValueError, match="expected dim=6"):
        accumulator.update_scatter(x[:, :5], y)


_MEMORY_PROBE = """
import json, sys
from pathlib import Path
import torch
from latentgeo.metrics.collapse import NC1Accumulator, nc1

def peak_rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024

num_classes, dim, batch, num_batches = (int(a) for a in sys.argv[1:])
class_means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(11))

def batches():
    generator = torch.Generator().manual_seed(12)
    for _ in range(num_batches):
        y = torch.randint(0, num_classes, (batch,), generator=generator)
        h = torch.randn(batch, dim, generator=generator).add_(class_means[y])
        yield h.reshape(batch, 64, -1), y

nc1(torch.randn(20, 8), torch.arange(20) % 2, 2)  # load kernels before measuring
try:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: peak RSS := current RSS
    rss_before = peak_rss()
except OSError:
    rss_before = None
accumulator = NC1Accumulator(num_classes)
state_peak = 0
for h, y in batches():
    accumulator.update_means(h, y)
    state_peak = max(state_peak, accumulator.state_nbytes)
    del h
accumulator.start_second_pass()
for h, y in batches():
    accumulator.update_scatter(h, y)
    state_peak = max(state_peak, accumulator.state_nbytes)
    del h
value = accumulator.value()
increase = None if rss_before is None else peak_rss() - rss_before
print(json.dumps({"value": value, "state_peak": state_peak, "rss_peak_increase": increase}))
"""


def test_streaming_memory_is_order_classes_times_dim_at_resnet18_first_stage():
    # D = 64·32·32 = 65536 (resnet18 first stage on CIFAR), C = 10: one C·D float64 "unit" is
    # 5.2 MB, where a single D × D float64 matrix would need 32 GiB.
    num_classes, dim, batch, num_batches = 10, 64 * 32 * 32, 16, 8
    unit = num_classes * dim * 8
    # A fresh process whose large allocations are all mmapped (fixed glibc mmap threshold), so
    # that its peak RSS tracks live memory instead of glibc's retained free lists.
    environment = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": str(128 * 1024),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEMORY_PROBE,
            str(num_classes),
            str(dim),
            str(batch),
            str(num_batches),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    probe = json.loads(completed.stdout.strip().splitlines()[-1])

    # state between batches: C×D sums (pass 1), then the C×D means (kept for the metrics that
    # share the passes), W = M V Λ⁻¹ (D×k, k ≤ C − 1) and μ W
    assert probe["state_peak"] <= 2 * unit + 1024
    if probe["rss_peak_increase"] is not None:
        # sums/means + centred means inside start_second_pass (2 units) or means + W (1.9), plus
        # one float64 row chunk (4 MiB = 0.8 unit) and the probe's own float32 batch and
        # gathered means (2 × 4.2 MB = 1.6 units): ≈ 3.5 units; bound 6 units = 31 MB,
        # against 32 GiB for one D × D matrix.
        assert probe["rss_peak_increase"] < 6 * unit, probe["rss_peak_increase"] / unit

    # the value, recomputed in one shot from the same data and the kept eigenpairs
    class_means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(11))
    generator = torch.Generator().manual_seed(12)
    all_h, all_y = [], []
    for _ in range(num_batches):
        y = torch.randint(0, num_classes, (batch,), generator=generator)
        all_h.append(torch.randn(batch, dim, generator=generator).add_(class_means[y]))
        all_y.append(y)
    h, y = torch.cat(all_h).double(), torch.cat(all_y)
    global_mean = h.mean(0)
    centred = torch.stack([h[y == c].mean(0) for c in range(num_classes)]) - global_mean
    eigenvalues, eigenvectors = torch.linalg.eigh(centred @ centred.T)
    keep = eigenvalues > 1e-5 * eigenvalues.max()
    kappa = (h - centred[y] - global_mean) @ centred.T @ eigenvectors[:, keep] / eigenvalues[keep]
    expected = num_classes / len(y) * kappa.square().sum().item()
    assert probe["value"] == pytest.approx(expected, rel=1e-9)
