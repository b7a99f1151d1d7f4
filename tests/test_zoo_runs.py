"""Every backbone × every head: the outputs of every block, a loss that falls on a fixed batch,
determinism under a seed, encode/decode at every split point — and one real training epoch
per backbone (the zoo's end-to-end test), the head cycling through the four."""

from __future__ import annotations

import math

import pytest
import torch

from latentgeo.models import HEADS, MODELS, build_model
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import compose_cfg

NEEDS_32 = ("vgg", "convnext_t", "resnet18_tv")  # ImageNet-style downsampling
NO_WIDTH = ("mlp", "lenet")
NATIVE_ACTIVATION = {"resnet18_tv": "relu", "convnext_t": "gelu"}
CLASSES, NODES, BATCH = 10, 6, 8


def image_size(model: str) -> int:
    return 32 if model.startswith(NEEDS_32) else 28 if model == "mnistnet" else 8


def overrides(model: str, head: str) -> list[str]:
    return [
        f"model={model}", f"model.width={'null' if model in NO_WIDTH else 8}",
        "model.widths=[16]", f"head={head}", "dataset=synthetic",
        f"dataset.image_size={image_size(model)}", "dataset.train_size=32",
        "dataset.test_size=32", "trainer.epochs=1", "trainer.batch_size=32", "metrics=none",
        "logger=local", "trainer.progress=false",
        *([f"model.activation={NATIVE_ACTIVATION[model]}"] if model in NATIVE_ACTIVATION else []),
    ]


def built(model: str, head: str, seed: int = 0) -> torch.nn.Module:
    cfg = compose_cfg(overrides(model, head))
    torch.manual_seed(seed)
    return build_model(cfg, (3, image_size(model), image_size(model)), CLASSES)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_with_every_head_has_sound_outputs_and_learns_a_fixed_batch(model):
    """Every head: logits and x_pen shapes, finite block outputs, encode/decode at every split
    point. The first head: determinism under a seed, and learning a fixed batch."""
    size = image_size(model)
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(1))
    y = torch.arange(BATCH) % CLASSES
    for head in HEADS:
        net = built(model, head)
        net.eval()
        with torch.no_grad():
            logits, x_pen = net(x)
            h = x
            outputs = {"stem": net.backbone.stem(h)}
            h = outputs["stem"]
            for name, block in net.backbone.blocks.items():
                h = outputs[name] = block(h)
        width = NODES if head in ("bin_enc", "lin_pen", "nonlin_pen") else \
            net.backbone.feature_dim
        assert logits.shape == (BATCH, CLASSES) and x_pen.shape == (BATCH, width), head
        assert all(o.shape[0] == BATCH and torch.isfinite(o).all() for o in outputs.values())
        # every split point: encode to block b, decode the rest = the whole network
        for b in range(len(net.backbone.block_names) + 1):
            with torch.no_grad():
                again, _ = net.decode(net.backbone.encode(x, b), b)
            assert torch.allclose(again, logits, atol=1e-5), (head, b)
        if head != next(iter(HEADS)):
            continue
        # the same seed builds the same network; another seed another one
        same, other = built(model, head, 0), built(model, head, 1)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                     same.state_dict().values()))
        assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                         other.state_dict().values()))
        # a few steps on one fixed batch lower its loss (measured in eval mode: VGG's and
        # LeNet's dropout make train-mode losses noisy)
        before = eval_loss(net, x, y)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(net(x)[0], y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        after = eval_loss(net, x, y)
        assert math.isfinite(after) and after < before, (before, after)


def eval_loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(net(x)[0], y).item()


@pytest.mark.parametrize("index, model", list(enumerate(sorted(MODELS))))
def test_every_model_trains_one_real_epoch(index, model, tmp_path):
    head = list(HEADS)[index % len(HEADS)]  # over the zoo, every head trains for real
    summary = train(compose_cfg(overrides(model, head)), tmp_path)
    run = RunDir(tmp_path)
    assert run.state == "ok" and summary["epochs"] == 1
    (event,) = [e for e in run.events() if e["epoch"] == 1]
    assert math.isfinite(event["train/running_loss"]) and math.isfinite(summary["test/loss"])
    assert summary["test/accuracy"] == event["test/accuracy"]
    assert summary["test/accuracy"] * 32 == round(summary["test/accuracy"] * 32)  # 32 images
