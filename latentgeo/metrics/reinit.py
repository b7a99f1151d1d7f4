"""Layer re-initialisation robustness (HP §3.4): how much test accuracy a layer's reset costs."""

from __future__ import annotations

import math


def relative_drop(baseline: float | None, accuracy: float | None) -> float:
    """(baseline − accuracy) / baseline (HP §3.4); NaN when either is missing or baseline is 0."""
    if baseline is None or accuracy is None or not baseline > 0:
        return math.nan
    return (baseline - accuracy) / baseline
