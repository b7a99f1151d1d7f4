"""Families that store data and costly post-hoc analyses run on schedule: penultimate.npz,
the decodable information bottleneck (TH) and layer re-initialisation robustness (HP)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentgeo.analysis import reinit as reinit_analysis
from latentgeo.analysis.dib import dib_metrics
from latentgeo.config import TrainConfig, check
from latentgeo.data import EVAL_SPLITS
from latentgeo.families.core import Point, register
from latentgeo.metrics.hyperplanes import LAYER_SETS


@register("penultimate")
def penultimate(point: Point) -> dict[str, Any]:
    """``penultimate.npz``: x_pen, labels and predictions of every evaluated split."""
    if point.run is None:
        return {}
    arrays = {}
    for split, f in point.features.items():
        arrays[f"{split}_x_pen"] = f.x_pen.numpy()
        arrays[f"{split}_labels"] = f.labels.numpy()
        arrays[f"{split}_preds"] = f.preds.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    point.run.write_artifact("penultimate", buffer.getvalue())
    return {}


@dataclass
class DIBOptions:
    """Decodable information bottleneck per block (TH §2.6): decoders trained on frozen
    encoders; costly (≈ 9 main epochs per decoder epoch on a tiny run), so scheduled rarely."""

    blocks: list[str] | None  # null = all: stem + the backbone's blocks
    epochs: int  # V-sufficiency decoders (TH --epochs)
    minimality_epochs: int | None  # V-minimality decoders (TH --dib-epochs); null = epochs
    splits: list[str]
    batch_size: int | None  # null = trainer.batch_size

    def check(self, cfg: TrainConfig) -> None:
        check(self.epochs >= 1, "metrics.dib.epochs", self.epochs, ">= 1")
        check(self.minimality_epochs is None or self.minimality_epochs >= 1,
              "metrics.dib.minimality_epochs", self.minimality_epochs, "null or >= 1")
        bad_splits = [split for split in self.splits if split not in EVAL_SPLITS]
        check(not bad_splits, "metrics.dib.splits", list(self.splits),
              f"a list of {', '.join(EVAL_SPLITS)}")


@register("dib", DIBOptions)
def dib(point: Point) -> dict[str, Any]:
    """V-sufficiency / V-minimality per block (TH §2.6) on the eager float32 model."""
    d, trainer = point.cfg.metrics.dib, point.cfg.trainer
    tic = time.perf_counter()
    splits = {s: getattr(point.data, s) for s in d.splits if s in point.loaders.eval}
    values = dib_metrics(point.model, splits, point.data.mean, point.data.std,
                         point.num_classes, point.cfg.optimizer,
                         list(d.blocks) if d.blocks else None, d.epochs, trainer.seed,
                         minimality_epochs=d.minimality_epochs,
                         batch_size=d.batch_size or trainer.batch_size,
                         chunk_size=trainer.eval_batch_size)
    return {**values, "time/dib_s": time.perf_counter() - tic}


@dataclass
class ReinitOptions:
    """Layer re-initialisation robustness (Zhang, Bengio & Singer 2019, as HP)."""

    layers: str  # conv | conv+linear
    rand: bool  # also re-initialise from a fresh independent random draw
    rand_seed: int | None  # null = trainer.seed + 1000003

    def check(self, cfg: TrainConfig) -> None:
        check(self.layers in LAYER_SETS, "metrics.reinit.layers", self.layers,
              f"one of {list(LAYER_SETS)}")
        check(self.rand_seed != cfg.trainer.seed, "metrics.reinit.rand_seed", self.rand_seed,
              f"a seed other than trainer.seed={cfg.trainer.seed} (which reproduces init.pt)")


@register("reinit", ReinitOptions)
def reinit(point: Point) -> dict[str, Any]:
    """Test top-1 with one conv layer at a time reset to init.pt / earlier snapshots / a fresh
    draw (``reinit/<source>/<layer>``); writes reinit.json and reinit.png."""
    if point.run is None or point.source is None:
        return {}
    r = point.cfg.metrics.reinit
    sources, seed = reinit_analysis.gather_sources(
        point.cfg, point.source.checkpoints, point.data.input_shape, point.num_classes,
        next(point.model.parameters()).device, trained_epoch=point.epoch, rand=r.rand,
        rand_seed=r.rand_seed)
    layers = reinit_analysis.reinit_layer_names(point.model, r.layers)
    result = reinit_analysis.reinit_robustness(point.model, point.batches("test"), sources,
                                               layers, point.num_classes, seed)
    reinit_analysis.write_reinit(point.run, result)
    return reinit_analysis.reinit_events(result)
