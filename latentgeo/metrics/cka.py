"""Linear centred kernel alignment (CKA) between representations of the same inputs.

Full batch — Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network
Representations Revisited" (ICML), Eq. 4 with the linear kernel and Eq. 5:

    K = X Xᵀ, L = Y Yᵀ  (X: [n, p], Y: [n, q], row i = input i), H = I − 11ᵀ/n,
    HSIC(K, L) = tr(K H L H) / (n − 1)²,
    CKA(X, Y)  = HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L))
               = ‖Ȳᵀ X̄‖²_F / (‖X̄ᵀ X̄‖_F · ‖Ȳᵀ Ȳ‖_F),  X̄, Ȳ column-centred.

It is computed from the centred n×n Gram matrices K̄ = X̄ X̄ᵀ (⟨K̄, L̄⟩_F / (‖K̄‖_F ‖L̄‖_F)):
block outputs have p ≫ n, so n²·p beats p²·n. The google-research CKA notebook (Kornblith's
``cka`` / ``feature_space_linear_cka``, debiased=False) computes the same number.

Minibatch — Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same Things?"
(ICLR), Eq. 2–3, with the unbiased HSIC estimator of Song et al. 2012:

    K̃ = X Xᵀ with its diagonal set to 0 (no centring: the estimator is unbiased without it),
    HSIC₁(K̃, L̃) = [tr(K̃ L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)),
    CKA_mb = mean_b HSIC₁(K̃_b, L̃_b) / √(mean_b HSIC₁(K̃_b, K̃_b) · mean_b HSIC₁(L̃_b, L̃_b)),

over minibatches b of the same inputs; memory is one batch's Gram per representation, not n².
It converges to the population CKA as batches grow and is not the full-batch value on the same
n inputs. torch-cka 0.21 (``torch_cka.CKA``, the public implementation) computes exactly this,
with two details matched here: every batch weighs the same, a short last batch included (the
paper assumes equal batches), and the estimator needs n ≥ 4 rows per batch (torch-cka divides
by zero below; here ``ValueError``). torch-cka computes in torch's default dtype (float32);
here always float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

MIN_UNBIASED_ROWS = 4  # HSIC₁ divides by n(n−3) and (n−1)(n−2)

Pair = tuple[str, str]


def centered_gram(x: Tensor) -> Tensor:
    """K̄ = X̄ X̄ᵀ of ``x`` [n, ...] flattened to [n, p], columns centred; float64 [n, n]."""
    flat = x.flatten(1).to(torch.float64)
    flat = flat - flat.mean(dim=0, keepdim=True)
    return flat @ flat.T


def gram_cka(k: Tensor, l: Tensor) -> float:  # noqa: E741  (the papers' L)
    """⟨K̄, L̄⟩_F / (‖K̄‖_F ‖L̄‖_F) of two centred Gram matrices (full-batch linear CKA)."""
    return ((k * l).sum() / (torch.linalg.norm(k) * torch.linalg.norm(l))).item()


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Full-batch linear CKA of ``x`` [n, ...] and ``y`` [n, ...] (Kornblith et al. 2019)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows and y has {y.shape[0]}: CKA compares the "
                         "representations of the same inputs")
    return gram_cka(centered_gram(x), centered_gram(y))


def unbiased_gram(x: Tensor) -> Tensor:
    """K̃ = X Xᵀ of ``x`` [n, ...] flattened, diagonal zeroed; float64 [n, n], n ≥ 4."""
    if x.shape[0] < MIN_UNBIASED_ROWS:
        raise ValueError(f"the unbiased HSIC estimator needs batches of at least "
                         f"{MIN_UNBIASED_ROWS} rows, got {x.shape[0]}")
    flat = x.flatten(1).to(torch.float64)
    gram = flat @ flat.T
    gram.fill_diagonal_(0.0)
    return gram


def unbiased_hsic(k: Tensor, l: Tensor) -> float:  # noqa: E741  (the papers' L)
    """HSIC₁ of two ``unbiased_gram`` matrices (Song et al. 2012; Nguyen et al. 2021, Eq. 3)."""
    n = k.shape[0]
    trace = (k * l).sum()  # tr(K̃L̃) for symmetric K̃, L̃
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = k.sum(dim=0) @ l.sum(dim=1) * 2 / (n - 2)
    return ((trace + sums - cross) / (n * (n - 3))).item()


def full_cka_pairs(grams: Mapping[str, Tensor], pairs: Iterable[Pair]) -> dict[Pair, float]:
    """Full-batch CKA of each pair of named ``centered_gram`` matrices (norms computed once)."""
    norms = {name: torch.linalg.norm(gram) for name, gram in grams.items()}
    return {(a, b): ((grams[a] * grams[b]).sum() / (norms[a] * norms[b])).item()
            for a, b in pairs}


class MinibatchCKA:
    """Nguyen et al.'s minibatch CKA of ``pairs`` of named representations, accumulated batch
    by batch: ``update`` takes one batch's ``unbiased_gram`` of every name (the same inputs in
    every one) and keeps only the running HSIC₁ sums, so memory is one batch's Grams."""

    def __init__(self, pairs: Iterable[Pair]) -> None:
        self.pairs = list(pairs)
        self.names = sorted({name for pair in self.pairs for name in pair})
        self.cross = dict.fromkeys(self.pairs, 0.0)
        self.own = dict.fromkeys(self.names, 0.0)  # HSIC₁(K̃, K̃) of each name

    def update(self, grams: Mapping[str, Tensor]) -> None:
        for name in self.names:
            self.own[name] += unbiased_hsic(grams[name], grams[name])
        for a, b in self.pairs:
            self.cross[(a, b)] += unbiased_hsic(grams[a], grams[b])

    def value(self) -> dict[Pair, float]:
        out: dict[Pair, float] = {}
        for a, b in self.pairs:
            scale = self.own[a] * self.own[b]  # the 1/batches of the three means cancel
            out[(a, b)] = self.cross[(a, b)] / math.sqrt(scale) if scale > 0 else math.nan
        return out


def minibatch_cka_pairs(grams: Mapping[str, Sequence[Tensor]], pairs: Iterable[Pair]
                        ) -> dict[Pair, float]:
    """``MinibatchCKA`` over per-batch Gram lists held at once (batch b of every name holds
    the same inputs)."""
    accumulator = MinibatchCKA(pairs)
    batches = {len(grams[name]) for name in accumulator.names}
    if len(batches) != 1:
        raise ValueError(f"the representations have {sorted(batches)} batches: minibatch CKA "
                         "pairs the same batches")
    for b in range(batches.pop()):
        accumulator.update({name: grams[name][b] for name in accumulator.names})
    return accumulator.value()
