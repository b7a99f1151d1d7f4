"""V-sufficiency / V-minimality per block (latentgeo.analysis.dib) against closed forms."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from latentgeo.analysis import dib
from latentgeo.build import load_run, run_config
from latentgeo.data.datasets import Split
from latentgeo.metrics.dib import dib_labels
from latentgeo.models.base import Backbone, Classifier, Head
from latentgeo.records import RunDir, atomic_write_json, read_metrics
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg

CLASSES = 4
COUNTS = [100, 50, 30, 20]  # unbalanced: max index 99 -> 4 base-4 digits, leading digit 64/36
ADAM = SimpleNamespace(name="adam", lr=1e-2, weight_decay=0.0)
TOLERANCE_BITS = 0.03


def entropy_bits(values: torch.Tensor) -> float:
    """Naive −Σ p log₂ p of the empirical distribution of ``values``."""
    _, counts = values.unique(return_counts=True)
    p = counts.double() / len(values)
    return float(-(p * p.log2()).sum())


def class_pixel_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 1, 1, C] whose pixel y is 255 and the others 0, in shuffled class order."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    images = torch.zeros(len(labels), 1, 1, CLASSES, dtype=torch.uint8)
    images[torch.arange(len(labels)), 0, 0, labels] = 255
    return images, labels


def probe_model(batch_norm: bool = False) -> Classifier:
    """stem Flatten -> ``onehot`` (Identity: with mean 0, std 1 normalisation its output is the
    one-hot label) -> ``const`` (Linear with zero weights: a constant) -> ``mix`` -> no_pen head.
    With ``batch_norm`` the ``onehot`` block is a BatchNorm1d with non-trivial running stats."""
    torch.manual_seed(0)
    const = nn.Linear(CLASSES, CLASSES)
    with torch.no_grad():
        const.weight.zero_()
        const.bias.fill_(1.0)
    onehot: nn.Module = nn.Identity()
    if batch_norm:
        onehot = nn.BatchNorm1d(CLASSES)
        onehot.running_mean.fill_(0.25)
        onehot.running_var.fill_(0.5)
    backbone = Backbone(nn.Flatten(), [("onehot", onehot), ("const", const),
                                       ("mix", nn.Sequential(nn.Linear(CLASSES, 16), nn.ReLU()))],
                        nn.Identity(), feature_dim=16)
    return Classifier(backbone, Head("no_pen", 16, CLASSES, penultimate_nodes=2))


def probe_split() -> Split:
    return Split(*class_pixel_data())


NO_NORMALISATION = (torch.zeros(1), torch.ones(1))  # mean 0, std 1: the images as they are
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def probe_values() -> dict[str, float]:
    return dib.dib_metrics(probe_model(), {"train": probe_split()}, *NO_NORMALISATION,
                           CLASSES, ADAM, ["onehot", "const"], epochs=30, seed=0, batch_size=32)


def test_vsufficiency_is_label_entropy_for_a_one_hot_block_and_zero_for_a_constant(
        probe_values):
    _, labels = class_pixel_data()
    h_y = entropy_bits(labels)
    assert h_y == pytest.approx(1.7427, abs=1e-4)  # unbalanced, not log₂ 4 = 2
    # the decoder after a one-hot block reaches CE ≈ 0; after a constant, CE ≈ H(Y)·ln 2
    assert probe_values["dib/vsuff/onehot/train"] == pytest.approx(h_y, abs=TOLERANCE_BITS)
    assert probe_values["dib/vsuff/const/train"] == pytest.approx(0.0, abs=TOLERANCE_BITS)
    assert probe_values["dib/vsuff/onehot/train"] <= h_y  # CE ≥ 0


def test_vminimality_uses_empirical_digit_entropies(probe_values):
    _, labels = class_pixel_data()
    digits = dib_labels(labels, CLASSES)
    assert digits.shape[1] == 4
    # a decoder that sees only the class can reach CE_k = H(Y_k | Y), so
    # vmin(onehot) = mean_k I(Y_k; Y) = mean_k [H(Y_k) − Σ_c p_c H(Y_k | Y = c)] (naive counts)
    mutual = []
    for k in range(digits.shape[1]):
        conditional = sum((labels == c).double().mean().item()
                          * entropy_bits(digits[labels == c, k]) for c in range(CLASSES))
        mutual.append(entropy_bits(digits[:, k]) - conditional)
    expected = sum(mutual) / len(mutual)
    assert expected == pytest.approx(0.0993, abs=1e-4)
    assert probe_values["dib/vmin/onehot/train"] == pytest.approx(expected, abs=TOLERANCE_BITS)
    # a constant keeps no digit information: ≈ 0 with empirical H(Y_k); TH's log₂ C would
    # report mean_k (2 − H(Y_k)) ≈ 0.38 bits here
    th_value = sum(2 - entropy_bits(digits[:, k]) for k in range(4)) / 4
    assert th_value > 0.3
    assert probe_values["dib/vmin/const/train"] == pytest.approx(0.0, abs=TOLERANCE_BITS)


def test_cached_and_recomputed_encoder_outputs_give_the_same_values():
    model, split = probe_model(batch_norm=True), probe_split()
    encoder = dib.FrozenEncoder(model.backbone)
    features = dib.EncodedSplit(encoder, 1, split, *NO_NORMALISATION, CPU, 1000)
    assert features.cached and features.bytes_needed == sum(COUNTS) * CLASSES * 4
    assert not dib.EncodedSplit(encoder, 1, split, *NO_NORMALISATION, CPU, 1000, 0).cached
    kwargs = dict(blocks=["stem", "onehot"], epochs=3, seed=1, batch_size=32)
    cached = dib.dib_metrics(model, {"train": split}, *NO_NORMALISATION, CLASSES, ADAM, **kwargs)
    recomputed = dib.dib_metrics(model, {"train": split}, *NO_NORMALISATION, CLASSES, ADAM,
                                 max_cache_bytes=0, **kwargs)
    assert cached.keys() == recomputed.keys()
    for key in cached:
        assert cached[key] == pytest.approx(recomputed[key], abs=1e-5), key


@pytest.mark.parametrize("max_cache_bytes", [dib.MAX_CACHE_BYTES, 0])
def test_frozen_encoder_runs_in_eval_mode_with_unchanged_weights(max_cache_bytes):
    model = probe_model(batch_norm=True)
    batch_norm = model.backbone.blocks["onehot"]
    seen = []
    # deep copies keep forward hooks: every call of the encoder copy's BN is recorded
    batch_norm.register_forward_hook(lambda m, _i, _o: seen.append(
        (m.training, m.running_mean.clone(), m.running_var.clone(), m.weight.detach().clone())))
    dib.dib_metrics(model, {"train": probe_split()}, *NO_NORMALISATION,
                    CLASSES, ADAM, ["onehot"], epochs=2,
                    seed=0, batch_size=32, max_cache_bytes=max_cache_bytes)
    # cached: one pass (+ the shape probe); recomputed: every step of 2 decoder sets × 2 epochs
    assert len(seen) == (1 + 1 if max_cache_bytes else 1 + 2 * 2 * 7)
    for training, mean, var, weight in seen:
        assert not training
        assert torch.equal(mean, torch.full((CLASSES,), 0.25))
        assert torch.equal(var, torch.full((CLASSES,), 0.5))
        assert torch.equal(weight, torch.ones(CLASSES))
    encoder = dib.FrozenEncoder(model.backbone)
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())


def test_the_measured_model_is_left_untouched():
    model = probe_model(batch_norm=True)
    model.train()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    dib.dib_metrics(model, {"train": probe_split()}, *NO_NORMALISATION,
                    CLASSES, ADAM, None, epochs=1, seed=0,
                    batch_size=64)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_decoders_are_reset_and_hold_no_encoder_part():
    model = probe_model(batch_norm=True)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    decoder = dib.reset_decoder(model, 1)
    assert isinstance(decoder.backbone.stem, nn.Identity)
    assert isinstance(decoder.backbone.blocks["onehot"], nn.Identity)
    for name in ("const", "mix"):
        for p in decoder.backbone.blocks[name].parameters():
            assert not torch.all(p == 3.0), name  # re-drawn by reset_parameters
    assert not torch.all(decoder.head.output[0].weight == 3.0)
    # the decoder part reads h after block 1: its forward equals Classifier.decode's
    h = torch.randn(5, CLASSES)
    assert torch.equal(decoder.decode(h, 1)[0], decoder.head(decoder.backbone.decode(h, 1))[0])
    assert dib.dib_block_names(model) == ["stem", "onehot", "const", "mix"]
    assert dib.static_blocks(model) == ["stem"]  # Flatten stem: b = 0 never changes
    with pytest.raises(ValueError, match=r"\['layer9'\] not among the DIB blocks"):
        dib.dib_metrics(model, {"train": probe_split()}, *NO_NORMALISATION,
                    CLASSES, ADAM, ["layer9"], 1, 0)


def test_auto_lr_runs_read_the_suggestion_from_lr_find_json(tmp_path):
    tree = OmegaConf.to_container(compose_cfg(TINY + ["optimizer=sgd", "optimizer.lr=auto"]))
    atomic_write_json(tmp_path / "lr_find.json", {"suggestion": 0.0123})
    assert run_config(RunDir(tmp_path), tree).optimizer.lr == 0.0123
    assert tree["optimizer"]["lr"] == "auto"
    with pytest.raises(FileNotFoundError, match="lr_find.json"):
        run_config(RunDir(tmp_path / "elsewhere"), tree)


def test_cli_appends_dib_keys_of_a_real_tiny_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(compose_cfg(TINY + ["dataset.num_classes=4", "metrics=none",
                              "trainer.snapshot_epochs=[1]"]), run_dir)
    events = read_metrics(run_dir / "metrics.jsonl")
    assert dib.main([str(run_dir), "--epoch", "1", "--blocks", "layer3", "layer4",
                     "--epochs", "2", "--minimality-epochs", "2"]) == 0
    event = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert len(read_metrics(run_dir / "metrics.jsonl")) == len(events) + 1
    assert event["epoch"] == 1 and event["step"] == 512 // 32
    keys = {f"dib/{m}/{b}/{s}" for m in ("vsuff", "vmin") for b in ("layer3", "layer4")
            for s in ("train", "test")}
    assert keys <= event.keys()
    # the CLI rebuilt model, data and loaders as training did: same test accuracy at epoch 1,
    # and the same values as dib_metrics on that rebuilt run
    run = load_run(run_dir, 1)
    assert dib.static_blocks(run.model) == []  # the ResNet stem is trained
    logits = torch.cat([run.model.eval()(x)[0] for x, _ in run.loaders.eval["test"].epoch()])
    accuracy = (logits.argmax(1) == run.data.test.y).double().mean().item()
    assert accuracy == pytest.approx(events[0]["test/accuracy"], abs=1e-12)
    direct = dib.dib_metrics(run.model, {s: getattr(run.data, s) for s in ("train", "test")},
                             run.data.mean, run.data.std, 4, run.cfg.optimizer, ["layer4"], 2,
                             run.cfg.trainer.seed, batch_size=32,
                             chunk_size=run.cfg.trainer.eval_batch_size)
    for key, value in direct.items():
        assert event[key] == pytest.approx(value, abs=1e-6), key
    for split in ("train", "test"):
        h_y = entropy_bits(getattr(run.data, split).y)
        for block in ("layer3", "layer4"):
            assert event[f"dib/vsuff/{block}/{split}"] <= h_y  # CE ≥ 0
    out = capsys.readouterr().out
    assert "vsuff/train" in out and "layer4" in out
    assert dib.main([str(run_dir), "--epoch", "7"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert math.isfinite(event["time/dib_s"])
