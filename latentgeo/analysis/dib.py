"""V-information terms of the decodable information bottleneck per block (TH §2.6).

    python -m latentgeo.analysis.dib RUN_DIR [--epoch E] [--blocks B ...] [--epochs N]
        [--minimality-epochs N] [--splits train,test] [--batch-size B] [--device D]

Split the classifier at block b: encoder = stem + blocks[:b] (``backbone.encode(x, b)``),
decoder = blocks[b:] + pool + head (``Classifier.decode(h, b)``). For one data split (decoders
of the train split train on the train split, those of the test split on the test split, as TH):

- V-sufficiency  vsuff = H(Y) − CE_final / ln 2                               [bits]
  one freshly reset decoder trained on the original labels Y;
- V-minimality   vmin  = (1/N_D) Σ_k [H(Y_k) − CE_k,final / ln 2]             [bits]
  N_D freshly reset decoders trained jointly, decoder k on digit k of the DIB labels
  (``latentgeo.metrics.dib.dib_labels``: the base-C digits of each sample's index in its class).

H = the *empirical* entropy of the split's labels / digits (``digit_entropies``); TH assumes
log₂ C everywhere, which is wrong for unbalanced classes and leading digits (docs/definitions.md §5
note 7). CE_final (nats) = what ``loop.train_epoch`` returns as ``train/running_loss`` for the
last decoder-training epoch: the batch-size-weighted mean over that epoch's samples of the
per-batch training CE, measured while the decoder's parameters change within the epoch, decoder
in train mode (TH: Lightning's epoch-level ``train_loss``). Both terms are therefore *training*
V-information: a decoder able to memorise its split drives CE_final to 0 at any block.

Blocks: ``stem`` is b = 0, the encoder TH uses at b = 0: the (flattened) input for the MLP and
TH's CNNs, whose stem is Flatten/Identity; the conv stem for the ResNets, as TH's b = 0 keeps
the torchvision stem; the raw (normalised) input for ``convnext_t``, whose patchify stem then
belongs to the decoder (TH's ConvNeXt encoder ``features[:2b]`` is empty at b = 0 and its
decoder starts with ``features[0]``; ``input_is_block0``). Then ``backbone.block_names`` for
b = 1..L, the representation after that block; b = L leaves pool + head as the decoder. Keys:
``dib/vsuff/<block>/<split>`` and ``dib/vmin/<block>/<split>``.

Deliberate differences from TH:
- the frozen encoder copy is pinned to eval mode (TH's Lightning ``fit`` put it in train mode,
  so its BN layers used batch statistics and updated their running statistics);
- empirical entropies instead of log₂ C;
- V-minimality minimises the *sum* of the N_D digit CEs (TH: their mean), so every decoder gets
  the gradient of its own CE at the run's LR (with SGD, TH's mean divides each decoder's LR by
  N_D); the value uses their mean, as TH;
- decoders train on un-augmented images (the encoder outputs are cached, see below);
- a decoder whose loss diverges gives NaN for its key instead of stopping the run.

Decoders: a deep copy of blocks[b:] + pool + head with every submodule that has
``reset_parameters`` reset (TH's rule; a module with parameters but no ``reset_parameters``,
e.g. ``ReLUAlpha``, keeps its trained values). Their loss is plain cross-entropy (no γ·x_pen²
term, no ReLU_α penalty). They train with ``loop.train_epoch`` and an
optimizer from ``loop.build_optimizer`` with the run's optimizer name, LR and weight decay,
constant LR (TH: no schedule), ``batch_size`` samples per step, shuffled by a ``TensorLoader``
seeded with ``seed``; ``torch.manual_seed(seed)`` before every decoder set, so a key's value does
not depend on which other blocks or splits are computed. The global RNG state is restored.

Caching: the encoder is fixed, so its outputs are computed once per (block, split), in dataset
order, eval mode, no grad, and the decoders train on that tensor when N · |h| · 4 bytes ≤
min(``max_cache_bytes`` (default 2 GiB), half the free memory of the device: CUDA
``mem_get_info``, CPU ``MemAvailable``). Otherwise every decoder step re-encodes its batch. Both
paths see the same batches and give the same numbers up to float rounding, except for TH's
CNNs, whose BN (``track_running_stats=False``) uses batch statistics even in eval mode.

Cost of one (block, split), in passes over the split: epochs + minimality_epochs · N_D decoder
passes (forward + backward), plus one encoder pass when cached (epochs + minimality_epochs when
not). E.g. a tiny ResNet-18 run, all 5 blocks, train + test: ≈ 9 main training epochs per
decoder epoch (measured on CPU); the ``stem`` split costs the most (its decoder is the network).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from latentgeo.build import load_run, owning
from latentgeo.config import OptimizerConfig
from latentgeo.data.datasets import Split
from latentgeo.data.tensor_loader import TensorLoader, normalize
from latentgeo.loop import LossFn, TrainingDiverged, build_optimizer, train_epoch
from latentgeo.metrics.dib import dib_labels, digit_entropies
from latentgeo.models.base import Backbone, Classifier
from latentgeo.models.relu_alpha import set_step_nu
from latentgeo.tracking import add_to_summary

STEM = "stem"  # the name of block index 0: the encoder is the stem alone
MEASURES = ("vsuff", "vmin")
MAX_CACHE_BYTES = 2 * 1024**3
LN2 = math.log(2.0)


# ---------------------------------------------------------------------------- the split


def dib_block_names(model: Classifier) -> list[str]:
    """``stem`` (b = 0) then the backbone's block names (b = 1..L)."""
    names = model.backbone.block_names
    if STEM in names:
        raise ValueError(f"a backbone block is named {STEM!r}, the DIB name of b = 0")
    return [STEM, *names]


def input_is_block0(model: Classifier) -> bool:
    """True when TH's b = 0 encoder is the raw input although the backbone has a trained stem:
    torchvision's ConvNeXt patchify stem (``Conv2dNormActivation``, ``convnext_t``), which TH's
    split ``features[:2b]`` leaves to the decoder at b = 0 (module docstring)."""
    from torchvision.ops.misc import Conv2dNormActivation  # torchvision: when first needed

    return isinstance(model.backbone.stem, Conv2dNormActivation)


def static_blocks(model: Classifier) -> list[str]:
    """DIB blocks whose encoder has no parameters and no buffers (``stem`` when the stem is
    Flatten / Identity, or left to the decoder as ConvNeXt's): their values never change during
    training, so a schedule can compute them once (TH logs b = 0 at the first epoch only)."""
    stem = model.backbone.stem
    has_state = next(stem.parameters(), None) is not None or next(stem.buffers(), None) is not None
    return [] if has_state and not input_is_block0(model) else [STEM]


class FrozenEncoder(nn.Module):
    """A deep copy of a backbone used as ``encode(x, b)`` = stem + blocks[:b]; its parameters
    never require grad and it stays in eval mode: ``train()`` cannot switch it back (TH's copy
    ran in train mode, docs/definitions.md §2.6). ``input_stem``: b = 0 returns the input itself
    (the stem belongs to the decoder, ``input_is_block0``)."""

    def __init__(self, backbone: Backbone, input_stem: bool = False) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.backbone.requires_grad_(False)
        self.input_stem = input_stem
        super().train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor, num_blocks: int) -> Tensor:
        if num_blocks == 0 and self.input_stem:
            return x
        return self.backbone.encode(x, num_blocks)


def reset_decoder(model: Classifier, num_blocks: int, keep_stem: bool = False) -> Classifier:
    """A deep copy of ``model`` keeping only blocks[num_blocks:] + pool + head (the stem and the
    encoder blocks become ``nn.Identity``; ``keep_stem``: the stem stays, for b = 0 when it
    belongs to the decoder), every submodule with ``reset_parameters`` reset. Use it as
    ``decoder.decode(decoder.backbone.stem(h), num_blocks)`` (``DecoderSet``). ReLU_α sites
    keep their trained α and use ν itself in training forwards (``set_step_nu(…, 0)``)."""
    decoder = copy.deepcopy(model)
    if not keep_stem:
        decoder.backbone.stem = nn.Identity()
    for name in decoder.backbone.block_names[:num_blocks]:
        decoder.backbone.blocks[name] = nn.Identity()
    for module in decoder.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    set_step_nu(decoder, 0.0)
    decoder.requires_grad_(True)
    decoder.zero_grad(set_to_none=True)
    return decoder


class DecoderSet(nn.Module):
    """K independent decoders reading the same encoder output: ``forward(h)`` -> logits
    ``[B, C, K]``. ``output_parameters`` lets ``loop.build_optimizer`` group it like a
    Classifier."""

    def __init__(self, decoders: Sequence[Classifier], start_block: int) -> None:
        super().__init__()
        self.decoders = nn.ModuleList(decoders)
        self.start_block = start_block

    def forward(self, h: Tensor) -> Tensor:
        # the stem is nn.Identity unless it belongs to the decoder (b = 0, input_is_block0)
        return torch.stack([d.decode(d.backbone.stem(h), self.start_block)[0]
                            for d in self.decoders], dim=-1)

    def output_parameters(self) -> list[nn.Parameter]:
        return [p for d in self.decoders for p in d.output_parameters()]


# ---------------------------------------------------------------------------- encoder outputs


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA ``mem_get_info``; CPU ``MemAvailable`` (Linux), or
    unbounded when it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return sys.maxsize


def cache_budget_bytes(device: torch.device, max_cache_bytes: int) -> int:
    """The largest encoder-output cache allowed: min(max_cache_bytes, half the free memory)."""
    return min(max_cache_bytes, available_memory_bytes(device) // 2)


class EncodedSplit:
    """The encoder output at block ``num_blocks`` of one split, looked up by sample index:
    a cached ``[N, ...]`` tensor when it fits in ``max_cache_bytes`` (module docstring),
    otherwise re-encoded per batch."""

    def __init__(self, encoder: FrozenEncoder, num_blocks: int, split: Split, mean: Tensor,
                 std: Tensor, device: torch.device, chunk: int,
                 max_cache_bytes: int = MAX_CACHE_BYTES) -> None:
        self.encoder = encoder
        self.num_blocks = num_blocks
        self.images, self.mean, self.std = split.x.to(device), mean.to(device), std.to(device)
        self.chunk = chunk
        sample = self._encode(slice(0, min(2, len(self.images))))
        self.bytes_needed = len(self.images) * sample[0].numel() * 4
        self.cache: Tensor | None = None
        if self.bytes_needed <= cache_budget_bytes(self.images.device, max_cache_bytes):
            self.cache = torch.cat([self._encode(slice(start, start + self.chunk)).float()
                                    for start in range(0, len(self.images), self.chunk)])

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def _encode(self, index: Tensor | slice) -> Tensor:
        return self.encoder(normalize(self.images[index], self.mean, self.std), self.num_blocks)

    def __call__(self, index: Tensor) -> Tensor:
        return self.cache[index] if self.cache is not None else self._encode(index)


def index_loader(num_samples: int, batch_size: int, device: torch.device, seed: int
                 ) -> TensorLoader:
    """A shuffled ``TensorLoader`` whose labels are the sample indices 0..N−1: the decoders'
    batches come from TensorLoader's seeded shuffling while the loss looks up encoder outputs
    and targets by index (the 1-pixel inputs it yields are ignored)."""
    split = Split(torch.zeros(num_samples, 1, 1, 1, dtype=torch.uint8),
                  torch.arange(num_samples))
    return TensorLoader(split, torch.zeros(1), torch.ones(1), batch_size=batch_size,
                        device=device, shuffle=True, seed=seed)


# ---------------------------------------------------------------------------- training


def decoder_loss(features: Callable[[Tensor], Tensor], targets: Tensor) -> LossFn:
    """``LossFn`` of a decoder set on index batches: Σ_k CE(decoder_k(h), targets[:, k]), and
    the number of samples whose K targets are all predicted."""

    def loss_fn(decoders: nn.Module, _inputs: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        logits = decoders(features(index))  # [B, C, K]
        target = targets[index]  # [B, K]
        per_decoder = nn.functional.cross_entropy(logits.float(), target, reduction="none")
        correct = (logits.detach().argmax(1) == target).all(dim=1).sum()
        return per_decoder.mean(0).sum(), correct

    return loss_fn


def final_cross_entropies(model: Classifier, features: EncodedSplit, targets: Tensor,
                          num_blocks: int, optimizer_cfg: OptimizerConfig, epochs: int,
                          batch_size: int,
                          seed: int, keep_stem: bool = False) -> float:
    """Train ``K = targets.shape[1]`` fresh decoders (after block ``num_blocks``; with the stem
    when ``keep_stem``) jointly on ``targets`` ``[N, K]`` for ``epochs`` epochs; returns
    CE_final averaged over the K decoders (nats; module docstring), NaN when the loss
    diverged."""
    torch.manual_seed(seed)
    template = reset_decoder(model, num_blocks, keep_stem)
    decoders = DecoderSet([reset_decoder(template, 0, keep_stem)
                           for _ in range(targets.shape[1])], num_blocks)
    optimizer = build_optimizer(optimizer_cfg, decoders)  # the run's name, lr and weight decay
    loader = index_loader(len(targets), batch_size, targets.device, seed)
    loss_fn = decoder_loss(features, targets)
    last: dict[str, float] = {}
    try:
        for epoch in range(1, epochs + 1):
            last = train_epoch(decoders, loader, optimizer, epoch, loss_fn)
    except TrainingDiverged:
        return math.nan
    return last["train/running_loss"] / targets.shape[1]


def v_information(entropies_bits: Sequence[float], cross_entropy_nats: float) -> float:
    """(1/K) Σ_k H_k − CE/ln 2 with CE the decoders' mean final CE: vsuff for K = 1 (H(Y)),
    vmin for the K = N_D digits."""
    return sum(entropies_bits) / len(entropies_bits) - cross_entropy_nats / LN2


def dib_metrics(model: Classifier, splits: dict[str, Split], mean: Tensor, std: Tensor,
                num_classes: int, optimizer_cfg: OptimizerConfig,
                blocks: Sequence[str] | None = None, epochs: int = 20, seed: int = 0, *,
                minimality_epochs: int | None = None,
                batch_size: int = 128, chunk_size: int = 1000,
                max_cache_bytes: int = MAX_CACHE_BYTES) -> dict[str, float]:
    """V-sufficiency and V-minimality (bits) per block and split; see the module docstring.

    ``splits``: split name -> the dataset's uint8 ``Split`` (its images and labels; a run's
    ``data.train`` / ``data.test``), normalised with the train split's ``mean`` / ``std``.
    ``optimizer_cfg``: the run's ``cfg.optimizer`` with a numeric ``lr``. ``blocks``: names from
    ``dib_block_names(model)``, default all. ``epochs``: decoder epochs (TH: 20 for vsuff);
    ``minimality_epochs``: for the vmin decoders (default ``epochs``; TH: 50). ``batch_size``:
    decoder batch size (the run's ``trainer.batch_size``); ``chunk_size``: encoder batch
    (``trainer.eval_batch_size``). Returns ``{"dib/vsuff/<block>/<split>": v,
    "dib/vmin/<block>/<split>": v}``. ``model`` is only deep-copied (weights, buffers, mode and
    the global RNG state stay as they were).
    """
    names = dib_block_names(model)
    blocks = names if blocks is None else list(blocks)
    unknown = [b for b in blocks if b not in names]
    if unknown:
        raise ValueError(f"blocks={blocks}: {unknown} not among the DIB blocks {names}")
    if epochs < 1 or (minimality_epochs is not None and minimality_epochs < 1):
        raise ValueError(f"epochs={epochs}, minimality_epochs={minimality_epochs}: need >= 1")
    lr = optimizer_cfg.lr
    if not isinstance(lr, (int, float)):
        raise ValueError(f"optimizer.lr={lr!r}: dib_metrics needs the numeric LR of the run")
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    input_stem = input_is_block0(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        encoder = FrozenEncoder(model.backbone, input_stem)
        for split_name, split in splits.items():
            labels = split.y.to(device).long()
            targets = {"vsuff": labels.unsqueeze(1), "vmin": dib_labels(labels, num_classes)}
            entropies = {m: digit_entropies(t, num_classes) for m, t in targets.items()}
            for block in blocks:
                index = names.index(block)
                features = EncodedSplit(encoder, index, split, mean, std, device, chunk_size,
                                        max_cache_bytes)
                for measure in MEASURES:
                    measure_epochs = (minimality_epochs or epochs) if measure == "vmin" else epochs
                    ce = final_cross_entropies(model, features, targets[measure], index,
                                               optimizer_cfg, measure_epochs, batch_size, seed,
                                               keep_stem=index == 0 and input_stem)
                    out[f"dib/{measure}/{block}/{split_name}"] = v_information(
                        entropies[measure], ce)
                del features
    return out


def split_entropies(labels: Tensor, num_classes: int) -> tuple[float, float]:
    """(H(Y), mean_k H(Y_k)): the largest values vsuff and vmin can take on a split."""
    digits = digit_entropies(dib_labels(labels, num_classes), num_classes)
    return digit_entropies(labels.unsqueeze(1), num_classes)[0], sum(digits) / len(digits)


# ---------------------------------------------------------------------------- command


def format_table(values: dict[str, float], blocks: Sequence[str], splits: Sequence[str],
                 entropies: dict[str, tuple[float, float]]) -> str:
    """One row per block, one column per (measure, split); bits. ``entropies``: split ->
    (H(Y), mean_k H(Y_k)), the largest values vsuff and vmin can take."""
    columns = [f"{measure}/{split}" for measure in MEASURES for split in splits]
    width = max(len("block"), *map(len, blocks))
    lines = ["block".ljust(width) + "".join(f"  {c:>12}" for c in columns)]
    for block in blocks:
        cells = [values.get(f"dib/{c.split('/')[0]}/{block}/{c.split('/')[1]}", math.nan)
                 for c in columns]
        lines.append(block.ljust(width) + "".join(f"  {v:12.4f}" for v in cells))
    lines.append("bits; upper bounds " + ", ".join(
        f"{split}: H(Y) {h:.4f}, mean H(Y_k) {hk:.4f}" for split, (h, hk) in entropies.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.analysis.dib",
        description="V-sufficiency and V-minimality (DIB, TH §2.6) per block of a trained run; "
                    "appends one event with dib/vsuff/<block>/<split> and "
                    "dib/vmin/<block>/<split> to RUN_DIR/metrics.jsonl.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epoch", type=int, default=None,
                        help="checkpoint epoch_XXXX.pt (0: init.pt); default last.pt")
    parser.add_argument("--blocks", nargs="+", default=None,
                        help=f"block names ({STEM} = b 0); default all")
    parser.add_argument("--epochs", type=int, default=20,
                        help="decoder training epochs (TH: 20 for vsuff)")
    parser.add_argument("--minimality-epochs", type=int, default=50,
                        help="epochs of the vmin decoders (TH's --dib-epochs: 50)")
    parser.add_argument("--splits", default="train,test", help="comma-separated splits")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="decoder batch size (default the run's trainer.batch_size)")
    parser.add_argument("--device", default=None, help="default: the run's trainer.device")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return owning(args.run_dir, "python -m latentgeo.analysis.dib", lambda: run_command(args))


def run_command(args: argparse.Namespace) -> int:
    """The command's body, with the run dir's owner lock held."""
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        run = load_run(args.run_dir, args.epoch, args.device)
        missing = [s for s in splits if s not in run.loaders.eval]
        if missing:
            raise ValueError(f"--splits={args.splits}: {missing} not among the run's splits "
                             f"{sorted(run.loaders.eval)}")
        names = dib_block_names(run.model)
        blocks = args.blocks or names
        tic = time.perf_counter()
        values = dib_metrics(run.model, {s: getattr(run.data, s) for s in splits},
                             run.data.mean, run.data.std, run.num_classes, run.cfg.optimizer,
                             blocks, args.epochs, run.cfg.trainer.seed,
                             minimality_epochs=args.minimality_epochs,
                             batch_size=args.batch_size or run.cfg.trainer.batch_size,
                             chunk_size=run.cfg.trainer.eval_batch_size)
        elapsed = time.perf_counter() - tic
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run.run.log({"epoch": run.epoch, "step": run.epoch * run.steps_per_epoch, **values,
                 "time/dib_s": elapsed})
    where = add_to_summary(run.run, run.cfg, values)
    entropies = {split: split_entropies(getattr(run.data, split).y.long(), run.num_classes)
                 for split in splits}
    print(f"{run.run.dir}: epoch {run.epoch}, DIB in {elapsed:.1f} s on {run.device}")
    print(format_table(values, blocks, splits, entropies))
    if where:
        print(f"added to the summary in {' and '.join(where)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
