"""One eval-mode pass over a split: logits, x_pen, labels, predictions (and block outputs).

Every latent metric reads from this; no metric runs its own pass over the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

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
) -> Features:
    """Run ``model`` (returning ``(logits, x_pen)``) in eval mode over ``batches``.

    ``block_names`` selects backbone blocks whose outputs are kept (flattened, float32, CPU);
    they can be large, so per-layer metrics that stream should hook blocks themselves.
    """
    was_training = model.training
    model.eval()
    outputs: dict[str, list[Tensor]] = {"logits": [], "x_pen": [], "labels": []}
    captured: dict[str, list[Tensor]] = {name: [] for name in block_names}
    handles = []
    for name in block_names:
        module = model.backbone.blocks[name]  # type: ignore[union-attr,index]
        handles.append(module.register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out.flatten(1).float().cpu())))
    try:
        for x, y in batches:
            logits, x_pen = model(x)
            outputs["logits"].append(logits.float().cpu())
            outputs["x_pen"].append(x_pen.float().cpu())
            outputs["labels"].append(y.cpu())
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
