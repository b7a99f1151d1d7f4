"""The geometry the field reports beyond the seeds: neural collapse NC1–NC4 and CDNV, effective
rank and RankMe, intrinsic dimension — on x_pen (``penultimate``) and per block on request.

Names: ``<split>/<family>/<layer>/<quantity>``, ``layer`` = ``penultimate`` or a block name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from latentgeo.config import ConfigError, TrainConfig, check
from latentgeo.families.core import Point, register
from latentgeo.metrics.effective_rank import effective_rank_metrics
from latentgeo.metrics.features import PENULTIMATE, collect_features, sample_rows, stream_blocks
from latentgeo.metrics.intrinsic_dimension import intrinsic_dimension_metrics
from latentgeo.metrics.neural_collapse import NeuralCollapseAccumulator, neural_collapse_metrics


@dataclass
class NeuralCollapseOptions:
    """NC1–NC4 and CDNV with true labels (rhubarbwu/neural-collapse's definitions) on x_pen."""

    blocks: Any  # null: x_pen only; all, or a list of block names: those too (streamed)

    def check(self, cfg: TrainConfig) -> None:
        check_blocks(self.blocks, "neural_collapse")


@dataclass
class SubsampleOptions:
    """A family on a fixed seeded subsample of each split (``metrics.seed``)."""

    blocks: Any  # null: x_pen only; all, or a list of block names: those too
    samples: int | None  # rows per split; null: all
    family: ClassVar[str] = ""

    def check(self, cfg: TrainConfig) -> None:
        check_blocks(self.blocks, self.family)
        check(self.samples is None or self.samples >= 3, f"metrics.{self.family}.samples",
              self.samples, "null (every row) or >= 3")


@dataclass
class EffectiveRankOptions(SubsampleOptions):
    """Roy & Vetterli's effective rank and RankMe (reptrix) of the centred features."""

    family: ClassVar[str] = "effective_rank"


@dataclass
class IntrinsicDimensionOptions(SubsampleOptions):
    """TwoNN and the Levina–Bickel MLE (scikit-dimension's): O(samples²)."""

    family: ClassVar[str] = "intrinsic_dimension"


def check_blocks(blocks: Any, family: str) -> None:
    check(blocks is None or blocks == "all" or (
        isinstance(blocks, (list, tuple)) and all(isinstance(b, str) for b in blocks)),
        f"metrics.{family}.blocks", blocks, "null (x_pen only), all, or a list of block names")


def selected_blocks(point: Point, family: str) -> list[str]:
    """The blocks ``metrics.<family>.blocks`` names: null -> none, ``all`` -> every block."""
    blocks = getattr(point.cfg.metrics, family).blocks
    available = list(point.model.backbone.block_names)
    if blocks is None:
        return []
    if blocks == "all":
        return available
    unknown = [name for name in blocks if name not in available]
    if isinstance(blocks, str) or unknown:
        raise ConfigError(f"metrics.{family}.blocks={blocks!r} is not allowed: null, all, or a "
                          f"list of this model's blocks {available}")
    return list(blocks)


def named(split: str, family: str, layer: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{split}/{family}/{layer}/{quantity}": v for quantity, v in values.items()}


@register("neural_collapse", NeuralCollapseOptions)
def neural_collapse(point: Point) -> dict[str, Any]:
    """NC1 (three forms), NC2 (three), NC3, NC4 and CDNV of x_pen with true labels; the
    class-mean quantities also at ``metrics.neural_collapse.blocks``, streamed in two passes."""
    blocks = selected_blocks(point, "neural_collapse")
    output_layer = point.model.head.output[0]  # the Linear that reads x_pen
    out: dict[str, Any] = {}
    for split, f in point.features.items():
        num_classes = f.logits.shape[1]
        out.update(named(split, "neural_collapse", PENULTIMATE, neural_collapse_metrics(
            f.x_pen, f.labels, num_classes, output_layer.weight, f.preds)))
        if blocks:
            accumulators = {name: NeuralCollapseAccumulator(num_classes) for name in blocks}
            stream_blocks(point.model, point.batches(split), accumulators)
            for name, accumulator in accumulators.items():
                out.update(named(split, "neural_collapse", name, accumulator.value()))
    return out


def on_subsample(point: Point, family: str,
                 metric: Callable[[Tensor], dict[str, float]]) -> dict[str, Any]:
    """``metric`` of x_pen and the selected blocks on the fixed subsample of each split
    (``metrics.<family>.samples`` rows drawn with ``metrics.seed``, the same rows per layer)."""
    blocks = selected_blocks(point, family)
    samples = getattr(point.cfg.metrics, family).samples
    out: dict[str, Any] = {}
    for split, f in point.features.items():
        rows = sample_rows(len(f.labels), samples, point.cfg.metrics.seed)
        x_pen = f.x_pen if rows is None else f.x_pen[rows]
        out.update(named(split, family, PENULTIMATE, metric(x_pen)))
        if blocks:
            sampled = collect_features(point.model, point.batches(split)(), blocks, rows)
            for name in blocks:
                out.update(named(split, family, name, metric(sampled.blocks[name])))
    return out


@register("effective_rank", EffectiveRankOptions)
def effective_rank(point: Point) -> dict[str, Any]:
    """Roy & Vetterli's effective rank (``erank``) and reptrix's RankMe (``rankme``)."""
    return on_subsample(point, "effective_rank", effective_rank_metrics)


@register("intrinsic_dimension", IntrinsicDimensionOptions)
def intrinsic_dimension(point: Point) -> dict[str, Any]:
    """TwoNN (``twonn``) and the Levina–Bickel MLE (``mle``), as scikit-dimension."""
    return on_subsample(point, "intrinsic_dimension", intrinsic_dimension_metrics)
