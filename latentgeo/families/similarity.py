"""Families comparing representations and reading weight spectra: linear CKA between blocks and
to initialisation (Kornblith et al. 2019), WeightWatcher's per-layer spectra (Martin & Mahoney)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from latentgeo.config import TrainConfig, check
from latentgeo.data.tensor_loader import normalize
from latentgeo.families.core import Point, register
from latentgeo.metrics.cka import (
    MIN_UNBIASED_ROWS,
    MinibatchCKA,
    Pair,
    centered_gram,
    full_cka_pairs,
    unbiased_gram,
)
from latentgeo.metrics.features import PENULTIMATE, Batches, _hooked_passes
from latentgeo.metrics.weight_spectra import weight_spectra as layer_spectra
from latentgeo.models import Classifier

INIT = "init"  # <split>/cka/<layer>/init: the same layer of the model at initialisation


def cka_sample(point: Point, split: str) -> Batches:
    """Batches of a fixed random sample of ``split`` (``metrics.cka.samples`` images drawn with
    ``metrics.seed``, in dataset order), normalised, on the evaluation device. Minibatch CKA
    batches have ``metrics.cka.batch_size`` rows (a last one under 4 rows is dropped: the
    unbiased estimator is undefined there); full-batch CKA uses ``trainer.eval_batch_size``."""
    settings = point.cfg.metrics.cka
    images = getattr(point.data, split)
    count = len(images) if settings.samples is None else min(settings.samples, len(images))
    generator = torch.Generator().manual_seed(point.cfg.metrics.seed)
    index = torch.randperm(len(images), generator=generator)[:count].sort().values
    device = point.loaders.eval[split].device
    x = normalize(images.x[index].to(device), point.data.mean.to(device),
                  point.data.std.to(device))
    y = images.y[index].to(device)
    size = settings.batch_size or point.cfg.trainer.eval_batch_size

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        for xb, yb in zip(x.split(size), y.split(size), strict=True):
            if settings.batch_size is None or len(yb) >= MIN_UNBIASED_ROWS:
                yield xb, yb

    return batches


def layer_outputs(model: Classifier, batches: Batches, suffix: str = "") -> dict[str, Tensor]:
    """Every block output and x_pen of ``model`` over ``batches`` ([N, D] each, in depth
    order), named ``<layer><suffix>``, from one hooked pass."""
    parts: dict[str, list[Tensor]] = {}
    # clone: a later in-place op of the network must not change a kept block output
    _hooked_passes(model, batches,
                   lambda name, h, _y: parts.setdefault(f"{name}{suffix}", []).append(
                       h.flatten(1).clone()),
                   with_penultimate=True)
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


@dataclass
class CKAOptions:
    """Linear CKA between blocks and to initialisation (Kornblith et al. 2019), on a fixed
    random sample of each evaluated split (seeded by metrics.seed) so the cost is bounded."""

    samples: int | None  # images per split; null = the whole split
    # null: the full-batch CKA of the sample (holds the sample's block outputs, then one
    # samples² Gram per layer); N: Nguyen et al.'s unbiased minibatch estimator over batches of
    # N >= 4 (one N² Gram per batch and layer, no block outputs kept; cheaper for large samples)
    batch_size: int | None

    def check(self, cfg: TrainConfig) -> None:
        check(self.samples is None or self.samples >= 4, "metrics.cka.samples", self.samples,
              "null (the whole split) or >= 4")
        check(self.batch_size is None or self.batch_size >= MIN_UNBIASED_ROWS,
              "metrics.cka.batch_size", self.batch_size,
              "null (full-batch CKA) or >= 4 (the unbiased estimator needs 4 rows per batch)")


@register("cka", CKAOptions)
def cka(point: Point) -> dict[str, Any]:
    """Linear CKA of every pair of blocks (and x_pen as ``penultimate``), upper triangle in depth
    order, and of each of them to the same layer of the initial weights (init.pt), on a fixed
    sample of every evaluated split (``metrics.cka``). Full batch: the sample's outputs of one
    model at a time, then their Grams; minibatch: both models on one batch at a time, only the
    running HSIC sums kept."""
    layers = [*point.model.backbone.block_names, PENULTIMATE]
    # (representation, representation) -> the metric name after <split>/cka/
    names: dict[Pair, str] = {(a, b): f"{a}/{b}" for i, a in enumerate(layers)
                              for b in layers[i + 1:]}
    models = {"": point.model}  # name suffix -> model
    if point.init_state is not None:
        initial = copy.deepcopy(point.model)  # the trained model is never touched
        initial.load_state_dict(point.init_state)
        models[f"/{INIT}"] = initial
        names.update({(layer, f"{layer}/{INIT}"): f"{layer}/{INIT}" for layer in layers})
    out: dict[str, Any] = {}
    for split in point.loaders.eval:
        batches = cka_sample(point, split)
        if point.cfg.metrics.cka.batch_size is None:
            grams: dict[str, Tensor] = {}
            for suffix, model in models.items():
                grams.update({name: centered_gram(h)
                              for name, h in layer_outputs(model, batches, suffix).items()})
            values = full_cka_pairs(grams, names)
        else:
            accumulator = MinibatchCKA(names)
            for batch in batches():
                accumulator.update({name: unbiased_gram(h)
                                    for suffix, model in models.items()
                                    for name, h in layer_outputs(model, lambda b=batch: [b],
                                                                 suffix).items()})
            values = accumulator.value()
        out.update({f"{split}/cka/{names[pair]}": value for pair, value in values.items()})
    return out


@register("weight_spectra")
def weight_spectra(point: Point) -> dict[str, Any]:
    """WeightWatcher's α, α-weighted, norms and stable rank of every Linear/Conv2d layer."""
    return {f"weight_spectra/{layer}/{key}": value
            for layer, values in layer_spectra(point.model).items()
            for key, value in values.items()}
