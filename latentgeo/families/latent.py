"""Families on the feature pass (logits and x_pen of every split): BE's suite, OOD and NC1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentgeo.config import TrainConfig, check
from latentgeo.data import DATASETS
from latentgeo.families.core import Point, register
from latentgeo.metrics.binarity import binarity_metrics, same_encoding_fraction
from latentgeo.metrics.collapse import collapse_metrics, nc1
from latentgeo.metrics.features import PENULTIMATE, collect_features, streaming_nc1
from latentgeo.metrics.mahalanobis import misclassification_auroc, ood_auroc
from latentgeo.metrics.perturbation import deepfool_score
from latentgeo.models import HEADS

# BE computes binarity for linear codes only (read by the report too)
BINARY_CODE_HEADS = tuple(name for name, head in HEADS.items() if head.binary_code)


def scalars(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}


@register("accuracy")
def accuracy(point: Point) -> dict[str, Any]:
    """``<split>/loss`` and ``<split>/accuracy`` of every split, at every evaluation."""
    out: dict[str, Any] = {}
    for split, f in point.features.items():
        out[f"{split}/loss"] = f.loss
        out[f"{split}/accuracy"] = f.accuracy
    return out


@register("collapse")
def collapse(point: Point) -> dict[str, Any]:
    """BE's collapse metrics grouped by predictions (``collapse``) and by labels
    (``collapse_true``)."""
    out: dict[str, Any] = {}
    for split, f in point.features.items():
        out.update(scalars(f"{split}/collapse", collapse_metrics(f.x_pen, f.preds)))
        out.update(scalars(f"{split}/collapse_true", collapse_metrics(f.x_pen, f.labels)))
    return out


@register("binarity")
def binarity(point: Point) -> dict[str, Any]:
    """BE's GMM binarity score per node (bin_enc and lin_pen heads)."""
    if not HEADS[point.cfg.head.name].binary_code:
        return {}
    out: dict[str, Any] = {}
    for split, f in point.features.items():
        out.update(scalars(f"{split}/binarity", binarity_metrics(f.x_pen, point.cfg.metrics.seed)))
    return out


@register("same_encoding")
def same_encoding(point: Point) -> dict[str, Any]:
    return {f"{split}/same_encoding_fraction": same_encoding_fraction(f.x_pen, f.preds)
            for split, f in point.features.items()}


@register("mahalanobis")
def mahalanobis(point: Point) -> dict[str, Any]:
    """Misclassification AUROC of class-conditional Gaussians fitted on train x_pen (BE)."""
    features = point.features
    train, test = features.get("train"), features.get("test")
    if train is None or test is None:
        return {}
    result = misclassification_auroc(train.x_pen, train.labels, train.preds,
                                     test.x_pen, test.labels, test.preds)
    return scalars("test/mahalanobis", result)


@dataclass
class PerturbationOptions:
    """DeepFool needs gradients: BE computes it at the last epoch only."""

    samples: int  # fixed random sample of the test split (seeded by trainer.seed)
    overshoot: float
    max_iter: int
    num_candidates: int

    def check(self, cfg: TrainConfig) -> None:
        check(self.samples >= 1, "metrics.perturbation.samples", self.samples, ">= 1")


@register("perturbation", PerturbationOptions)
def perturbation(point: Point) -> dict[str, Any]:
    """DeepFool's mean relative perturbation on the fixed probe sample of the test split."""
    images = point.loaders.probe_images
    if images is None:
        return {}
    p = point.cfg.metrics.perturbation
    total = 0.0
    for chunk in images.split(point.cfg.trainer.eval_batch_size):  # bounded memory
        total += len(chunk) * deepfool_score(point.model, chunk, overshoot=p.overshoot,
                                             max_iter=p.max_iter,
                                             num_candidates=p.num_candidates)
    return {"test/perturbation/score": total / len(images)}


@dataclass
class OODOptions:
    dataset: str | None  # a dataset option, e.g. svhn for cifar10; null = off

    def check(self, cfg: TrainConfig) -> None:
        check(self.dataset is None or self.dataset in DATASETS, "metrics.ood.dataset",
              self.dataset, f"null or one of {sorted(DATASETS)}")


@register("ood", OODOptions)
def ood(point: Point) -> dict[str, Any]:
    """Lee et al.'s Mahalanobis OOD detection against ``metrics.ood.dataset``."""
    if point.loaders.ood is None:
        return {}
    features = point.features
    train, test = features.get("train"), features.get("test")
    if train is None or test is None:
        return {}
    outside = collect_features(point.model, point.loaders.ood.epoch())
    return scalars("test/ood", ood_auroc(train.x_pen, train.labels, test.x_pen, outside.x_pen))


@register("nc1")
def nc1_per_block(point: Point) -> dict[str, Any]:
    """TH's NC1 at every block output (streamed) and at x_pen."""
    features = point.features
    num_classes = int(max(f.logits.shape[1] for f in features.values()))
    out: dict[str, Any] = {}
    for split in point.loaders.eval:
        values = streaming_nc1(point.model, point.batches(split), num_classes)
        values[PENULTIMATE] = nc1(features[split].x_pen, features[split].labels, num_classes)
        out.update({f"{split}/nc1/{block}": v for block, v in values.items()})
    return out
