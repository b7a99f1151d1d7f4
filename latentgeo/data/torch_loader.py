"""The torchvision DataLoader path (``dataset.loader=torch``), for splits that do not fit on the
training device.

Same interface and same batches as ``TensorLoader``: the shuffle order is the permutation
``TensorLoader`` draws from ``(seed, epoch)``, so without augmentation both loaders yield the
same samples in the same order. The difference is where the work happens: the uint8 split
stays in host memory, and every sample goes through per-sample torchvision v2 transforms —
ToDtype(scale) -> Normalize -> RandomHorizontalFlip -> RandomCrop(padding=4), i.e. the same
augmentation as ``random_crop_flip``, after normalisation, so the padding value 0 is the
channel mean — in ``num_workers`` DataLoader worker processes (or in this process when 0).

Pixel values agree with ``TensorLoader`` to float32 rounding, not bit for bit: ToDtype
multiplies by 1/255 where ``normalize`` divides by 255 (≤ 1 ulp before Normalize).

Augmentation draws are reproducible per ``(seed, epoch, num_workers)``, but they are not the
draws of ``TensorLoader`` (per-sample torch RNG instead of one batched generator), and they
never touch the global RNG of the training process.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from latentgeo.data.datasets import Split
from latentgeo.data.tensor_loader import PAD


def sample_transform(mean: Tensor, std: Tensor, size: tuple[int, int], augment: bool
                     ) -> v2.Compose:
    """Per-sample uint8 [C, H, W] -> float32, normalised, then (optionally) flip + crop."""
    steps: list[v2.Transform] = [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean.tolist(), std.tolist()),
    ]
    if augment:  # after Normalize: RandomCrop pads with 0 = the channel mean, as TensorLoader
        steps += [v2.RandomHorizontalFlip(0.5), v2.RandomCrop(size, padding=PAD)]
    return v2.Compose(steps)


class SplitDataset(Dataset):
    """A uint8 split in host memory with a per-sample transform."""

    def __init__(self, split: Split, transform: v2.Compose) -> None:
        self.x = split.x
        self.y = split.y
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.x[index]), self.y[index]


def _private_rng(batches: Iterator, state: Tensor) -> Iterator:
    """Run ``next(batches)`` under the CPU RNG ``state`` and restore the caller's RNG around
    every batch: with ``num_workers=0`` the transforms draw from the global RNG of this
    process, which the training step (dropout, ...) must not see consumed."""
    while True:
        outer = torch.get_rng_state()
        torch.set_rng_state(state)
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            state = torch.get_rng_state()
            torch.set_rng_state(outer)
        yield batch


class TorchLoader:
    """``TensorLoader``'s interface on a ``torch.utils.data.DataLoader`` with per-sample
    torchvision transforms; pinned host memory and asynchronous copies when on CUDA."""

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
        num_workers: int = 0,
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} is not allowed: an integer >= 0")
        self.device = torch.device(device)
        self.dataset = SplitDataset(
            split, sample_transform(mean.cpu(), std.cpu(), tuple(split.x.shape[-2:]), augment))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = self.device.type == "cuda"
        self.channels_last = False  # yield NHWC batches (trainer.channels_last), as TensorLoader
        self.max_batches: int | None = None  # stop each pass after this many (debugging)

    def __len__(self) -> int:
        batches = (len(self.dataset) + self.batch_size - 1) // self.batch_size
        return batches if self.max_batches is None else min(batches, self.max_batches)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def order(self, epoch: int) -> Tensor | None:
        """TensorLoader's permutation for ``epoch`` (drawn on the same device, so the same on
        CUDA too), or None without shuffling."""
        if not self.shuffle:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator, device=self.device).cpu()

    def epoch(self, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order(epoch)
        indices = order.tolist() if order is not None else list(range(self.num_samples))
        batches = [indices[i:i + self.batch_size] for i in range(0, len(indices),
                                                                  self.batch_size)]
        batches = batches[:len(self)]
        # augmentation seed from (seed, epoch), drawn once so that its stream is not the
        # shuffle's; it seeds the workers (DataLoader base_seed) or the in-process stream
        seeds = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        augment_seed = int(torch.randint(2**62, (), generator=seeds))
        generator = torch.Generator().manual_seed(augment_seed)
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, generator=generator)
        iterator = iter(loader)
        if self.num_workers == 0 and self.augment:
            stream = torch.Generator().manual_seed(augment_seed).get_state()
            iterator = _private_rng(iterator, stream)
        for x, y in iterator:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(0)
