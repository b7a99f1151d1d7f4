"""The metric-family registry: what a family is, what it sees, and when it is due.

A family is one registry entry: a name, a default schedule (``config.parse_schedule``'s
vocabulary: ``off | init | every | every:N | last``) and a function from a ``Point`` (the model
at one epoch or checkpoint, its data and loaders, the values measured so far) to named scalars.
Histograms go to ``point.histograms``, files into ``point.run``. The schedule is read from
``metrics.<name>.when`` when the config has that node, else the family's default. The loop asks
``due`` what to run and never names a family; ``measure`` runs them in registration order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from latentgeo.config import Schedule, TrainConfig, parse_schedule
from latentgeo.data import DataBundle, Loaders
from latentgeo.metrics.features import Batches, Features, collect_features
from latentgeo.models import Classifier
from latentgeo.records import RunDir

MAX_HISTOGRAM_NODES = 64  # wandb histograms of x_pen per node; no_pen's 512 would swamp it


@dataclass
class Point:
    """What a family sees at one measuring point: epoch 0 (the initial weights), an epoch of
    training, or a stored checkpoint (``latentgeo.evaluate``)."""

    cfg: TrainConfig
    model: Classifier  # the eager float32 model (never the compiled one)
    epoch: int
    last: bool  # the run's last epoch (families scheduled ``last`` are due)
    data: DataBundle
    loaders: Loaders
    _: KW_ONLY
    init_state: dict[str, Tensor] | None = None  # the weights of init.pt
    run: RunDir | None = None  # where families write files; None: write nothing
    checkpoints: RunDir | None = None  # whose checkpoints families read (default: run)
    event: dict[str, Any] = field(default_factory=dict)  # values measured so far here
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    _features: dict[str, Features] | None = None

    @property
    def features(self) -> dict[str, Features]:
        """One eval-mode pass per split (logits, x_pen, labels), shared by every family."""
        if self._features is None:
            self._features = {split: collect_features(self.model, loader.epoch())
                              for split, loader in self.loaders.eval.items()}
        return self._features

    @property
    def has_features(self) -> bool:
        return self._features is not None

    def batches(self, split: str) -> Batches:
        return self.loaders.eval[split].epoch

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def source(self) -> RunDir | None:
        """The run whose checkpoints (init.pt, snapshots) this point may read."""
        return self.checkpoints or self.run


Compute = Callable[[Point], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    name: str
    compute: Compute
    default_when: str = "every"


FAMILIES: dict[str, Family] = {}


def register(name: str, default_when: str = "every") -> Callable[[Compute], Compute]:
    """Decorator: ``@register("collapse")`` adds the function as the family ``collapse``."""
    parse_schedule(default_when, f"the default schedule of family {name!r}")

    def decorator(compute: Compute) -> Compute:
        if name in FAMILIES:
            raise ValueError(f"metric family {name!r} is registered twice")
        FAMILIES[name] = Family(name, compute, default_when)
        return compute

    return decorator


def unregister(name: str) -> None:
    FAMILIES.pop(name, None)


def schedule(cfg: TrainConfig, family: Family) -> Schedule:
    node = getattr(cfg.metrics, family.name, None)
    when = getattr(node, "when", family.default_when)
    return parse_schedule(when, f"metrics.{family.name}.when")


def due(cfg: TrainConfig, epoch: int, last: bool) -> list[Family]:
    """The families to run after ``epoch`` (0: on the initial weights), in registry order."""
    return [family for family in FAMILIES.values()
            if schedule(cfg, family).due(epoch, last, cfg.metrics.every)]


def measure(point: Point, families: Sequence[Family]) -> dict[str, Any]:
    """Run ``families`` at ``point``; returns their values (``point.event`` gets them too) and
    ``time/eval_s``. When the feature pass ran, x_pen histograms per node go to
    ``point.histograms``."""
    if not families:
        return {}
    tic = time.perf_counter()
    values: dict[str, Any] = {}
    for family in families:
        result = family.compute(point)
        point.event.update(result)
        values.update(result)
    if point.has_features:
        point.histograms.update(histogram_arrays(point.features))
    if values:  # families that had nothing to measure (alpha of a model without α) cost none
        values["time/eval_s"] = point.event["time/eval_s"] = time.perf_counter() - tic
    return values


def histogram_arrays(features: dict[str, Features]) -> dict[str, np.ndarray]:
    return {
        f"{split}/x_pen/node_{i}": f.x_pen[:, i].numpy()
        for split, f in features.items()
        for i in range(min(f.x_pen.shape[1], MAX_HISTOGRAM_NODES))
    }
