"""Data-free families of the weights: hyperplane orientation (HP), distance from
initialisation, ReLU_α statistics (UN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from latentgeo.families.core import Point, register
from latentgeo.metrics.hyperplanes import distance_from_init, projection_stats
from latentgeo.models.relu_alpha import alpha_stats, relu_alpha_modules


@dataclass
class HyperplanesOptions:
    """Projection statistics of the filters (HP) and the distance from initialisation."""

    normalize: bool
    with_linear: bool
    skip_pointwise: bool


@register("hyperplanes", HyperplanesOptions)
def hyperplanes(point: Point) -> dict[str, Any]:
    """Mean projection and mass of each layer's filter normals onto the all-ones direction,
    and each layer's distance from init.pt; at the last epoch also ``hyperplanes.json`` and
    the per-filter projection histograms."""
    h = point.cfg.metrics.hyperplanes
    stats = projection_stats(point.model, normalize=h.normalize, with_linear=h.with_linear,
                             skip_pointwise=h.skip_pointwise)
    out: dict[str, Any] = {}
    for layer in stats["layers"]:
        out[f"hyperplanes/{layer['name']}/mean"] = layer["mean"]
        out[f"hyperplanes/{layer['name']}/mass"] = layer["mass"]
    out["hyperplanes/net/mean"] = stats["net"]["mean"]
    out["hyperplanes/net/mass"] = stats["net"]["mass"]
    if point.init_state is not None:
        distances = distance_from_init(point.model, point.init_state, with_linear=h.with_linear,
                                       skip_pointwise=h.skip_pointwise)
        for name, d in distances.items():
            out[f"init_distance/{name}/l2"] = d["l2_dist"]
            out[f"init_distance/{name}/linf"] = d["l_inf_dist"]
    if point.last and stats["layers"]:
        if point.run is not None:
            point.run.write_artifact("hyperplanes", stats)
        point.histograms.update({f"hyperplanes/{layer['name']}/projections":
                                 np.asarray(layer["projections"]) for layer in stats["layers"]})
    return out


@register("alpha")
def alpha(point: Point) -> dict[str, Any]:
    """α of every ReLU_α site (mean; min/max/std per channel); at the last epoch the whole
    trajectory as ``alpha.json`` and ``alpha.png``."""
    if not relu_alpha_modules(point.model):
        return {}
    out: dict[str, Any] = {}
    for site, stats in alpha_stats(point.model).items():
        out[f"alpha/{site}"] = stats["mean"]
        out.update({f"alpha/{site}/{k}": v for k, v in stats.items() if k != "mean"})
    if point.last and point.run is not None:
        from latentgeo.figures.analyses import plot_alpha_trajectories  # matplotlib: when drawn

        events = [e for e in point.run.events() if e.get("epoch", 0) < point.epoch]
        trajectories = alpha_trajectories([*events, {**point.event, **out}])
        point.run.write_artifact("alpha", trajectories)
        plot_alpha_trajectories(trajectories, point.run.artifact("alpha_plot"))
    return out


def alpha_trajectories(events: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """``alpha.json``: per ReLU_α site, α statistics vs epoch, from a run's events (the keys
    ``alpha/<site>[/<stat>]`` of the ``alpha`` family; ``alpha/frozen`` is ``loop``'s)."""
    trajectories: dict[str, dict[str, list]] = {}
    for event in events:
        for key, value in event.items():
            if not key.startswith("alpha/") or key == "alpha/frozen":
                continue
            site, _, stat = key[len("alpha/"):].partition("/")
            entry = trajectories.setdefault(site, {"epochs": []})
            if not stat:
                entry["epochs"].append(event["epoch"])
            entry.setdefault(stat or "mean", []).append(value)
    return trajectories
