"""One eval-mode pass over a split: logits, x_pen, labels, predictions (and block outputs).

Every latent metric reads from this; no metric runs its own pass over the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from latentgeo.metrics.collapse import NC1Accumulator

Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]  # a fresh pass over a split
PENULTIMATE = "penultimate"  # the name x_pen goes by next to the block names


@dataclass
class Features:
    logits: Tensor  # float32 [N, K], on the CPU
    x_pen: Tensor  # float32 [N, P]
    labels: Tensor  # int64 [N]
    blocks: dict[str, Tensor] = field(default_factory=dict)  # name -> [N, ...] when requested

    @property
    def preds(self) -> Tensor:
        return self.logits.argmax(1)

    @property
    def loss(self) -> float:
        return torch.nn.functional.cross_entropy(self.logits, self.labels).item()

    @property
    def accuracy(self) -> float:
        return (self.preds == self.labels).double().mean().item()


@torch.no_grad()
def collect_features(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    block_names: Sequence[str] = (),
    rows: Tensor | None = None,
) -> Features:
    """Run ``model`` (returning ``(logits, x_pen)``) in eval mode over ``batches``.

    ``block_names`` selects backbone blocks whose outputs are kept (flattened, float32, CPU);
    they can be large, so per-layer metrics that stream should hook blocks themselves.
    ``rows`` (sorted indices into the pass, e.g. ``sample_rows``) keeps only those samples, so
    memory grows with ``len(rows)``, not with the split.
    """
    was_training = model.training
    model.eval()
    outputs: dict[str, list[Tensor]] = {"logits": [], "x_pen": [], "labels": []}
    captured: dict[str, list[Tensor]] = {name: [] for name in block_names}
    kept: dict[str, Tensor | slice] = {"rows": slice(None)}  # this batch's kept rows
    handles = []
    for name in block_names:
        module = model.backbone.blocks[name]  # type: ignore[union-attr,index]
        handles.append(module.register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(
                out.flatten(1)[kept["rows"]].float().cpu())))
    offset = 0
    try:
        for x, y in batches:
            if rows is not None:
                in_batch = rows[(rows >= offset) & (rows < offset + len(y))] - offset
                offset += len(y)
                if len(in_batch) == 0:
                    continue
                kept["rows"] = in_batch.to(y.device)
            logits, x_pen = model(x)
            outputs["logits"].append(logits[kept["rows"]].float().cpu())
            outputs["x_pen"].append(x_pen[kept["rows"]].float().cpu())
            outputs["labels"].append(y[kept["rows"]].cpu())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return Features(
        logits=torch.cat(outputs["logits"]),
        x_pen=torch.cat(outputs["x_pen"]),
        labels=torch.cat(outputs["labels"]),
        blocks={name: torch.cat(parts) for name, parts in captured.items()},
    )


def _hooked_passes(model: nn.Module, batches: Batches,
                   on_block: Callable[[str, Tensor, Tensor], None],
                   with_penultimate: bool = False) -> None:
    """One eval-mode pass calling ``on_block(name, output, labels)`` for every block (and for
    x_pen as ``PENULTIMATE`` after the blocks of each batch when ``with_penultimate``)."""
    current: dict[str, Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, object, Tensor], None]:
        def observe(_module: nn.Module, _inputs: object, out: Tensor) -> None:
            # returns None whatever on_block returns: a hook's value would replace the output
            on_block(name, out.float(), current["y"])

        return observe

    handles = [block.register_forward_hook(hook(name))
               for name, block in model.backbone.blocks.items()]  # type: ignore[union-attr]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in batches():
                current["y"] = y
                _, x_pen = model(x)
                if with_penultimate:
                    on_block(PENULTIMATE, x_pen.float(), y)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


class TwoPassAccumulator(Protocol):
    """Class statistics streamed in two passes over the same samples (``NC1Accumulator``)."""

    def update_means(self, features: Tensor, labels: Tensor) -> None: ...
    def start_second_pass(self) -> None: ...
    def update_scatter(self, features: Tensor, labels: Tensor) -> None: ...


def stream_blocks(model: nn.Module, batches: Batches,
                  accumulators: Mapping[str, TwoPassAccumulator]) -> None:
    """Feed each named block's outputs to its accumulator in two eval-mode passes (means,
    then scatter); blocks without an accumulator are skipped."""
    def feed(step: str) -> Callable[[str, Tensor, Tensor], None]:
        def on_block(name: str, h: Tensor, y: Tensor) -> None:
            if name in accumulators:
                getattr(accumulators[name], step)(h, y)
        return on_block

    _hooked_passes(model, batches, feed("update_means"))
    for accumulator in accumulators.values():
        accumulator.start_second_pass()
    _hooked_passes(model, batches, feed("update_scatter"))


def streaming_nc1(model: nn.Module, batches: Batches, num_classes: int) -> dict[str, float]:
    """TH's NC1 at every block output, streamed in two passes with O(C·D) memory.

    Unlike TH, both passes run in eval mode on fixed weights (TH's train value mixes weights
    that change during the epoch).
    """
    accumulators = {name: NC1Accumulator(num_classes) for name in model.backbone.blocks}
    stream_blocks(model, batches, accumulators)
    return {name: accumulator.value() for name, accumulator in accumulators.items()}


def sample_rows(num_rows: int, samples: int | None, seed: int) -> Tensor | None:
    """Sorted indices of a fixed random subset of ``samples`` of ``num_rows`` rows (seeded);
    None (every row) when ``samples`` is None or not smaller than ``num_rows``."""
    if samples is None or samples >= num_rows:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_rows, generator=generator)[:samples].sort().values
