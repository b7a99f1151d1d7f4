"""Device-resident batching: the whole split is one uint8 tensor on the training device.

Normalisation and augmentation are batched tensor ops (airbench style) — no DataLoader
workers, no per-sample Python. Shuffling and augmentation draw from a generator seeded by
``(seed, epoch)``, so epoch ``e`` yields the same batches whether or not the run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from latentgeo.data.datasets import Split

PAD = 4  # random-crop padding (BE, HP: RandomCrop(32, padding=4))


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 [B, C, H, W] -> float32, per-channel (x/255 - mean)/std."""
    x = x.float().div_(255.0)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = PAD) -> Tensor:
    """Horizontal flip with probability 1/2, then a random crop of the zero-padded batch.

    Applied after normalisation as BE does, so the padding value 0 is the channel mean.
    One gather for the whole batch instead of a Python loop over samples.
    """
    batch, channels, height, width = x.shape
    device = x.device
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=device)
    cols = left.view(-1, 1) + torch.arange(width, device=device)
    cols = torch.where(flip.view(-1, 1), width + 2 * pad - 1 - cols, cols)  # flip = mirror
    rows = top.view(-1, 1) + torch.arange(height, device=device)
    # one gather for flip and crop together (~6x faster than 4-index advanced indexing)
    index = rows.view(batch, height, 1) * (width + 2 * pad) + cols.view(batch, 1, width)
    index = index.view(batch, 1, -1).expand(batch, channels, height * width)
    return padded.flatten(2).gather(2, index).view(batch, channels, height, width)


class TensorLoader:
    """Batches of normalised (and optionally augmented) images from a device-resident split."""

    def __init__(
        self,
        split: Split,
        mean: Tensor,
        std: Tensor,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.mean = mean.to(device)
        self.std = std.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.channels_last = False  # yield NHWC batches (trainer.channels_last)
        self.max_batches: int | None = None  # stop each pass after this many (debugging)

    def __len__(self) -> int:
        batches = (len(self.y) + self.batch_size - 1) // self.batch_size
        return batches if self.max_batches is None else min(batches, self.max_batches)

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.y)
        order = (
            torch.randperm(n, generator=generator, device=self.device) if self.shuffle else None
        )
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = start + self.batch_size
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            else:
                idx = order[start:stop]
                # index_select: much faster than advanced indexing for uint8 images
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            xb = normalize(xb, self.mean, self.std)
            if self.augment:
                xb = random_crop_flip(xb, generator)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(0)
