"""Datasets (offline mirror, digits, synthetic), channel statistics and the tensor loader."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from latentgeo.data import DatasetUnavailable, TensorLoader, load_dataset, load_digits
from latentgeo.data.datasets import SYSTEM_MIRRORS, channel_stats, load_synthetic
from latentgeo.data.tensor_loader import normalize, random_crop_flip
from tests.conftest import compose_cfg

FASHION_MIRROR = SYSTEM_MIRRORS["FashionMNIST"][0]


def dataset_cfg(name, root, download=False):
    return compose_cfg([f"dataset={name}", f"dataset.root={root}",
                        f"dataset.download={str(download).lower()}"]).dataset


def test_fashion_mnist_loads_from_the_debian_mirror(tmp_path):
    if not FASHION_MIRROR.is_dir():
        if os.environ.get("LATENTGEO_REQUIRE_DATA") == "1":
            pytest.fail(f"LATENTGEO_REQUIRE_DATA=1 but {FASHION_MIRROR} is missing "
                        "(apt-get install dataset-fashion-mnist)")
        pytest.skip(f"{FASHION_MIRROR} missing: apt-get install dataset-fashion-mnist")
    data = load_dataset(dataset_cfg("fashion_mnist", tmp_path))
    assert data.train.x.shape == (60000, 1, 28, 28) and data.train.x.dtype == torch.uint8
    assert data.test.x.shape == (10000, 1, 28, 28)
    assert data.num_classes == 10
    assert data.train.y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the real data set
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    # the gunzipped copy is in torchvision's layout, so a second load needs no mirror
    assert (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_missing_dataset_offline_names_where_it_looked(tmp_path):
    with pytest.raises(DatasetUnavailable) as error:
        load_dataset(dataset_cfg("cifar10", tmp_path / "nowhere", download=False))
    message = str(error.value)
    assert "cifar10" in message and str(tmp_path / "nowhere") in message
    assert "dataset.download" in message and "dataset=digits" in message


def test_channel_stats_equal_numpy_population_std():
    x = torch.randint(0, 256, (50, 3, 5, 7), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.numpy().astype(np.float64) / 255.0
    np.testing.assert_allclose(mean.numpy(), ref.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), ref.std(axis=(0, 2, 3)), rtol=1e-5)


def test_digits_are_upscaled_padded_and_split_stratified():
    data = load_digits(image_size=28, channels=3, seed=0)
    assert data.input_shape == (3, 28, 28)
    assert len(data.train) + len(data.test) == 1797
    # factor 3 -> 24x24 content, 2 pixels of zero padding on each side
    assert data.train.x[:, :, :2].max() == 0 and data.train.x[:, :, :, -2:].max() == 0
    counts = torch.bincount(data.test.y, minlength=10).float()
    assert counts.min() >= 34 and counts.max() <= 38  # 20% of 174..183 per class
    again = load_digits(image_size=28, channels=3, seed=0)
    assert torch.equal(again.test.y, data.test.y)


def test_synthetic_is_seeded_and_class_structured():
    a = load_synthetic(12, 2, 5, 100, 50, seed=3)
    b = load_synthetic(12, 2, 5, 100, 50, seed=3)
    assert torch.equal(a.train.x, b.train.x) and a.input_shape == (2, 12, 12)
    assert torch.bincount(a.train.y).tolist() == [20] * 5
    # nearest class mean classifies the test split far above chance
    x_train, x_test = a.train.x.flatten(1).float(), a.test.x.flatten(1).float()
    means = torch.stack([x_train[a.train.y == c].mean(0) for c in range(5)])
    predicted = torch.cdist(x_test, means).argmin(1)
    assert (predicted == a.test.y).float().mean() > 0.8


def test_loader_without_augmentation_yields_normalised_batches_in_order():
    data = load_synthetic(8, 3, 4, 70, 10, seed=0)
    loader = TensorLoader(data.train, data.mean, data.std, batch_size=32,
                          device=torch.device("cpu"))
    batches = list(loader.epoch(5))
    assert [len(y) for _, y in batches] == [32, 32, 6] and len(loader) == 3
    x = torch.cat([b for b, _ in batches])
    ref = (data.train.x.double() / 255 - data.mean.double().view(1, -1, 1, 1)) / data.std.double(
    ).view(1, -1, 1, 1)
    torch.testing.assert_close(x.double(), ref, rtol=0, atol=1e-5)


def test_shuffle_is_a_seeded_permutation_per_epoch():
    data = load_synthetic(4, 1, 2, 50, 10, seed=0)
    data.train.y = torch.arange(50)  # make labels identify samples
    loader = TensorLoader(data.train, data.mean, data.std, 16, torch.device("cpu"), shuffle=True,
                          seed=7)
    order = torch.cat([y for _, y in loader.epoch(1)])
    assert sorted(order.tolist()) == list(range(50))
    assert torch.equal(order, torch.cat([y for _, y in loader.epoch(1)]))
    assert not torch.equal(order, torch.cat([y for _, y in loader.epoch(2)]))


def test_augmentation_flips_half_and_crops_within_the_padding():
    torch.manual_seed(0)
    n, h = 4000, 16
    # each image is a distinct ramp, so flips and shifts can be read back exactly
    base = torch.arange(h * h, dtype=torch.float32).view(1, 1, h, h) + 1
    x = base.expand(n, 1, h, h).clone()
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, generator, pad=4)
    flipped = x.flip(3)
    padded = torch.nn.functional.pad(torch.cat([x[:1], flipped[:1]]), (4, 4, 4, 4))
    flips, shifts = 0, set()
    for i in range(0, n, 97):  # sample of images: identify (flip, dy, dx) by matching
        matches = [(f, dy, dx) for f in (0, 1) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[f, :, dy:dy + h, dx:dx + h], out[i])]
        assert len(matches) >= 1
        flips += matches[0][0]
        shifts.add(matches[0][1:])
    sampled = len(range(0, n, 97))
    assert abs(flips / sampled - 0.5) < 0.2
    assert len(shifts) > 10
    # flip rate over the whole batch: columns 7 and 8 come from inside the image for every
    # shift (|shift| <= 4), so the ramp's direction there says exactly whether it was flipped
    flipped_rate = (out[:, 0, 8, 8] < out[:, 0, 8, 7]).float().mean().item()
    assert abs(flipped_rate - 0.5) < 4 * (0.25 / n) ** 0.5


def test_normalize_matches_formula():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.25, 2.0])
    ref = (x.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x, mean, std), ref)


def test_dataset_options_compose_in_order_on_a_real_bundle():
    cfg = compose_cfg(["dataset=synthetic", "dataset.image_size=8", "dataset.train_size=400",
                       "dataset.test_size=200", "dataset.classes=[3,1,2]",
                       "dataset.train_subset.size_per_class=30", "dataset.val_split=0.2",
                       "dataset.label_noise=1.0", "dataset.resize_pad=16"]).dataset
    clean = load_dataset(compose_cfg(["dataset=synthetic", "dataset.image_size=8",
                                      "dataset.train_size=400", "dataset.test_size=200"]).dataset)
    data = load_dataset(cfg)
    assert data.num_classes == 3 and data.input_shape == (3, 16, 16)
    assert len(data.train) + len(data.val) == 90 and len(data.val) == 18  # 3 classes × 30
    assert torch.bincount(data.val.y, minlength=3).tolist() == [6, 6, 6]  # stratified, clean
    # test split: only classes 3, 1, 2 relabelled 0, 1, 2 in that order
    expected = torch.tensor([3, 1, 2])[data.test.y]
    assert torch.equal(torch.sort(expected).values,
                       torch.sort(clean.test.y[torch.isin(clean.test.y, expected)]).values)
    # resize_pad: content in the centre 8x8, zero border of 4
    assert data.test.x[:, :, :4].max() == 0 and data.test.x[:, :, -4:].max() == 0
    # label noise 1.0: every train label differs from the clean pipeline's (same images)
    noiseless = load_dataset(compose_cfg(["dataset=synthetic", *(f"dataset.{k}={v}" for k, v in (
        ("image_size", 8), ("train_size", 400), ("test_size", 200),
        ("classes", "[3,1,2]"), ("train_subset.size_per_class", 30), ("val_split", 0.2),
        ("resize_pad", 16)))]).dataset)
    assert torch.equal(noiseless.train.x, data.train.x)
    assert (noiseless.train.y != data.train.y).all() and data.train.y.max() <= 2
