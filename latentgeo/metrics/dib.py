"""DIB relabelling: TH's "modified Algorithm 1" (TH §2.5, after Dubois et al. 2020).

Each sample gets N_D new labels, the base-C digits of its index within its class. Decoders that
predict these digits from a representation measure how much non-label information it keeps.
Only the labels live here; the decoders are trained elsewhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def num_digits(max_index: int, base: int) -> int:
    """Number of base-``base`` digits needed to write ``max_index`` (at least 1).

    Integer arithmetic: the smallest N_D ≥ 1 with base^N_D > max_index. For the DIB labels,
    ``max_index`` = (largest class count) − 1. TH uses ⌈log_C(max count)⌉ in floats, which is
    wrong at exact powers where ``math.log`` overshoots (e.g. 125 samples, C = 5: log gives
    3.0000000000000004 → 4 digits instead of 3) and gives 0 digits when every class has one
    sample (docs/definitions.md §2.5, §5 note 7).
    """
    if base < 2:
        raise ValueError(f"base={base} must be ≥ 2")
    if max_index < 0:
        raise ValueError(f"max_index={max_index} must be ≥ 0")
    digits = 1
    while base**digits <= max_index:
        digits += 1
    return digits


def dib_labels(labels: Tensor, num_classes: int) -> Tensor:
    """DIB label matrix [N, N_D] (int64) of ``labels`` [N] (TH §2.5, "modified Algorithm 1").

    i_n = index of sample n among the samples of its class, in dataset order (0, 1, …);
    N_D = ``num_digits(max_c n_c − 1, C)``; label_k(n) = ⌊i_n / C^(N_D−1−k)⌋ mod C, most
    significant digit first, zero-padded. Example (TH README): C = 5, labels
    [0,0,0,1,1,3,4,4,4,4,4,4] → i = [0,1,2,0,1,0,0,1,2,3,4,5] → column 0 = [0,…,0,1],
    column 1 = [0,1,2,0,1,0,0,1,2,3,4,0]. Vectorised (stable sort), no per-sample loop.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be [N], got shape {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("labels is empty: the DIB labels need at least one sample")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be ≥ 2")
    labels = labels.long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{low}, {high}]")

    counts = torch.bincount(labels, minlength=num_classes)
    class_starts = torch.cumsum(counts, dim=0) - counts  # first position of each class, sorted
    order = torch.argsort(labels, stable=True)  # stable: dataset order within a class
    positions = torch.arange(labels.numel(), device=labels.device)
    within_class_index = torch.empty_like(labels)
    within_class_index[order] = positions - class_starts[labels[order]]

    digits = num_digits(int(counts.max()) - 1, num_classes)
    place_values = num_classes ** torch.arange(digits - 1, -1, -1, device=labels.device)
    return (within_class_index.unsqueeze(1) // place_values) % num_classes


def digit_entropies(dib_label_matrix: Tensor, num_classes: int) -> list[float]:
    """Empirical entropy in bits of each DIB digit column: H_k = −Σ_v p_kv log₂ p_kv.

    p_kv = fraction of samples whose k-th digit is v. Equals log₂ C only when the digit is
    uniform (e.g. balanced classes of size C^N_D); TH assumes log₂ C for every digit, which
    is wrong for unbalanced splits such as the MNIST test set (TH §2.6, §5 note 7).
    """
    if dib_label_matrix.dim() != 2:
        raise ValueError(
            f"dib_label_matrix must be [N, N_D], got shape {tuple(dib_label_matrix.shape)}"
        )
    num_samples = dib_label_matrix.shape[0]
    if num_samples == 0:
        return [math.nan] * dib_label_matrix.shape[1]
    entropies = []
    for column in dib_label_matrix.long().T:
        counts = torch.bincount(column, minlength=num_classes).double()
        probabilities = counts[counts > 0] / num_samples
        # + 0.0 turns the −0.0 of a constant digit into 0.0
        entropies.append(float(-(probabilities * probabilities.log2()).sum()) + 0.0)
    return entropies
