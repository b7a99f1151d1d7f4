"""The metric-family registry: what a family is, what it sees, and when it is due.

A family is one registry entry: a name, a function from a ``Point`` (the model at one epoch or
checkpoint, its data and loaders, the values measured so far) to named scalars, and the
dataclass of its options. Histograms go to ``point.histograms``, files into ``point.run``. Its
schedule is ``metrics.<name>.when`` (``config.parse_schedule``'s vocabulary: ``off | init |
every | every:N | last``), whose default is the family's one line in
``conf/metrics/default.yaml``; no node means off. The loop asks ``due`` what to run and never
names a family; ``measure`` runs them in registration order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError
from torch import Tensor

from latentgeo.config import (
    ConfigError,
    Schedule,
    TrainConfig,
    check,
    family_nodes,
    parse_schedule,
)
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
    # the dataclass of ``metrics.<name>``'s keys besides ``when`` (types, meaning, and an
    # optional ``check(cfg)``); None: the node holds ``when`` only
    options: type | None = None


FAMILIES: dict[str, Family] = {}


def register(name: str, options: type | None = None) -> Callable[[Compute], Compute]:
    """Decorator: ``@register("collapse")`` adds the function as the family ``collapse``. Its
    default schedule (and options) is its line in ``conf/metrics/default.yaml``."""

    def decorator(compute: Compute) -> Compute:
        if name in FAMILIES:
            raise ValueError(f"metric family {name!r} is registered twice")
        FAMILIES[name] = Family(name, compute, options)
        return compute

    return decorator


def unregister(name: str) -> None:
    FAMILIES.pop(name, None)


def schedule(cfg: TrainConfig, family: Family) -> Schedule:
    """``metrics.<name>.when``; a family the config has no node for is off."""
    node = cfg.metrics.get(family.name)
    return parse_schedule(node.when if node is not None else "off", f"metrics.{family.name}.when")


def due(cfg: TrainConfig, epoch: int, last: bool) -> list[Family]:
    """The families to run after ``epoch`` (0: on the initial weights), in registry order."""
    return [family for family in FAMILIES.values()
            if schedule(cfg, family).due(epoch, last, cfg.metrics.every)]


def options(cfg: TrainConfig, name: str) -> Any:
    """``metrics.<name>`` as the family's options dataclass (None for a family without);
    ConfigError naming the key for a key the family lacks or a value of the wrong type."""
    family, node = FAMILIES[name], cfg.metrics[name]
    values = {k: v for k, v in OmegaConf.to_container(node).items() if k != "when"}
    if family.options is None:
        check(not values, f"metrics.{name}", sorted(values), f"no keys but when ({name} has no "
              "options)")
        return None
    fields = {f.name: f.type for f in dataclasses.fields(family.options)}
    if set(values) != set(fields):
        raise ConfigError(f"metrics.{name} has keys {sorted(values)}: it takes when, "
                          f"{', '.join(fields)} (conf/metrics/default.yaml has its line)")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(family.options), values))
    except (ValidationError, ValueError) as error:
        key = str(getattr(error, "full_key", "") or "")
        raise ConfigError(f"metrics.{name}.{key}={values.get(key)!r} is not allowed: "
                          f"a value of type {fields.get(key, 'its field')}") from None


def check_metrics(cfg: TrainConfig) -> None:
    """Every node of ``metrics`` (besides its own settings) is a registered family, with its
    options' keys and types, and passes the options' ``check(cfg)`` when they have one."""
    for name in family_nodes(cfg.metrics):
        if name not in FAMILIES:
            raise ConfigError(f"metrics.{name} is not a metric family: the nodes of metrics are "
                              f"one of {sorted(FAMILIES)} (or every, seed, train_subset)")
        typed = options(cfg, name)
        if hasattr(typed, "check"):
            typed.check(cfg)


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
