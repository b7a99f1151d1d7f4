"""Peak memory and time of the streaming NC1 (TH §2.4) against the D × D approach.

Run: ``python benchmarks/nc1_memory.py [--samples 2048]`` (CPU, ≈ 1 min on 2 cores).

Rows are resnet18 block outputs on CIFAR-shaped inputs (D = 64·32·32 … 512·4·4) plus three
two small widths where the D × D approach is cheap enough to time (512 is resnet18's pooled
penultimate layer). Data:
N random samples, C = 10 classes, x = μ_y + N(0, I) with μ_c ~ N(0, I), generated batch by
batch from a fixed seed, so both passes see the same samples without holding them all.

- streaming: ``NC1Accumulator`` (state = C×D class sums, then C×D means + D×k projection);
- D × D: accumulate Σ_i h_i h_iᵀ (D × D) and class sums in one pass, then
  Σ_W = (Gram − Σ_c n_c μ_c μ_cᵀ)/N, Σ_B = (1/C) M Mᵀ, tr(Σ_W pinv(Σ_B)) with the same 1e-5
  relative cut (the shape of TH's June-2025 code; it holds three D × D float64 matrices).

Memory columns: "state" = bytes the method must hold (accumulator tensors, or one D × D
float64 matrix for D × D — a lower bound); "peak RSS" = measured growth of the process's peak
resident memory while the method runs (Linux VmHWM, reset through /proc/self/clear_refs, with a
fixed glibc mmap threshold so freed buffers really leave), including one float32 data batch
of BATCH × D × 4 bytes (64 MiB at D = 65536) that any method needs.
The last line gives D × D / streaming memory ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from pathlib import Path

import torch

from latentgeo.metrics.collapse import EIGENVALUE_CUT, NC1Accumulator

NUM_CLASSES = 10
BATCH = 256
MAX_DENSE_DIM = 2048  # the D × D route takes ≈ 12 s at D = 2048 on 2 cores, minutes beyond
SHAPES = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (1024,), (512,)]


def fix_malloc_mmap_threshold() -> None:
    """Make glibc mmap every buffer ≥ 128 KiB, so freed tensors leave RSS at once."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # -3 = M_MMAP_THRESHOLD
    except OSError:
        pass


def reset_peak_rss() -> int | None:
    """Reset the peak RSS to the current RSS; return it (None where Linux /proc is absent)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return peak_rss()
    except OSError:
        return None


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    raise OSError("VmHWM not in /proc/self/status")


def batches(shape, num_samples, class_means):
    """Batches of μ_y + N(0, I), holding one [BATCH, D] float32 tensor at a time."""
    generator = torch.Generator().manual_seed(1)
    for start in range(0, num_samples, BATCH):
        size = min(BATCH, num_samples - start)
        labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
        one_hot = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
        features = torch.randn(size, class_means.shape[1], generator=generator)
        features.addmm_(one_hot, class_means)  # += μ_y without a gathered [B, D] copy
        yield features.reshape(size, *shape), labels
        del features  # let the next batch reuse the memory


def streaming_nc1(shape, num_samples, class_means):
    accumulator = NC1Accumulator(NUM_CLASSES)
    state = 0
    for features, labels in batches(shape, num_samples, class_means):
        accumulator.update_means(features, labels)
        state = max(state, accumulator.state_nbytes)
        del features
    accumulator.start_second_pass()
    for features, labels in batches(shape, num_samples, class_means):
        accumulator.update_scatter(features, labels)
        state = max(state, accumulator.state_nbytes)
        del features
    return accumulator.value(), state


def dense_nc1(shape, num_samples, class_means):
    dim = class_means.shape[1]
    gram = torch.zeros(dim, dim, dtype=torch.float64)
    sums = torch.zeros(NUM_CLASSES, dim, dtype=torch.float64)
    counts = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for features, labels in batches(shape, num_samples, class_means):
        h = features.reshape(len(labels), -1).double()
        gram.addmm_(h.T, h)
        sums.index_add_(0, labels, h)
        counts += torch.bincount(labels, minlength=NUM_CLASSES)
        del features, h
    means = sums / counts.unsqueeze(1)
    centred = means - sums.sum(0) / num_samples
    sigma_between = centred.T @ centred / NUM_CLASSES
    # Σ_i h hᵀ − Σ_c n_c μ_c μ_cᵀ = Σ_c Σ_{i∈c} (h − μ_c)(h − μ_c)ᵀ, exact for unbalanced classes
    sigma_within = (gram - (means.T * counts) @ means) / num_samples
    pinv = torch.linalg.pinv(sigma_between, hermitian=True, rtol=EIGENVALUE_CUT)
    return torch.trace(sigma_within @ pinv).item(), dim * dim * 8


def measure(method, shape, num_samples, class_means):
    before = reset_peak_rss()
    start = time.perf_counter()
    value, state = method(shape, num_samples, class_means)
    seconds = time.perf_counter() - start
    rss = None if before is None else peak_rss() - before
    return value, state, rss, seconds


def human(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(num_bytes) < 1024 or unit == "TiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{num_bytes:.0f} B"
        num_bytes /= 1024
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048, help="N samples per shape")
    args = parser.parse_args()
    fix_malloc_mmap_threshold()
    torch.manual_seed(0)
    num_samples = args.samples

    header = (
        f"{'shape':>12} {'D':>6} | {'stream state':>12} {'stream peak RSS':>15} "
        f"{'stream s':>8} | {'DxD state':>10} {'DxD peak RSS':>12} {'DxD s':>7} "
        f"| {'NC1 stream':>10} {'rel.diff':>8}"
    )
    print(
        f"N = {num_samples}, C = {NUM_CLASSES}, batch {BATCH} (peak RSS includes one float32 "
        f"batch: {BATCH}·D·4 B), float64 accumulation, torch threads = {torch.get_num_threads()}"
    )
    print(header)
    print("-" * len(header))
    ratios = []
    for shape in SHAPES:
        dim = 1
        for size in shape:
            dim *= size
        class_means = torch.randn(NUM_CLASSES, dim)
        value, state, rss, seconds = measure(streaming_nc1, shape, num_samples, class_means)
        dense_state = dim * dim * 8
        if dim <= MAX_DENSE_DIM:
            dense_value, _, dense_rss, dense_seconds = measure(
                dense_nc1, shape, num_samples, class_means
            )
            dense_cells = (
                f"{human(dense_rss):>12} {dense_seconds:7.2f}",
                f"{abs(dense_value - value) / value:8.1e}",
            )
        else:
            dense_rss = None
            dense_cells = (f"{'not run':>12} {'-':>7}", f"{'-':>8}")
        print(
            f"{'x'.join(map(str, shape)):>12} {dim:6d} | {human(state):>12} {human(rss):>15} "
            f"{seconds:8.2f} | {human(dense_state):>10} {dense_cells[0]} | {value:10.4f} "
            f"{dense_cells[1]}"
        )
        measured = "" if dense_rss is None or not rss else f", peak RSS {dense_rss / rss:.1f}x"
        ratios.append(f"D={dim}: {dense_state / state:.0f}x{measured}")
    print("memory ratio DxD / streaming (state" + "; measured where run): " + " | ".join(ratios))


if __name__ == "__main__":
    main()
