"""DIB relabelling (TH §2.5, "modified Algorithm 1") and its digit entropies."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from latentgeo.metrics.dib import dib_labels, digit_entropies, num_digits

# MNIST test split class counts (N = 10000, max 1135)
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _entropy_bits(counts) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c)


def test_readme_example_exactly():
    labels = torch.tensor([0, 0, 0, 1, 1, 3, 4, 4, 4, 4, 4, 4])
    matrix = dib_labels(labels, num_classes=5)
    # within-class indices [0,1,2,0,1,0,0,1,2,3,4,5]; max count 6 → max index 5 → 2 digits
    assert matrix.dtype == torch.int64
    assert matrix[:, 0].tolist() == [0] * 11 + [1]
    assert matrix[:, 1].tolist() == [0, 1, 2, 0, 1, 0, 0, 1, 2, 3, 4, 0]


@pytest.mark.parametrize(
    ("max_index", "base", "digits"),
    [
        (0, 10, 1),  # max count 1 → one digit (TH's ⌈log_C 1⌉ gives 0)
        (9, 10, 1),
        (10, 10, 2),
        (999, 10, 3),  # max count 1000
        (1000, 10, 4),  # max count 1001
        (1134, 10, 4),  # MNIST test
        (124, 5, 3),  # max count 125 = 5³: float log gives 3.0000000000000004 → 4
        (125, 5, 4),
        (1, 2, 1),
        (2, 2, 2),
        (10**18, 10, 19),
    ],
)
def test_num_digits_integer_arithmetic(max_index, base, digits):
    assert num_digits(max_index, base) == digits


def test_num_digits_rejects_bad_arguments():
    with pytest.raises(ValueError, match="base=1"):
        num_digits(5, 1)
    with pytest.raises(ValueError, match="max_index=-1"):
        num_digits(-1, 10)


def test_balanced_ten_classes_give_three_exactly_uniform_digits():
    labels = torch.arange(10).repeat(1000)  # interleaved: dataset order ≠ class order
    labels = labels[torch.randperm(10000, generator=torch.Generator().manual_seed(0))]
    matrix = dib_labels(labels, 10)
    assert matrix.shape == (10000, 3)
    for k in range(3):
        assert torch.bincount(matrix[:, k], minlength=10).tolist() == [1000] * 10
    assert digit_entropies(matrix, 10) == pytest.approx([math.log2(10)] * 3, abs=1e-12)
    # each (class, digits) pair is unique: the relabelling identifies the sample in its class
    pairs = zip(labels.tolist(), matrix.tolist(), strict=True)
    assert len({(y, *row) for y, row in pairs}) == 10000


def test_round_trip_digits_to_within_class_index():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 7, (3000,), generator=generator)
    matrix = dib_labels(labels, 7)
    digits = matrix.shape[1]
    index = (matrix * 7 ** torch.arange(digits - 1, -1, -1)).sum(dim=1)
    seen: Counter[int] = Counter()
    expected = []
    for y in labels.tolist():  # naive reference: running count per class in dataset order
        expected.append(seen[y])
        seen[y] += 1
    assert index.tolist() == expected
    assert digits == num_digits(max(seen.values()) - 1, 7)


def test_unbalanced_mnist_like_counts_four_digits_and_entropies_by_hand():
    labels = torch.repeat_interleave(torch.arange(10), torch.tensor(MNIST_TEST_COUNTS))
    labels = labels[torch.randperm(10000, generator=torch.Generator().manual_seed(2))]
    matrix = dib_labels(labels, 10)
    assert matrix.shape == (10000, 4)
    # digit 0 (thousands) is 1 for indices ≥ 1000: 135 + 32 + 10 + 28 + 9 = 214 samples
    assert int(matrix[:, 0].sum()) == 214
    assert set(matrix[:, 0].tolist()) == {0, 1}
    # digit k of index i is the k-th character of f"{i:04d}": count them per class by hand
    by_hand = [Counter() for _ in range(4)]
    for count in MNIST_TEST_COUNTS:
        for i in range(count):
            for k, character in enumerate(f"{i:04d}"):
                by_hand[k][int(character)] += 1
    for k in range(4):
        assert torch.bincount(matrix[:, k], minlength=10).tolist() == [
            by_hand[k][v] for v in range(10)
        ]
    entropies = digit_entropies(matrix, 10)
    expected = [_entropy_bits(by_hand[k].values()) for k in range(4)]
    assert entropies == pytest.approx(expected, abs=1e-12)
    # leading digit: H(0.0214) = 0.1491 bits, far from the log₂ 10 = 3.32 TH assumes
    assert entropies[0] == pytest.approx(_entropy_bits([9786, 214]), abs=1e-12)
    assert entropies[0] == pytest.approx(0.1490, abs=1e-3)
    assert entropies[3] == pytest.approx(math.log2(10), abs=1e-3)


def test_single_sample_classes_and_constant_digit_entropy():
    matrix = dib_labels(torch.tensor([2, 0, 1]), 3)
    assert matrix.tolist() == [[0], [0], [0]]
    assert digit_entropies(matrix, 3) == [0.0]


def test_rejects_labels_outside_range():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        dib_labels(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="integer"):
        dib_labels(torch.tensor([0.0, 1.0]), 3)
