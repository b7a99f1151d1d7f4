"""Is an accuracy within noise of chance? A run that never learned ends ``ok`` (it did what was
asked) but says so: ``never_learned`` in its summary.

Chance is what always predicting the most frequent test class scores (1/K on balanced data).
The bound is one-sided binomial at ``CHANCE_Z`` standard errors: a classifier at chance scores
above ``p + z·sqrt(p(1−p)/n)`` on n test images with probability ≈ 0.13 % (normal
approximation, good for n·p ≥ 10), so a run at or below it is not distinguishable from chance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CHANCE_Z = 3.0  # standard errors above chance: a chance-level run passes it 0.13 % of the time


def chance_accuracy(labels: Tensor) -> float:
    """The accuracy of always predicting the most frequent class of ``labels`` [N]."""
    return float(torch.bincount(labels.long()).max()) / len(labels)


def chance_bound(chance: float, samples: int, z: float = CHANCE_Z) -> float:
    """The highest accuracy on ``samples`` test images still within noise of ``chance``."""
    return chance + z * math.sqrt(chance * (1 - chance) / samples)


def learning_summary(accuracy: float | None, labels: Tensor) -> dict[str, float | bool]:
    """``never_learned`` (the final accuracy ≤ the bound), ``chance/test/accuracy`` and
    ``chance/test/bound`` for a run's summary; ``{}`` without a final accuracy."""
    if accuracy is None or not len(labels):
        return {}
    chance = chance_accuracy(labels)
    bound = chance_bound(chance, len(labels))
    return {"never_learned": accuracy <= bound, "chance/test/accuracy": chance,
            "chance/test/bound": bound}
