"""The two loaders — device-resident ``TensorLoader`` and the torchvision DataLoader path
``TorchLoader`` — yield the same batches and the same augmentation statistics; and the trainer
switches (channels_last, bf16 autocast, torch.compile) reproduce fp32 predictions within
stated tolerances on a tiny trained model."""

from __future__ import annotations

import copy
import os
import time

import pytest
import torch

from latentgeo.data import Split, TensorLoader, load_synthetic
from latentgeo.data.datasets import channel_stats
from latentgeo.data.tensor_loader import PAD, normalize
from latentgeo.data.torch_loader import TorchLoader
from latentgeo.loop import build_optimizer, classifier_loss, train_epoch
from latentgeo.models import build_model
from latentgeo.runtime import separate_compile_cache
from tests.conftest import TINY, compose_cfg

CPU = torch.device("cpu")
LOADERS = {"tensor": TensorLoader, "torch": TorchLoader}


def identified_split(n: int, image_size: int = 8) -> tuple[Split, torch.Tensor, torch.Tensor]:
    """Synthetic images whose labels are their indices, so a batch names its samples."""
    data = load_synthetic(image_size, 3, 4, n, 10, seed=0)
    return Split(data.train.x, torch.arange(n)), data.mean, data.std


def as_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of a batch of (unaugmented) images."""
    pixels = (x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)) * 255
    return pixels.round().to(torch.uint8)


# ---------------------------------------------------------------------------- same batches


@pytest.mark.parametrize("shuffle", [False, True])
def test_torch_loader_yields_the_tensor_loader_batches_without_augmentation(shuffle):
    split, mean, std = identified_split(150)
    tensor = TensorLoader(split, mean, std, 32, CPU, shuffle=shuffle, seed=5)
    torch_ = TorchLoader(split, mean, std, 32, CPU, shuffle=shuffle, seed=5)
    assert len(tensor) == len(torch_) == 5 and tensor.num_samples == torch_.num_samples == 150
    assert torch_.device == CPU
    for epoch in (1, 2):
        a, b = list(tensor.epoch(epoch)), list(torch_.epoch(epoch))
        assert [y.tolist() for _, y in b] == [y.tolist() for _, y in a]  # same samples, order
        for (xa, ya), (xb, _) in zip(a, b):
            assert xb.dtype == torch.float32 and xb.shape == xa.shape
            assert torch.equal(as_uint8(xb, mean, std), split.x[ya])
            # v2.ToDtype multiplies by 1/255 where normalize() divides: ≤ 1 ulp apart, then
            # Normalize divides by std ≈ 0.15 -> ≤ 5e-7 after normalisation
            torch.testing.assert_close(xb, xa, rtol=0, atol=2e-6)
    tensor.channels_last = torch_.channels_last = True  # trainer.channels_last: NHWC batches
    (xa, _), (xb, _) = next(tensor.epoch(1)), next(torch_.epoch(1))
    assert xb.is_contiguous(memory_format=torch.channels_last) and xb.shape == xa.shape
    torch.testing.assert_close(xb, xa, rtol=0, atol=2e-6)
    order = torch.cat([y for _, y in tensor.epoch(1)])
    assert sorted(order.tolist()) == list(range(150))
    assert (not torch.equal(order, torch.arange(150))) == shuffle


def test_worker_processes_give_the_same_batches_and_reproducible_augmentation():
    split, mean, std = identified_split(96)
    tensor = TensorLoader(split, mean, std, 32, CPU, shuffle=True, seed=1)
    plain = TorchLoader(split, mean, std, 32, CPU, shuffle=True, seed=1, num_workers=2)
    for (xa, ya), (xb, yb) in zip(tensor.epoch(3), plain.epoch(3), strict=True):
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xb, xa, rtol=0, atol=2e-6)
    augmented = TorchLoader(split, mean, std, 32, CPU, shuffle=True, augment=True, seed=1,
                            num_workers=2)
    first = torch.cat([x for x, _ in augmented.epoch(3)])
    assert torch.equal(first, torch.cat([x for x, _ in augmented.epoch(3)]))  # seeded workers
    assert not torch.equal(first, torch.cat([x for x, _ in augmented.epoch(4)]))


def test_in_process_augmentation_is_seeded_per_epoch_and_leaves_the_global_rng_alone():
    split, mean, std = identified_split(64)
    loader = TorchLoader(split, mean, std, 16, CPU, shuffle=True, augment=True, seed=2)
    before = torch.get_rng_state()
    first = torch.cat([x for x, _ in loader.epoch(1)])
    assert torch.equal(torch.get_rng_state(), before)  # dropout etc. see an untouched stream
    torch.manual_seed(123)  # a different global state changes nothing
    assert torch.equal(first, torch.cat([x for x, _ in loader.epoch(1)]))
    assert not torch.equal(first, torch.cat([x for x, _ in loader.epoch(2)]))


# ---------------------------------------------------------------------------- augmentation


def ramp_split(n: int, size: int = 12) -> Split:
    """n copies of one image: channel 0 rises along columns, channel 1 along rows, so a flip
    and a (dy, dx) shift can be read back from any crop."""
    ramp = 20 + 15 * torch.arange(size)  # 20..185: no pixel equals a channel mean
    image = torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size)])
    return Split(image.to(torch.uint8).expand(n, -1, -1, -1).contiguous(),
                 torch.zeros(n, dtype=torch.int64))


def identify_crops(out: torch.Tensor, image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(flip, dy, dx) of every augmented image, by matching it against all 2·9·9 flips and
    crops of the zero-padded (= channel-mean-padded) normalised image."""
    size = image.shape[-1]
    z = normalize(image[None], mean, std)[0]
    candidates, keys = [], []
    for flip in (0, 1):
        padded = torch.nn.functional.pad(z.flip(2) if flip else z, (PAD,) * 4)
        for dy in range(2 * PAD + 1):
            for dx in range(2 * PAD + 1):
                candidates.append(padded[:, dy:dy + size, dx:dx + size].flatten())
                keys.append((flip, dy - PAD, dx - PAD))
    candidates = torch.stack(candidates)
    assert torch.pdist(candidates).min() > 0.1  # every (flip, dy, dx) looks different
    distance = torch.cdist(out.flatten(1), candidates, compute_mode="donot_use_mm_for_euclid_dist")
    best = distance.argmin(1)
    # each output IS one crop within the padded bounds, padding = channel mean
    assert distance.min(1).values.max() < 1e-4
    flip, dy, dx = torch.tensor(keys)[best].unbind(1)
    return flip, dy, dx


def test_both_loaders_flip_half_and_crop_uniformly_within_the_padding():
    n = 2000
    split = ramp_split(n)
    mean, std = channel_stats(split.x)
    flip_rates = {}
    for name, cls in LOADERS.items():
        loader = cls(split, mean, std, 250, CPU, shuffle=True, augment=True, seed=0)
        out = torch.cat([x for x, _ in loader.epoch(1)])
        flip, dy, dx = identify_crops(out, split.x[0], mean, std)
        flip_rates[name] = flip.double().mean().item()
        assert abs(flip_rates[name] - 0.5) < 4 * (0.25 / n) ** 0.5, name  # 4 binomial σ
        for shift in (dy, dx):
            counts = torch.bincount(shift + PAD, minlength=2 * PAD + 1).double()
            assert len(counts) == 2 * PAD + 1 and counts.min() > 0, name  # -4..4, all seen
            expected = n / (2 * PAD + 1)
            chi2 = ((counts - expected) ** 2 / expected).sum().item()
            assert chi2 < 26.1, (name, counts.tolist())  # χ²(8) 99.9% quantile: uniform
        # flip and shift are drawn independently: the shift histogram is the same either way
        assert abs(dx[flip == 1].double().mean() - dx[flip == 0].double().mean()) < 0.5
    assert abs(flip_rates["tensor"] - flip_rates["torch"]) < 4 * (0.5 / n) ** 0.5


# ---------------------------------------------------------------------------- switches
# Tolerances, measured on this CPU for resnet18 (width 8) after 2 epochs on 3x16x16 synthetic
# data (256 test images), as relative Frobenius error of the logits ||Δ|| / ||fp32||:
#   channels_last ~2e-7 (same arithmetic, other summation order) -> asserted ≤ 1e-5;
#   bf16 autocast ~4e-3, argmax 100% identical                   -> asserted ≤ 2e-2, ≥ 95%.

CHANNELS_LAST_TOLERANCE = 1e-5
BF16_TOLERANCE = 2e-2
BF16_MIN_AGREEMENT = 0.95


def relative_error(a: torch.Tensor, reference: torch.Tensor) -> float:
    return ((a.float() - reference).norm() / reference.norm()).item()


@pytest.fixture(scope="module")
def tiny_trained():
    """(cfg, model trained 2 epochs, test images, test labels) — an untrained model predicts
    one class everywhere, which would make argmax agreement meaningless."""
    cfg = compose_cfg(TINY + ["model.width=8", "dataset.image_size=16"])
    data = load_synthetic(16, 3, 10, 512, 256, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg, data.input_shape, data.num_classes)
    optimizer = build_optimizer(cfg.optimizer, model)
    train = TensorLoader(data.train, data.mean, data.std, 32, CPU, shuffle=True)
    for epoch in (1, 2):
        train_epoch(model, train, optimizer, epoch, classifier_loss(0.01))
    x, y = next(iter(TensorLoader(data.test, data.mean, data.std, 256, CPU)))
    model.eval()
    with torch.no_grad():
        reference = model(x)[0]
    assert (reference.argmax(1) == y).double().mean() > 0.5  # it learned: predictions vary
    return cfg, model, x, y, reference, data


def test_channels_last_predictions_equal_fp32(tiny_trained):
    _, model, x, _, reference, _ = tiny_trained
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        logits = model_cl(x.contiguous(memory_format=torch.channels_last))[0]
    assert relative_error(logits, reference) < CHANNELS_LAST_TOLERANCE
    assert torch.equal(logits.argmax(1), reference.argmax(1))


def test_bf16_autocast_predictions_match_fp32_loosely(tiny_trained):
    _, model, x, _, reference, _ = tiny_trained
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)[0]
    assert logits.dtype == torch.bfloat16  # autocast was really on
    assert relative_error(logits, reference) < BF16_TOLERANCE
    assert (logits.argmax(1) == reference.argmax(1)).double().mean() >= BF16_MIN_AGREEMENT


def test_train_epoch_with_switches_follows_fp32(tiny_trained):
    """loop.train_epoch from one state over the same 4 batches: channels_last gives the
    fp32 running loss to 1e-5, bf16 autocast (``autocast_dtype``) to 5e-2."""
    cfg, model, _, _, _, data = tiny_trained
    loader = TensorLoader(Split(data.train.x[:128], data.train.y[:128]), data.mean, data.std,
                          32, CPU, shuffle=True, seed=3)

    def running_loss(memory_format=torch.contiguous_format, autocast_dtype=None) -> float:
        replica = copy.deepcopy(model).to(memory_format=memory_format)
        optimizer = build_optimizer(cfg.optimizer, replica)
        loss_fn = classifier_loss(0.01)

        def converted(m, x, y):
            return loss_fn(m, x.contiguous(memory_format=memory_format), y)

        return train_epoch(replica, loader, optimizer, 3, converted,
                           autocast_dtype=autocast_dtype)["train/running_loss"]

    fp32 = running_loss()
    assert running_loss(torch.channels_last) == pytest.approx(fp32, rel=1e-5)
    assert running_loss(autocast_dtype=torch.bfloat16) == pytest.approx(fp32, rel=5e-2)


def test_each_aten_capability_compiles_into_its_own_inductor_cache(monkeypatch):
    """Inductor's cache does not key on ATEN_CPU_CAPABILITY (a natively filled cache gave a
    wrong compiled loss under avx2): runtime.separate_compile_cache gives each its own dir,
    and leaves a dir the user chose, or a native run, alone."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    separate_compile_cache()
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    dirs = {}
    for capability in ("avx2", "default"):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", capability)
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        separate_compile_cache()
        dirs[capability] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert dirs["avx2"] != dirs["default"] and all(k in d for k, d in dirs.items())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/chosen")
    separate_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/chosen"


@pytest.mark.slow
def test_compiled_train_step_equals_eager():
    """torch.compile on a tiny MLP: one training step's logits, loss and gradients equal eager
    to 1e-5. Costs ≈ 40 s on a cold inductor cache on 2 CPU cores (≈ 3 s warm)."""
    cfg = compose_cfg(TINY + ["model=mlp", "model.width=null", "model.widths=[16]",
                              "head=no_pen"])
    torch.manual_seed(0)
    eager = build_model(cfg, (1, 8, 8), 4)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,))
    loss_fn = classifier_loss(None)
    tic = time.perf_counter()
    loss_c, hits_c = loss_fn(compiled, x, y)
    loss_c.backward()
    print(f"compile + first step: {time.perf_counter() - tic:.1f} s")
    loss_e, hits_e = loss_fn(eager, x, y)
    loss_e.backward()
    assert loss_c.item() == pytest.approx(loss_e.item(), rel=1e-5)
    assert hits_c.item() == hits_e.item()
    torch.testing.assert_close(compiled(x)[0], eager(x)[0], rtol=1e-5, atol=1e-6)
    for p_c, p_e in zip(twin.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-5, atol=1e-7)
