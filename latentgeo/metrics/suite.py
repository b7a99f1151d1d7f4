"""The one place where the engine calls metric functions and names their results.

One feature pass per split feeds every latent metric; the results are one flat dict of
DESIGN.md names (``<split>/<family>/<key>``). Which families run is ``cfg.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from latentgeo.metrics.binarity import binarity_metrics, same_encoding_fraction
from latentgeo.metrics.collapse import NC1Accumulator, collapse_metrics, nc1
from latentgeo.metrics.features import Features, collect_features
from latentgeo.metrics.hyperplanes import distance_from_init, projection_stats
from latentgeo.metrics.mahalanobis import misclassification_auroc, ood_auroc
from latentgeo.metrics.perturbation import deepfool_score

MAX_HISTOGRAM_NODES = 64  # wandb histograms of x_pen per node; no_pen's 512 would swamp it
BINARY_CODE_HEADS = ("bin_enc", "lin_pen")  # BE computes binarity for linear codes only

Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]  # a fresh pass over a split


@dataclass
class EvalInputs:
    """What an evaluation reads besides the model: a fresh-pass factory per split, the fixed
    DeepFool probe images (normalised, on the device) and the OOD split's batches."""

    splits: dict[str, Batches]
    probe_images: Tensor | None = None
    ood: Batches | None = None


def due(when: str, last: bool) -> bool:
    return when == "every" or (when == "last" and last)


def _scalars(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}


def evaluate(cfg, model: nn.Module, inputs: EvalInputs, last: bool
             ) -> tuple[dict[str, Any], dict[str, Features]]:
    """Every metric of one evaluation; returns (named values, the feature pass per split)."""
    metrics = cfg.metrics
    features = {split: collect_features(model, batches()) for split, batches in
                inputs.splits.items()}
    out: dict[str, Any] = {}
    for split, f in features.items():
        out[f"{split}/loss"] = f.loss
        out[f"{split}/accuracy"] = f.accuracy
        if metrics.collapse:
            # BE groups by predictions; the true-label variant is logged beside it
            out.update(_scalars(f"{split}/collapse", collapse_metrics(f.x_pen, f.preds)))
            out.update(_scalars(f"{split}/collapse_true", collapse_metrics(f.x_pen, f.labels)))
        if metrics.binarity and cfg.head.name in BINARY_CODE_HEADS:
            out.update(_scalars(f"{split}/binarity", binarity_metrics(f.x_pen, metrics.seed)))
        if metrics.same_encoding:
            out[f"{split}/same_encoding_fraction"] = same_encoding_fraction(f.x_pen, f.preds)
    train, test = features.get("train"), features.get("test")
    if train is not None and test is not None and due(metrics.mahalanobis.when, last):
        result = misclassification_auroc(train.x_pen, train.labels, train.preds,
                                         test.x_pen, test.labels, test.preds)
        out.update(_scalars("test/mahalanobis", result))
    if inputs.probe_images is not None and due(metrics.perturbation.when, last):
        p = metrics.perturbation
        total = 0.0
        for images in inputs.probe_images.split(cfg.trainer.eval_batch_size):  # bounded memory
            total += len(images) * deepfool_score(model, images, overshoot=p.overshoot,
                                                  max_iter=p.max_iter,
                                                  num_candidates=p.num_candidates)
        out["test/perturbation/score"] = total / len(inputs.probe_images)
    if inputs.ood is not None and train is not None and test is not None and due(
            metrics.ood.when, last):
        ood = collect_features(model, inputs.ood())
        out.update(_scalars("test/ood", ood_auroc(train.x_pen, train.labels, test.x_pen,
                                                  ood.x_pen)))
    if due(metrics.nc1.when, last):
        num_classes = int(max(f.logits.shape[1] for f in features.values()))
        for split, batches in inputs.splits.items():
            values = streaming_nc1(model, batches, num_classes)
            values["penultimate"] = nc1(features[split].x_pen, features[split].labels,
                                        num_classes)
            out.update({f"{split}/nc1/{block}": v for block, v in values.items()})
    return out, features


def _hooked_passes(model: nn.Module, batches: Batches,
                   on_block: Callable[[str, Tensor, Tensor], None]) -> None:
    """One eval-mode pass calling ``on_block(name, output, labels)`` for every block."""
    current: dict[str, Tensor] = {}
    handles = [
        block.register_forward_hook(
            lambda _m, _i, out, name=name: on_block(name, out.float(), current["y"]))
        for name, block in model.backbone.blocks.items()  # type: ignore[union-attr]
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in batches():
                current["y"] = y
                model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def streaming_nc1(model: nn.Module, batches: Batches, num_classes: int) -> dict[str, float]:
    """TH's NC1 at every block output, streamed in two passes with O(C·D) memory.

    Unlike TH, both passes run in eval mode on fixed weights (TH's train value mixes weights
    that change during the epoch).
    """
    accumulators = {name: NC1Accumulator(num_classes) for name in model.backbone.blocks}
    _hooked_passes(model, batches, lambda name, h, y: accumulators[name].update_means(h, y))
    for accumulator in accumulators.values():
        accumulator.start_second_pass()
    _hooked_passes(model, batches, lambda name, h, y: accumulators[name].update_scatter(h, y))
    return {name: accumulator.value() for name, accumulator in accumulators.items()}


def weight_metrics(cfg, model: nn.Module, init_state: dict[str, Tensor] | None
                   ) -> tuple[dict[str, float], dict[str, Any]]:
    """Data-free metrics of the weights (every epoch): hyperplane orientation (HP) and the
    distance from initialisation. Returns (named scalars, the per-filter projections)."""
    h = cfg.metrics.hyperplanes
    if not h.enabled:
        return {}, {}
    stats = projection_stats(model, normalize=h.normalize, with_linear=h.with_linear,
                             skip_pointwise=h.skip_pointwise)
    out: dict[str, float] = {}
    for layer in stats["layers"]:
        out[f"hyperplanes/{layer['name']}/mean"] = layer["mean"]
        out[f"hyperplanes/{layer['name']}/mass"] = layer["mass"]
    out["hyperplanes/net/mean"] = stats["net"]["mean"]
    out["hyperplanes/net/mass"] = stats["net"]["mass"]
    if init_state is not None:
        distances = distance_from_init(model, init_state, with_linear=h.with_linear,
                                       skip_pointwise=h.skip_pointwise)
        for name, d in distances.items():
            out[f"init_distance/{name}/l2"] = d["l2_dist"]
            out[f"init_distance/{name}/linf"] = d["l_inf_dist"]
    return out, stats


def histogram_arrays(features: dict[str, Features]) -> dict[str, np.ndarray]:
    return {
        f"{split}/x_pen/node_{i}": f.x_pen[:, i].numpy()
        for split, f in features.items()
        for i in range(min(f.x_pen.shape[1], MAX_HISTOGRAM_NODES))
    }
