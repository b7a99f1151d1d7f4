"""The loader interface and ``make_loaders``: what the loop and the metric families iterate.

Two implementations share the ``Loader`` protocol: ``TensorLoader`` (the split resident on the
training device, batched augmentation; ``dataset.loader=tensor``) and ``TorchLoader``
(torchvision's DataLoader with per-sample transforms; ``dataset.loader=torch``). Code that
needs the raw images or labels takes the dataset's ``Split``, never a loader's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from omegaconf import DictConfig
from torch import Tensor

from latentgeo.config import DatasetConfig, TrainerConfig
from latentgeo.data.datasets import DataBundle, Split
from latentgeo.data.tensor_loader import TensorLoader, normalize

EVAL_SPLITS = ("train", "test", "val")  # the splits a DataBundle can hold, in evaluation order


class Loader(Protocol):
    """Batches ``(x, y)`` of normalised images on ``device``; ``epoch(e)`` is one pass, the
    same batches for the same ``(seed, e)``."""

    batch_size: int
    device: torch.device
    channels_last: bool
    max_batches: int | None

    def __len__(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    def epoch(self, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]: ...


def _tensor_loader(split: Split, mean: Tensor, std: Tensor, batch_size: int,
                   device: torch.device, num_workers: int = 0, **options) -> Loader:
    return TensorLoader(split, mean, std, batch_size=batch_size, device=device, **options)


def _torch_loader(split: Split, mean: Tensor, std: Tensor, batch_size: int,
                  device: torch.device, num_workers: int = 0, **options) -> Loader:
    from latentgeo.data.torch_loader import TorchLoader  # torchvision's transforms: costly

    return TorchLoader(split, mean, std, batch_size=batch_size, device=device,
                       num_workers=num_workers, **options)


# dataset.loader -> its constructor: tensor = the split resident on the training device,
# batched augmentation; torch = DataLoader with per-sample transforms, for data that doesn't
# fit on the device
LOADERS: dict[str, Callable[..., Loader]] = {"tensor": _tensor_loader, "torch": _torch_loader}


def make_loader(kind: str, split: Split, mean: Tensor, std: Tensor, batch_size: int,
                device: torch.device, num_workers: int = 0, **options) -> Loader:
    """A ``LOADERS[kind]`` loader over ``split`` (``options``: shuffle, augment, seed)."""
    if kind not in LOADERS:
        raise ValueError(f"dataset.loader={kind!r} is not allowed: one of {list(LOADERS)}")
    return LOADERS[kind](split, mean, std, batch_size, device, num_workers, **options)


def stratified_sample(split: Split, per_class: int, seed: int) -> Split:
    """A fixed sample of ``split``: ``per_class`` images of every class (all of a smaller
    class), drawn with ``seed``, kept in dataset order."""
    generator = torch.Generator().manual_seed(seed)
    labels = split.y.cpu()
    chosen = []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.cat(chosen).sort().values
    return Split(split.x[index], split.y[index])


@dataclass
class Loaders:
    train: Loader  # shuffled, augmented when dataset.augment
    eval: dict[str, Loader]  # fixed order, no augmentation
    probe_images: Tensor | None = None  # DeepFool's fixed random test sample, normalised
    ood: Loader | None = None  # metrics.ood.dataset, in the in-dataset's shape/stats


def make_loaders(dataset: DatasetConfig, trainer: TrainerConfig, metrics: DictConfig,
                 data: DataBundle, device: torch.device, ood: DataBundle | None = None,
                 ) -> Loaders:
    """The training loader, one evaluation loader per split, DeepFool's probe images (when
    ``metrics.perturbation`` is not off) and the OOD loader."""
    def loader(split: Split, batch_size: int, limit: int | None, **options) -> Loader:
        made = make_loader(dataset.loader, split, data.mean, data.std, batch_size, device,
                           num_workers=dataset.num_workers, **options)
        made.max_batches = limit
        return made

    if trainer.overfit_batches:  # the same few batches every epoch: the loss must go to ~0
        train = loader(data.train, trainer.batch_size, trainer.overfit_batches, shuffle=False,
                       augment=False, seed=trainer.seed)
    else:
        train = loader(data.train, trainer.batch_size, trainer.limit_train_batches,
                       shuffle=True, augment=dataset.augment, seed=trainer.seed)
    splits = {name: getattr(data, name) for name in EVAL_SPLITS if getattr(data, name) is not None}
    if metrics.train_subset is not None:
        splits["train"] = stratified_sample(data.train, metrics.train_subset, metrics.seed)
    evals = {name: loader(split, trainer.eval_batch_size, trainer.limit_eval_batches)
             for name, split in splits.items()}
    probe = None
    if "perturbation" in metrics and metrics.perturbation.when != "off":
        generator = torch.Generator().manual_seed(trainer.seed)
        count = min(metrics.perturbation.samples, len(data.test))
        index = torch.randperm(len(data.test), generator=generator)[:count]
        probe = normalize(data.test.x[index].to(device), data.mean.to(device),
                          data.std.to(device))
    ood_loader = None
    if ood is not None:
        ood_loader = loader(ood.test, trainer.eval_batch_size, trainer.limit_eval_batches)
    return Loaders(train, evals, probe, ood_loader)
