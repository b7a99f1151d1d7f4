"""latentgeo.data.corruptions (corruptions, subsets, splits, resizing) and latentgeo.data.szt."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from latentgeo.data.corruptions import (
    apply_pixel_permutations,
    label_noise,
    pixel_shuffle,
    resize_images,
    resize_pad_images,
    select_classes,
    stratified_subset_indices,
    subsample_classes,
    train_val_split_indices,
)
from latentgeo.data.szt import as_images, load_szt, szt_inputs, szt_synthetic_labels


def _labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Labels with the given class counts, in a random (seeded) dataset order."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    generator = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(labels.numel(), generator=generator)]


# --------------------------------------------------------------------------------------------
# label_noise


def test_label_noise_rate_always_wrong_and_uniform_over_wrong_classes() -> None:
    num_classes, count, rate = 10, 20000, 0.3
    labels = _labels([count // num_classes] * num_classes)
    noisy, changed = label_noise(labels, rate, num_classes, seed=1)
    assert noisy.dtype == torch.int64 and changed.dtype == torch.bool
    # Changed fraction within 4 binomial standard deviations of the rate.
    sigma = math.sqrt(rate * (1 - rate) / count)
    assert abs(changed.double().mean().item() - rate) < 4 * sigma
    # The mask is exactly the changed labels, and a changed label is never the old one.
    assert torch.equal(changed, noisy != labels)
    assert noisy.min() >= 0 and noisy.max() < num_classes
    # Offset (new - old) mod K uniform over 1..K-1: loose chi-square (df=8, p ~ 1e-6 at 45).
    offsets = ((noisy - labels) % num_classes)[changed]
    observed = torch.bincount(offsets, minlength=num_classes)[1:].double()
    expected = offsets.numel() / (num_classes - 1)
    assert ((observed - expected) ** 2 / expected).sum().item() < 45
    # New labels of the changed samples of one class: spread over all 9 other classes.
    from_class_zero = noisy[changed & (labels == 0)]
    assert set(from_class_zero.tolist()) == set(range(1, num_classes))


def test_label_noise_extremes_and_seeding() -> None:
    labels = _labels([50, 30, 20])
    unchanged, mask = label_noise(labels, 0.0, 3, seed=0)
    assert torch.equal(unchanged, labels) and not mask.any()
    all_changed, mask = label_noise(labels, 1.0, 3, seed=0)
    assert mask.all() and (all_changed != labels).all()
    first, _ = label_noise(labels, 0.5, 3, seed=7)
    again, _ = label_noise(labels, 0.5, 3, seed=7)
    other, _ = label_noise(labels, 0.5, 3, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(labels, _labels([50, 30, 20]))  # input untouched


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_label_noise_rejects_rate_outside_unit_interval(rate: float) -> None:
    with pytest.raises(ValueError, match=r"dataset\.label_noise.*\[0, 1\]") as error:
        label_noise(torch.tensor([0, 1]), rate, 2, seed=0)
    assert str(rate) in str(error.value)


def test_label_noise_rejects_labels_outside_classes() -> None:
    with pytest.raises(ValueError, match=r"dataset\.label_noise.*0\.\.2"):
        label_noise(torch.tensor([0, 3]), 0.1, 3, seed=0)


# --------------------------------------------------------------------------------------------
# pixel_shuffle


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (5, 3, 32, 32), (4, 2, 5, 7)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_pixel_shuffle_per_image_permutation_shared_by_channels(
    shape: tuple[int, int, int, int], dtype: torch.dtype
) -> None:
    count, channels, height, width = shape
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, shape, generator=generator).to(dtype)
    shuffled, permutations = pixel_shuffle(images, seed=3)
    assert shuffled.shape == images.shape and shuffled.dtype == dtype
    assert permutations.shape == (count, height * width) and permutations.dtype == torch.int64
    for n in range(count):
        # A bijection of the H*W positions, and the same one for every channel.
        assert torch.equal(permutations[n].sort().values, torch.arange(height * width))
        for c in range(channels):
            expected = images[n, c].flatten()[permutations[n]].view(height, width)
            assert torch.equal(shuffled[n, c], expected)
        # Pixel multiset of each image preserved.
        assert torch.equal(shuffled[n].flatten().sort().values, images[n].flatten().sort().values)
    # Each image has its own permutation.
    assert not torch.equal(permutations[0], permutations[1])
    # Fixed for a seed (constant across epochs), re-appliable, different for another seed.
    again, permutations_again = pixel_shuffle(images, seed=3)
    assert torch.equal(again, shuffled) and torch.equal(permutations_again, permutations)
    assert torch.equal(apply_pixel_permutations(images, permutations), shuffled)
    assert not torch.equal(pixel_shuffle(images, seed=4)[1], permutations)


def test_pixel_shuffle_identical_channels_stay_identical() -> None:
    one_channel = torch.arange(2 * 32 * 32, dtype=torch.float32).view(2, 1, 32, 32)
    shuffled, _ = pixel_shuffle(one_channel.expand(2, 3, 32, 32), seed=0)
    assert torch.equal(shuffled[:, 0], shuffled[:, 1])
    assert torch.equal(shuffled[:, 0], shuffled[:, 2])


def test_pixel_shuffle_permutations_are_uniform() -> None:
    # 2x2 images: all 24 permutations of 4 positions should be about equally frequent.
    count = 4800
    _, permutations = pixel_shuffle(torch.zeros(count, 1, 2, 2), seed=5)
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    codes = torch.tensor([index[tuple(row)] for row in permutations.tolist()])
    observed = torch.bincount(codes, minlength=24).double()
    expected = count / 24
    assert ((observed - expected) ** 2 / expected).sum().item() < 70  # df=23, p ~ 1e-6


# --------------------------------------------------------------------------------------------
# select_classes / subsample_classes


def test_select_classes_relabels_in_given_order() -> None:
    labels = torch.tensor([0, 1, 2, 3, 4, 3, 1, 0, 3])
    images = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1) * 10
    kept_images, kept_labels = select_classes(images, labels, [3, 1])
    assert kept_labels.tolist() == [1, 0, 0, 1, 0]
    assert kept_images.flatten().tolist() == [10, 30, 50, 60, 80]  # dataset order kept
    assert kept_labels.dtype == torch.int64


def test_select_classes_rejects_missing_or_repeated_classes() -> None:
    labels = torch.tensor([0, 1, 2])
    images = torch.zeros(3, 1, 2, 2)
    with pytest.raises(ValueError, match=r"dataset\.classes.*\[5\]"):
        select_classes(images, labels, [0, 5])
    with pytest.raises(ValueError, match=r"dataset\.classes.*distinct"):
        select_classes(images, labels, [1, 1])


def test_subsample_classes_seeded_sorted_choice() -> None:
    chosen = subsample_classes(100, 10, seed=0)
    assert chosen == sorted(set(chosen)) and len(chosen) == 10
    assert all(0 <= c < 100 for c in chosen)
    assert subsample_classes(100, 10, seed=0) == chosen
    assert subsample_classes(100, 10, seed=1) != chosen
    assert subsample_classes(10, 10, seed=3) == list(range(10))
    with pytest.raises(ValueError, match=r"dataset\.num_classes_subsample.*2\.\.10.*11"):
        subsample_classes(10, 11, seed=0)


# --------------------------------------------------------------------------------------------
# stratified_subset_indices (TH)


def test_stratified_subsets_disjoint_balanced_in_dataset_order() -> None:
    labels = _labels([30, 25, 40])
    size = 10
    subsets = [stratified_subset_indices(labels, 3, size, s) for s in range(2)]
    for s, subset in enumerate(subsets):
        assert torch.equal(subset, subset.sort().values)
        assert torch.bincount(labels[subset], minlength=3).tolist() == [size] * 3
        # Naive reference: per class, positions in dataset order, ranks [s*q, (s+1)*q).
        expected = []
        for c in range(3):
            positions = [i for i, label in enumerate(labels.tolist()) if label == c]
            expected += positions[s * size : (s + 1) * size]
        assert subset.tolist() == sorted(expected)
    assert not set(subsets[0].tolist()) & set(subsets[1].tolist())


def test_stratified_subset_too_few_samples_says_how_many_subsets() -> None:
    labels = _labels([30, 25, 40])
    with pytest.raises(ValueError, match=r"dataset\.train_subset.*class 1.*25.*2 subsets"):
        stratified_subset_indices(labels, 3, 10, 2)


# --------------------------------------------------------------------------------------------
# train_val_split_indices


@pytest.mark.parametrize("stratified", [False, True])
def test_val_split_disjoint_covering_and_sized(stratified: bool) -> None:
    counts = [500, 301, 123, 77, 2]
    labels = _labels(counts)
    total = labels.numel()
    train, val = train_val_split_indices(labels, 0.1, stratified, seed=0)
    assert val.numel() == math.floor(total * 0.1) == 100
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(total))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    again = train_val_split_indices(labels, 0.1, stratified, seed=0)
    assert torch.equal(again[1], val)
    assert not torch.equal(train_val_split_indices(labels, 0.1, stratified, seed=1)[1], val)
    if stratified:
        per_class = torch.bincount(labels[val], minlength=len(counts)).tolist()
        for class_count, val_count in zip(counts, per_class, strict=True):
            assert abs(val_count - class_count * 0.1) < 1


def test_val_split_reads_fraction_as_decimal() -> None:
    labels = _labels([60, 40])
    for stratified in (False, True):
        assert train_val_split_indices(labels, 0.29, stratified, seed=0)[1].numel() == 29


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.3])
def test_val_split_rejects_fraction_outside_open_interval(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"dataset\.val_split.*\(0, 1\)"):
        train_val_split_indices(_labels([5, 5]), fraction, False, seed=0)


# --------------------------------------------------------------------------------------------
# resize_images / resize_pad_images (HP's --upscale, --upscale-padding)


def test_resize_shapes_dtypes_and_closed_forms() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 8, 8), generator=generator, dtype=torch.uint8)
    upscaled = resize_images(images, 20)
    assert upscaled.shape == (3, 3, 20, 20) and upscaled.dtype == torch.uint8
    # Same size is the identity; a constant image stays constant.
    assert torch.equal(resize_images(images, 8), images)
    constant = torch.full((2, 1, 5, 5), 77, dtype=torch.uint8)
    assert (resize_images(constant, 13) == 77).all()
    # Float in, float out, and bilinear doubling of a 1x2 ramp [0, 4] -> [0, 1, 3, 4] per row.
    ramp = torch.tensor([[0.0, 4.0], [0.0, 4.0]]).view(1, 1, 2, 2)
    doubled = resize_images(ramp, 4)
    assert doubled.dtype == torch.float32
    assert torch.allclose(doubled[0, 0, 0], torch.tensor([0.0, 1.0, 3.0, 4.0]))


@pytest.mark.parametrize("size, before, after", [(224, 56, 56), (10, 2, 3), (7, 2, 2)])
def test_resize_pad_zero_border_and_centred_content(size: int, before: int, after: int) -> None:
    images = torch.full((2, 3, 4, 4), 200, dtype=torch.uint8)
    padded = resize_pad_images(images, size)
    inner = size // 2
    assert padded.shape == (2, 3, size, size) and padded.dtype == torch.uint8
    assert before + inner + after == size
    centre = padded[:, :, before : before + inner, before : before + inner]
    assert torch.equal(centre, resize_images(images, inner))
    border = padded.clone()
    border[:, :, before : before + inner, before : before + inner] = 0
    assert (border == 0).all()
    assert int(padded.sum()) == int(centre.sum())


# --------------------------------------------------------------------------------------------
# SZT


def _value(bits: torch.Tensor) -> torch.Tensor:
    return (bits.long() * 2 ** torch.arange(11, -1, -1)).sum(-1)


def test_szt_inputs_all_patterns_lexicographic() -> None:
    inputs = szt_inputs()
    assert inputs.shape == (4096, 12) and inputs.dtype == torch.uint8
    assert torch.equal(_value(inputs), torch.arange(4096))
    assert inputs[1].tolist() == [0] * 11 + [1] and inputs[2048].tolist() == [1] + [0] * 11
    rows = [tuple(row) for row in inputs.tolist()]
    assert rows == sorted(set(rows))


def test_szt_synthetic_labels_rotation_invariant_deterministic() -> None:
    inputs, labels = szt_inputs(), szt_synthetic_labels()
    assert labels.dtype == torch.int64 and torch.equal(labels, szt_synthetic_labels())
    assert torch.bincount(labels).tolist() == [1936, 2160]
    for shift in range(12):
        assert torch.equal(labels[_value(inputs.roll(shift, dims=1))], labels)
    assert torch.equal(labels[_value(inputs.flip(1))], labels)
    # Hand-worked: ones + cyclically adjacent 1-1 pairs >= 9.
    for bits, label in [
        ("000000000000", 0),  # 0 + 0
        ("111111111111", 1),  # 12 + 12
        ("111100000000", 0),  # 4 + 3
        ("111110000000", 1),  # 5 + 4
        ("101010101010", 0),  # 6 + 0
        ("110000000011", 0),  # 4 + 3, one pair across the wrap-around
        ("111011101100", 1),  # 8 + 5
    ]:
        assert labels[int(bits, 2)].item() == label, bits


def test_szt_as_images_shape() -> None:
    images = as_images(szt_inputs())
    assert images.shape == (4096, 1, 1, 12) and images.dtype == torch.float32
    assert torch.equal(images.flatten(1), szt_inputs().float())


def _original_like_labels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.randint(0, 2, (4096,), generator=generator)


@pytest.mark.parametrize("shuffle_rows", [False, True])
def test_load_szt_round_trips_th_format(tmp_path, shuffle_rows: bool) -> None:
    labels = _original_like_labels()
    order = torch.randperm(4096) if shuffle_rows else torch.arange(4096)
    stored = (szt_inputs()[order].clone(), labels[order].to(torch.uint8).clone())
    torch.save(stored, tmp_path / "SZT.pt")
    x, y = load_szt(tmp_path)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x, szt_inputs()) and torch.equal(y, labels)


def test_load_szt_round_trips_var_u_mat(tmp_path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    labels = _original_like_labels()
    order = torch.randperm(4096, generator=torch.Generator().manual_seed(2))
    (tmp_path / "szt").mkdir()
    scipy_io.savemat(
        tmp_path / "szt" / "var_u.mat",
        {"F": szt_inputs()[order].double().numpy(), "y": labels[order][None, :].numpy()},
    )
    x, y = load_szt(str(tmp_path))
    assert torch.equal(x, szt_inputs()) and torch.equal(y, labels)


def test_load_szt_rejects_bad_files(tmp_path) -> None:
    torch.save((szt_inputs(), torch.full((4096,), 2, dtype=torch.uint8)), tmp_path / "SZT.pt")
    with pytest.raises(ValueError, match="labels must be in"):
        load_szt(tmp_path)
    duplicated = szt_inputs().clone()
    duplicated[1] = duplicated[0]
    torch.save((duplicated, torch.zeros(4096, dtype=torch.uint8)), tmp_path / "SZT.pt")
    with pytest.raises(ValueError, match="distinct"):
        load_szt(tmp_path)


def test_load_szt_missing_file_names_root(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_szt(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "SZT.pt" in message and "var_u.mat" in message and "szt_synthetic" in message
