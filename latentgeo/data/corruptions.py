"""Dataset corruptions and subsets on in-memory tensors.

Images are ``[N, C, H, W]`` tensors (uint8 pixels, or float for generated data), labels are
int64 ``[N]``. Every function is pure (returns new tensors), vectorised (no Python loop over
samples; loops over classes only) and, where random, seeded by an explicit ``seed`` through a
local CPU ``torch.Generator``, so results do not depend on the device or on global RNG state.

What comes from where:
- ``label_noise``, ``pixel_shuffle``, ``subsample_classes``, ``train_val_split_indices``,
  ``resize_images``, ``resize_pad_images``: HP (magamba/hp_arrangements@867d0fd, train.py,
  data_loader.py: ``--noise``, ``--noise -1``, ``--subsample-classes``, ``--split``,
  ``--stratified``, ``--upscale``, ``--upscale-padding``).
- ``stratified_subset_indices``: TH (ziyong-was-taken/Compression-In-DNNs@0f91561, datasets.py).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch.nn import functional

from latentgeo.config import ConfigError

# Images whose random sort keys are drawn at once in pixel_shuffle / resized at once: bounds the
# float64 (resp. float32) temporaries to a few hundred MB whatever N is. Changing it changes
# which permutations a seed gives, so it is a constant, not an argument.
_PERMUTATION_CHUNK = 4096
_RESIZE_CHUNK = 512


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


def _check_labels(labels: torch.Tensor, num_classes: int, key: str) -> None:
    if labels.ndim != 1:
        raise ValueError(f"{key}: labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{key}: labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{key}: labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
            f"got values in {int(labels.min())}..{int(labels.max())}"
        )


def _check_images(images: torch.Tensor, key: str) -> None:
    if images.ndim != 4:
        raise ValueError(
            f"{key}: images must be a [N, C, H, W] tensor, got shape {tuple(images.shape)}"
        )


# --------------------------------------------------------------------------------------------
# Label noise and pixel shuffle (HP's --noise r and --noise -1)


def label_noise(
    labels: torch.Tensor, rate: float, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric label noise that always changes the selected labels (HP's ``--noise r``).

    Each label is selected independently with probability ``rate``; a selected label ``y``
    becomes ``(y + u) mod K`` with ``u`` uniform in ``{1, ..., K-1}``, so it is always wrong and
    uniform over the K-1 wrong classes. ``rate=0`` changes nothing, ``rate=1`` changes every
    label. HP corrupts only the training indices of a split: pass only those labels.

    Returns ``(new_labels, changed_mask)``: int64 labels on ``labels.device`` and a bool mask of
    the samples whose label was changed (exactly the selected ones).
    """
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ConfigError(f"dataset.label_noise: rate must lie in [0, 1], got {rate}")
    if num_classes < 2 and rate > 0:
        raise ConfigError(
            f"dataset.label_noise: needs num_classes >= 2 to change labels, got {num_classes}"
        )
    _check_labels(labels, num_classes, "dataset.label_noise")
    generator = _generator(seed)
    count = labels.numel()
    # torch.rand is in [0, 1): rate=0 selects nothing and rate=1 selects everything.
    selected = torch.rand(count, generator=generator, dtype=torch.float64) < rate
    offsets = torch.randint(1, max(num_classes, 2), (count,), generator=generator)
    original = labels.detach().to("cpu", torch.int64)
    noisy = torch.where(selected, (original + offsets) % num_classes, original)
    return noisy.to(labels.device), selected.to(labels.device)


def apply_pixel_permutations(images: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Permute the pixel positions of each image with its own permutation.

    ``out[n, c].flatten()[j] = images[n, c].flatten()[permutations[n, j]]``.

    ``permutations`` is ``[N, H*W]`` (int64), one permutation per image, shared by all channels.
    This is the re-application half of :func:`pixel_shuffle`, e.g. for a loader that applies
    the fixed permutation of sample ``i`` after batched augmentation, as HP did.
    """
    _check_images(images, "dataset.pixel_shuffle")
    count, channels, height, width = images.shape
    if tuple(permutations.shape) != (count, height * width):
        raise ValueError(
            f"dataset.pixel_shuffle: permutations must have shape {(count, height * width)}, "
            f"got {tuple(permutations.shape)}"
        )
    index = permutations.to(images.device, torch.int64)[:, None, :].expand(count, channels, -1)
    return images.flatten(2).gather(2, index).view(count, channels, height, width)


def pixel_shuffle(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the pixel positions of every image with its own fixed random permutation.

    HP's ``--noise -1`` (pixel shuffle), for any ``[N, C, H, W]``: image ``n`` gets a uniformly
    random permutation of its ``H*W`` positions, the same for all its channels. The result is a
    function of ``(seed, N, H, W)`` only, so shuffling once (or re-applying the returned
    permutations) keeps each image's permutation constant across epochs.

    Returns ``(shuffled, permutations)`` with ``permutations`` int64 ``[N, H*W]`` (on
    ``images.device``) in the convention of :func:`apply_pixel_permutations`. Note: HP applied
    the permutation after normalisation/augmentation; shuffling the stored dataset instead
    means augmentation (crops, flips) acts on the already shuffled image.
    """
    _check_images(images, "dataset.pixel_shuffle")
    count, _, height, width = images.shape
    generator = _generator(seed)
    # argsort of i.i.d. float64 keys is a uniform random permutation. Ties have probability
    # ~(H*W)^2 / 2^54 per image, so the (faster) unstable sort has a unique answer and the
    # keys, drawn on the CPU, give the same permutations on every device.
    chunks = []
    for start in range(0, count, _PERMUTATION_CHUNK):
        rows = min(_PERMUTATION_CHUNK, count - start)
        keys = torch.rand(rows, height * width, generator=generator, dtype=torch.float64)
        chunks.append(torch.argsort(keys.to(images.device), dim=1))
    if chunks:
        permutations = torch.cat(chunks)
    else:
        permutations = torch.empty(0, height * width, dtype=torch.int64, device=images.device)
    return apply_pixel_permutations(images, permutations), permutations


# --------------------------------------------------------------------------------------------
# Class selection (HP's --subsample-classes)


def subsample_classes(num_classes_total: int, k: int, seed: int) -> list[int]:
    """A seeded choice of ``k`` of the classes ``0..num_classes_total-1``, returned sorted.

    Uniform over all k-subsets (first ``k`` entries of a seeded random permutation, as HP's
    ``--subsample-classes`` with ``--class-sample-seed``). Sorted so that, passed to
    :func:`select_classes`, new label ``i`` is the ``i``-th smallest chosen original class.
    """
    if not 2 <= k <= num_classes_total:
        raise ConfigError(
            f"dataset.num_classes_subsample: must lie in 2..{num_classes_total} "
            f"(the dataset has {num_classes_total} classes), got {k}"
        )
    permutation = torch.randperm(num_classes_total, generator=_generator(seed))
    return sorted(int(c) for c in permutation[:k])


def select_classes(
    images: torch.Tensor, labels: torch.Tensor, classes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the samples whose label is in ``classes`` and relabel ``classes[i] -> i``.

    The order of ``classes`` defines the new labels (not sorted here); sample order is kept.
    Every listed class must be distinct and present in ``labels``.
    """
    classes = [int(c) for c in classes]
    if not classes:
        raise ConfigError("dataset.classes: must list at least one class, got []")
    if len(set(classes)) != len(classes) or min(classes) < 0:
        raise ConfigError(
            f"dataset.classes: must be distinct non-negative class ids, got {classes}")
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(f"dataset.classes: {images.shape[0]} images but {labels.shape[0]} labels")
    present = torch.bincount(labels.detach().cpu().to(torch.int64), minlength=max(classes) + 1)
    missing = [c for c in classes if int(present[c]) == 0]
    if missing:
        raise ConfigError(
            f"dataset.classes: classes {missing} have no samples; labels present: "
            f"{torch.nonzero(present).flatten().tolist()}"
        )
    lookup = torch.full((present.numel(),), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new_labels = lookup[labels.detach().cpu().to(torch.int64)]
    keep = new_labels >= 0
    keep_device = keep.to(images.device)
    return images[keep_device], new_labels[keep].to(labels.device)


# --------------------------------------------------------------------------------------------
# Subsets and splits


def _class_ranks(sorted_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rank of each entry within its class, for labels already grouped (sorted) by class."""
    counts = torch.bincount(sorted_labels, minlength=num_classes)
    class_start = torch.cumsum(counts, 0) - counts
    return torch.arange(sorted_labels.numel()) - class_start[sorted_labels]


def stratified_subset_indices(
    labels: torch.Tensor, num_classes: int, size_per_class: int, index: int
) -> torch.Tensor:
    """Indices of TH's stratified equal-size subset number ``index``.

    The samples of each class are enumerated in dataset order (ranks 0, 1, ...); subset ``s``
    takes, from every class, ranks ``[s*q, (s+1)*q)`` with ``q = size_per_class``. Different
    indices give disjoint subsets; each has exactly ``q`` samples per class. TH uses
    ``q = |test| / C`` (CIFAR10 and (Fashion)MNIST: 1000 per class). Returned as int64 indices
    in increasing (dataset) order.
    """
    key = "dataset.train_subset"
    _check_labels(labels, num_classes, key)
    if size_per_class < 1 or index < 0:
        raise ConfigError(
            f"{key}: size_per_class must be >= 1 and index >= 0, "
            f"got size_per_class={size_per_class}, index={index}"
        )
    cpu_labels = labels.detach().cpu().to(torch.int64)
    counts = torch.bincount(cpu_labels, minlength=num_classes)
    smallest = int(counts.min())
    if (index + 1) * size_per_class > smallest:
        possible = smallest // size_per_class
        allowed = f"index 0..{possible - 1}" if possible else "none with this size_per_class"
        raise ConfigError(
            f"{key}: subset index={index} with size_per_class={size_per_class} needs "
            f"{(index + 1) * size_per_class} samples per class, but class {int(counts.argmin())} "
            f"has only {smallest}; {possible} subsets are possible ({allowed})"
        )
    order = torch.argsort(cpu_labels, stable=True)  # grouped by class, dataset order inside
    ranks = _class_ranks(cpu_labels[order], num_classes)
    chosen = (ranks >= index * size_per_class) & (ranks < (index + 1) * size_per_class)
    return torch.sort(order[chosen]).values


def train_val_split_indices(
    labels: torch.Tensor, fraction: float, stratified: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``0..N-1`` into ``(train_idx, val_idx)``, both int64 and sorted.

    The validation set has ``floor(N * fraction)`` samples, with ``fraction`` read as the
    decimal it is written as (0.29 of 100 is 29, not 28). Non-stratified: a uniformly random
    subset of that size. Stratified (what HP's ``--stratified`` meant to do; its call passed
    the wrong array to sklearn): class ``c`` with ``n_c`` samples gives ``floor(n_c * fraction)``
    validation samples, and the ``floor(N * fraction) - sum_c floor(n_c * fraction)`` left over
    go one each to the classes with the largest remainders ``n_c * fraction - floor(...)``
    (ties: lower class id first). So every class gives ``floor`` or ``ceil`` of its
    proportional share and the total is exact. Within a class the validation samples are
    random.
    """
    key = "dataset.val_split"
    fraction_value = float(fraction)
    if not 0.0 < fraction_value < 1.0:
        raise ConfigError(f"{key}: fraction must lie in (0, 1) (exclusive), got {fraction}")
    if labels.ndim != 1:
        raise ValueError(f"{key}: labels must be 1-D, got shape {tuple(labels.shape)}")
    exact = Fraction(repr(fraction_value))
    total = labels.numel()
    val_size = math.floor(total * exact)
    if val_size == 0 or val_size == total:
        raise ConfigError(
            f"{key}: fraction={fraction} of {total} samples leaves an empty "
            f"{'validation' if val_size == 0 else 'training'} set"
        )
    generator = _generator(seed)
    is_val = torch.zeros(total, dtype=torch.bool)
    if not stratified:
        is_val[torch.randperm(total, generator=generator)[:val_size]] = True
    else:
        cpu_labels = labels.detach().cpu().to(torch.int64)
        if int(cpu_labels.min()) < 0:
            raise ValueError(f"{key}: labels must be non-negative, got {int(cpu_labels.min())}")
        num_classes = int(cpu_labels.max()) + 1
        counts = torch.bincount(cpu_labels, minlength=num_classes).tolist()
        shares = [count * exact for count in counts]
        per_class = [math.floor(share) for share in shares]
        leftover = val_size - sum(per_class)
        by_remainder = sorted(range(num_classes), key=lambda c: (-(shares[c] - per_class[c]), c))
        for c in by_remainder[:leftover]:
            per_class[c] += 1
        # Random order inside each class: sort by random key, then (stably) by class.
        keys = torch.rand(total, generator=generator, dtype=torch.float64)
        order = torch.argsort(keys, stable=True)
        order = order[torch.argsort(cpu_labels[order], stable=True)]
        sorted_labels = cpu_labels[order]
        ranks = _class_ranks(sorted_labels, num_classes)
        is_val[order[ranks < torch.tensor(per_class)[sorted_labels]]] = True
    indices = torch.arange(total)
    return indices[~is_val], indices[is_val]


# --------------------------------------------------------------------------------------------
# Resizing (HP's --upscale and --upscale-padding)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of every image to ``size x size`` (HP's ``--upscale``, size 224).

    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=True)``
    (antialiasing only matters when shrinking). uint8 in gives uint8 out (rounded, clamped to
    0..255); float in gives the same float dtype out. Works in chunks of images to bound the
    float32 temporaries; for large upscales of a whole dataset (CIFAR at 224: 7.5 GB as uint8)
    prefer calling it per batch.
    """
    _check_images(images, "dataset.resize")
    if int(size) < 1:
        raise ConfigError(f"dataset.resize: size must be a positive integer, got {size}")
    return _resize(images, int(size))


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    count, channels = images.shape[:2]
    out = torch.empty(count, channels, size, size, dtype=images.dtype, device=images.device)
    is_uint8 = images.dtype == torch.uint8
    for start in range(0, count, _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].to(torch.float32)
        resized = functional.interpolate(
            chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        if is_uint8:
            resized = resized.round_().clamp_(0, 255)
        out[start : start + _RESIZE_CHUNK] = resized.to(images.dtype)
    return out


def resize_pad_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``size // 2``, then zero-pad, centred, to ``size x size``.

    HP's ``--upscale-padding``: Resize(112) then Pad(56) for 224. When ``size - size // 2`` is
    odd, the extra row / column of padding goes to the bottom / right. The border is exact
    zeros in the input's units, so apply it to raw pixels (before normalisation) to get HP's
    black border. Dtype rules as in :func:`resize_images`.
    """
    _check_images(images, "dataset.resize_pad")
    if int(size) < 2:
        raise ConfigError(f"dataset.resize_pad: size must be an integer >= 2, got {size}")
    size = int(size)
    inner = size // 2
    before = (size - inner) // 2
    after = size - inner - before
    return functional.pad(_resize(images, inner), (before, after, before, after), value=0)
