"""The one place where the engine calls metric functions and names their results.

Input: the feature pass of each split; output: one flat dict of DESIGN.md metric names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentgeo.metrics.features import Features

MAX_HISTOGRAM_NODES = 64  # wandb histograms of x_pen per node; no_pen's 512 would swamp it


def evaluation_metrics(metrics_cfg, model, features: dict[str, Features], epoch: int,
                       last: bool) -> dict[str, Any]:
    """Every metric of one evaluation, named ``<split>/<family>/<key>``."""
    out: dict[str, Any] = {}
    for split, f in features.items():
        out[f"{split}/loss"] = f.loss
        out[f"{split}/accuracy"] = f.accuracy
    return out


def histogram_arrays(features: dict[str, Features]) -> dict[str, np.ndarray]:
    return {
        f"{split}/x_pen/node_{i}": f.x_pen[:, i].numpy()
        for split, f in features.items()
        for i in range(min(f.x_pen.shape[1], MAX_HISTOGRAM_NODES))
    }
