"""Datasets as in-memory uint8 tensors, through torchvision's own classes where they exist.

Lookup order for the torchvision datasets: ``dataset.root`` -> a system mirror (Debian's
``dataset-fashion-mnist`` puts IDX .gz files in /usr/share/datasets/fashion-mnist) ->
torchvision's download when ``dataset.download=true``. Offline and missing: one
``DatasetUnavailable`` error that says where we looked and how to get the data.

Always-offline datasets: ``digits`` (scikit-learn's bundled 8x8 digits, upscaled/padded to
``dataset.image_size``) and ``synthetic`` (seeded, class-structured images).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from latentgeo.config import ConfigError, DatasetConfig, DatasetUnavailable, option_yaml
from latentgeo.data import szt
from latentgeo.records import exclusive_lock, file_mode


@dataclass
class Split:
    x: Tensor  # uint8 [N, C, H, W]
    y: Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    name: str
    train: Split
    test: Split
    num_classes: int
    mean: Tensor  # float32 [C], per channel on the [0, 1] scale, from the train split
    std: Tensor  # float32 [C], population std (np.std), from the train split
    val: Split | None = None  # held out from train by dataset.val_split

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


def default_root() -> Path:
    return Path(os.environ.get("LATENTGEO_DATA", "~/.cache/latentgeo/data")).expanduser()


# Directories where distributions install data sets, per torchvision class name.
SYSTEM_MIRRORS: dict[str, list[Path]] = {
    "FashionMNIST": [Path("/usr/share/datasets/fashion-mnist")],
    "MNIST": [Path("/usr/share/datasets/mnist")],
}
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def install_mnist_mirror(mirror: Path, root: Path, class_name: str) -> bool:
    """Gunzip IDX files from ``mirror`` into torchvision's ``<root>/<class>/raw`` layout."""
    sources = []
    for stem in MNIST_FILES:
        candidates = [mirror / stem, mirror / f"{stem}.gz"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            return False
        sources.append((stem, found))
    raw = root / class_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    # several jobs of a sweep may unpack into one shared root at once: one at a time, each
    # file through a unique temp name and an atomic rename, skipped when already there
    with exclusive_lock(raw / ".latentgeo-install.lock"):
        for stem, source in sources:
            target = raw / stem
            if target.is_file():
                continue
            fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{stem}.", suffix=".tmp")
            try:
                opener = gzip.open if source.suffix == ".gz" else open
                with opener(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                    os.fchmod(dst.fileno(), file_mode())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    return True


def _torchvision_split(class_name: str, root: Path, train: bool, download: bool) -> Split:
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    if class_name == "SVHN":
        ds = cls(str(root), split="train" if train else "test", download=download)
        x = torch.from_numpy(ds.data)  # already [N, C, H, W]
        y = torch.as_tensor(ds.labels, dtype=torch.int64)
    else:
        ds = cls(str(root), train=train, download=download)
        data = ds.data
        x = torch.as_tensor(data) if not isinstance(data, Tensor) else data
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # -> [N, C, H, W]
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return Split(x.contiguous(), y)


def load_torchvision(name: str, root: Path | None, download: bool) -> DataBundle:
    """``TORCHVISION[name]`` from ``root`` (or the default root), else a system mirror, else
    torchvision's download; DatasetUnavailable saying where it looked."""
    class_name, num_classes = TORCHVISION[name]
    roots = [Path(root).expanduser()] if root else [default_root()]
    looked: list[str] = []

    def read(where: Path, fetch: bool) -> DataBundle:
        return _bundle(name, *(_torchvision_split(class_name, where, train, fetch)
                               for train in (True, False)), num_classes)

    for candidate in roots:
        try:
            return read(candidate, False)
        except (RuntimeError, FileNotFoundError, OSError):
            looked.append(str(candidate))
    for mirror in SYSTEM_MIRRORS.get(class_name, []):
        looked.append(str(mirror))
        if mirror.is_dir() and install_mnist_mirror(mirror, roots[0], class_name):
            return read(roots[0], False)
    if download:
        try:
            roots[0].mkdir(parents=True, exist_ok=True)
            # torchvision downloads to fixed file names: one job at a time per data set
            with exclusive_lock(roots[0] / f".latentgeo-{class_name}.lock"):
                return read(roots[0], True)
        except Exception as error:  # noqa: BLE001 - any download failure means "unavailable"
            reason = f"download into {roots[0]} failed ({type(error).__name__}: {error})"
    else:
        reason = "dataset.download=false"
    mirror_hint = (
        " On Debian/Ubuntu: apt-get install dataset-fashion-mnist." if class_name == "FashionMNIST"
        else ""
    )
    raise DatasetUnavailable(
        f"dataset.name={name!r} is not available: looked in {', '.join(looked)}; {reason}. "
        f"Run once with network access (dataset.download=true), or put torchvision's layout "
        f"for {class_name} under dataset.root (or $LATENTGEO_DATA).{mirror_hint} "
        f"Offline alternatives: dataset=digits or dataset=synthetic."
    )


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population std on the [0, 1] scale, in float64 (BE §1.1)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    mean = torch.zeros(x.shape[1], dtype=torch.float64)
    sq = torch.zeros(x.shape[1], dtype=torch.float64)
    for chunk in flat.split(1 << 22, dim=1):  # bounded memory for 60000x3x32x32
        c = chunk.to(torch.float64) / 255.0
        mean += c.sum(1)
        sq += (c * c).sum(1)
    n = flat.shape[1]
    mean /= n
    std = (sq / n - mean**2).clamp_min(0).sqrt()
    return mean.float(), std.float()


def _bundle(name: str, train: Split, test: Split, num_classes: int | None = None) -> DataBundle:
    mean, std = channel_stats(train.x)
    classes = num_classes or int(max(train.y.max(), test.y.max())) + 1
    return DataBundle(name, train, test, classes, mean, std.clamp_min(1e-8))


def load_digits(image_size: int, channels: int, seed: int, test_fraction: float = 0.2
                ) -> DataBundle:
    """scikit-learn's 1797 8x8 digits, nearest-upscaled by the largest integer factor that fits
    ``image_size`` and zero-padded to it; a seeded, stratified 80/20 split."""
    from sklearn.datasets import load_digits as sk_digits

    if image_size < 8:
        raise ConfigError(f"dataset.image_size={image_size} is not allowed for digits: >= 8")
    digits = sk_digits()
    x = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))
    factor = image_size // 8
    x = x.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    pad = image_size - 8 * factor
    x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    x = x.unsqueeze(1).expand(-1, channels, -1, -1).contiguous()
    y = torch.from_numpy(digits.target.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=generator)]
        test_mask[idx[: round(len(idx) * test_fraction)]] = True
    return _bundle("digits", Split(x[~test_mask], y[~test_mask]), Split(x[test_mask], y[test_mask]),
                   10)


def load_synthetic(image_size: int, channels: int, num_classes: int, train_size: int,
                   test_size: int, seed: int) -> DataBundle:
    """Seeded class-structured images: each class is a smooth random prototype; a sample is
    its prototype plus a random smooth distortion and pixel noise, quantised to uint8."""
    generator = torch.Generator().manual_seed(seed)

    def smooth(n: int) -> Tensor:
        coarse = torch.randn(n, channels, 4, 4, generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(image_size, image_size),
                                               mode="bilinear", align_corners=False)

    prototypes = smooth(num_classes)

    def sample(n: int) -> Split:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=generator)]
        images = prototypes[y] + 0.8 * smooth(n)
        images = images + 0.3 * torch.randn(images.shape, generator=generator)
        x = (128 + 40 * images).round().clamp(0, 255).to(torch.uint8)
        return Split(x, y)

    return _bundle("synthetic", sample(train_size), sample(test_size), num_classes)


# dataset.name -> (torchvision's class, number of classes)
TORCHVISION = {
    "cifar10": ("CIFAR10", 10),
    "cifar100": ("CIFAR100", 100),
    "svhn": ("SVHN", 10),
    "mnist": ("MNIST", 10),
    "fashion_mnist": ("FashionMNIST", 10),
}


def _torchvision_loader(name: str) -> Callable[..., DataBundle]:
    def load(cfg) -> DataBundle:
        return load_torchvision(name, cfg.root, cfg.download)

    return load


def load_szt_bundle(name: str, root: str | None) -> DataBundle:
    """Schwartz-Ziv & Tishby's 12-bit set as 1x1x12 images with pixels 0/255 (so that the
    loader's /255 gives the bits); train = test = all 4096 patterns, as TH does. ``szt`` reads
    the original labels from dataset.root; ``szt_synthetic`` uses a documented offline rule."""
    if name == "szt":
        try:
            x, y = szt.load_szt(Path(root).expanduser() if root else default_root())
        except FileNotFoundError as error:
            raise DatasetUnavailable(f"dataset.name='szt': {error}") from error
    else:
        x, y = szt.szt_inputs(), szt.szt_synthetic_labels()
    images = (x.to(torch.uint8) * 255).view(-1, 1, 1, x.shape[1])
    split = Split(images, y.to(torch.int64))
    return _bundle(name, split, split, 2)


DATASETS: dict[str, Callable[..., DataBundle]] = {
    "szt": lambda cfg: load_szt_bundle("szt", cfg.root),
    "szt_synthetic": lambda cfg: load_szt_bundle("szt_synthetic", cfg.root),
    **{name: _torchvision_loader(name) for name in TORCHVISION},
    "digits": lambda cfg: load_digits(cfg.image_size, cfg.channels, cfg.seed),
    "synthetic": lambda cfg: load_synthetic(cfg.image_size, cfg.channels, cfg.num_classes,
                                            cfg.train_size, cfg.test_size, cfg.seed),
}


def match_shape(split: Split, input_shape: tuple[int, int, int]) -> Split:
    """Bring another data set's images to ``(C, H, W)``: bilinear resize, and channels
    repeated (1 -> C) or averaged (C -> 1). Used for OOD sets (e.g. mnist vs fashion_mnist)."""
    channels, height, width = input_shape
    x = split.x
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.float().mean(1, keepdim=True).round().to(torch.uint8)
        else:
            raise ValueError(f"cannot map {x.shape[1]} channels to {channels}")
    if tuple(x.shape[2:]) != (height, width):
        x = torch.nn.functional.interpolate(x.float(), size=(height, width), mode="bilinear",
                                            align_corners=False, antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return Split(x.contiguous(), split.y)


def load_ood(name: str, in_cfg: DatasetConfig, input_shape: tuple[int, int, int]) -> DataBundle:
    """The OOD data set ``name`` (its test split), shaped like the in-distribution inputs."""
    channels, height, _ = input_shape
    own = option_yaml("dataset", name)  # its sizes where the in-distribution set has none
    sizes = {key: getattr(in_cfg, key) if getattr(in_cfg, key) is not None else own.get(key)
             for key in ("num_classes", "train_size", "test_size")}
    cfg = DatasetConfig(name=name, root=in_cfg.root, download=in_cfg.download,
                        image_size=height, channels=channels, seed=in_cfg.seed + 1, **sizes)
    ood = DATASETS[name](cfg)
    test = match_shape(ood.test, input_shape)
    return DataBundle(name, test, test, ood.num_classes, ood.mean, ood.std)
