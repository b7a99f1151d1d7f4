"""Backbones (every registered option) x heads: shapes, gradients, hook points, encoder/decoder
splits, one module per activation site, torchvision parameter parity, pretrained weights."""

from __future__ import annotations

import math
import shutil
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
import yaml
from torch import nn
from torchvision.models import WeightsEnum

from latentgeo import models
from latentgeo.models import MODELS
from latentgeo.models.activations import make_activation
from latentgeo.models.base import HEADS, Backbone, BackboneSpec, Classifier, Head
from latentgeo.plugins import import_modules
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import TINY as TINY_RUN
from tests.conftest import compose_cfg

BATCH, NUM_CLASSES, PENULTIMATE = 4, 5, 3
REPO = Path(__file__).resolve().parents[1]
TORCHVISION_BACKED = {"resnet18_tv", "convnext_t", *(f"vgg{d}{bn}" for d in (11, 13, 16, 19)
                                                      for bn in ("", "_bn"))}
# Models that keep torchvision's own activation, and the model.activation they accept.
NATIVE_ACTIVATION = {"resnet18_tv": "relu", "convnext_t": "gelu"}

# Tiny spec per model, the expected block outputs (without the batch dim), and feature_dim.
VGG_STAGES = {"stage1": (4, 16, 16), "stage2": (8, 8, 8), "stage3": (16, 4, 4),
              "stage4": (32, 2, 2), "stage5": (32, 1, 1), "classifier": (256,)}
BE_RESNET_STAGES = {"layer1": (4, 16, 16), "layer2": (8, 8, 8), "layer3": (16, 4, 4),
                    "layer4": (32, 2, 2)}
TINY: dict[str, tuple[BackboneSpec, dict[str, tuple[int, ...]], int]] = {
    "resnet18": (BackboneSpec((3, 16, 16), NUM_CLASSES, width=4), BE_RESNET_STAGES, 32),
    "resnet34": (BackboneSpec((1, 16, 16), NUM_CLASSES, width=4), BE_RESNET_STAGES, 32),
    "resnet50": (BackboneSpec((3, 16, 16), NUM_CLASSES, width=4),
                 {"layer1": (16, 16, 16), "layer2": (32, 8, 8), "layer3": (64, 4, 4),
                  "layer4": (128, 2, 2)}, 128),
    # 32x32: 7x7/2 conv -> 16, max-pool/2 -> 8, then strides 1, 2, 2, 2
    "resnet18_tv": (BackboneSpec((1, 32, 32), NUM_CLASSES, width=4),
                    {"layer1": (4, 8, 8), "layer2": (8, 4, 4), "layer3": (16, 2, 2),
                     "layer4": (32, 1, 1)}, 32),
    "convnext_t": (BackboneSpec((1, 32, 32), NUM_CLASSES, width=8),
                   {"stage1": (8, 8, 8), "stage2": (16, 4, 4), "stage3": (32, 2, 2),
                    "stage4": (64, 1, 1)}, 64),
    "mlp": (BackboneSpec((1, 6, 6), NUM_CLASSES, widths=(16, 8)),
            {"layer1": (16,), "layer2": (8,)}, 8),
    # max-pool 3: 28 -> 9 -> 3 -> 1
    "mnistnet": (BackboneSpec((1, 28, 28), NUM_CLASSES, width=4),
                 {"block1": (4, 9, 9), "block2": (8, 3, 3), "block3": (16, 1, 1)}, 16),
    "cifarnet": (BackboneSpec((3, 16, 16), NUM_CLASSES, width=4),
                 {"block1": (4, 8, 8), "block2": (8, 4, 4), "block3": (16, 2, 2)}, 16),
    "lenet": (BackboneSpec((3, 16, 16), NUM_CLASSES),
              {"stage1": (6, 8, 8), "stage2": (16, 4, 4), "stage3": (64, 2, 2),
               "classifier": (84,)}, 84),
    # 20 -> 10 -> 5 -> 2: flatten keeps 8 * 2 * 2
    "cnn3": (BackboneSpec((3, 20, 20), NUM_CLASSES, width=8),
             {"block1": (8, 10, 10), "block2": (8, 5, 5), "block3": (8, 2, 2)}, 32),
    **{name: (BackboneSpec((1 if name == "vgg11" else 3, 32, 32), NUM_CLASSES, width=4),
              VGG_STAGES, 256)
       for name in TORCHVISION_BACKED if name.startswith("vgg")},
}
# Activation sites per model (calls of the factory).
ACTIVATION_SITES = {
    "resnet18": 1 + 2 * 8, "resnet34": 1 + 2 * 16, "resnet50": 1 + 3 * 16, "mlp": 2,
    "mnistnet": 3, "cifarnet": 6, "lenet": 6 + 2, "cnn3": 3,
    **{f"vgg{depth}{bn}": convs + 2 for depth, convs in ((11, 8), (13, 10), (16, 13), (19, 16))
       for bn in ("", "_bn")},
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def per_channel_activation(channels: int) -> nn.Module:
    """PReLU with one slope per channel: a wrong channel count fails the forward."""
    return nn.PReLU(channels)


def activation_for(name: str):
    if name in NATIVE_ACTIVATION:
        return make_activation(NATIVE_ACTIVATION[name])
    return per_channel_activation


def build_tiny(name: str) -> Backbone:
    torch.manual_seed(0)
    return MODELS[name](TINY[name][0], activation_for(name))


def tiny_input(name: str) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(BATCH, *TINY[name][0].input_shape)


def test_every_registered_model_is_tested_and_has_a_config():
    assert set(MODELS) == set(TINY)
    assert set(ACTIVATION_SITES) == set(MODELS) - set(NATIVE_ACTIVATION)
    configs = {path.stem: yaml.safe_load(path.read_text())
               for path in (REPO / "conf" / "model").glob("*.yaml")}
    assert set(configs) == set(MODELS)
    for name, config in configs.items():
        allowed = {"name", "width", "activation"}
        allowed |= {"widths"} if name == "mlp" else set()
        allowed |= {"pretrained"} if name in TORCHVISION_BACKED else set()
        assert set(config) <= allowed, name
        assert config["name"] == name
        assert config["width"] is None
        be_resnet = name in {"resnet18", "resnet34", "resnet50"}  # BE's configs: SiLU
        expected_activation = "silu" if be_resnet else NATIVE_ACTIVATION.get(name, "relu")
        assert config["activation"] == expected_activation
        assert config.get("pretrained", False) is False


@pytest.mark.parametrize("head_name", HEADS)
@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_step_and_encoder_decoder_split(name, head_name):
    backbone = build_tiny(name)
    _, _, feature_dim = TINY[name]
    assert backbone.feature_dim == feature_dim
    model = Classifier(backbone, Head(head_name, feature_dim, NUM_CLASSES, PENULTIMATE))
    x = tiny_input(name)

    # Classifier.decode(backbone.encode(x, b), b) is the full forward at every split point.
    model.eval()
    with torch.no_grad():
        logits, x_pen = model(x)
        for split in range(len(backbone.block_names) + 1):
            split_logits, split_pen = model.decode(backbone.encode(x, split), split)
            torch.testing.assert_close(split_logits, logits, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(split_pen, x_pen, rtol=1e-5, atol=1e-6)
    code_dim = feature_dim if head_name == "no_pen" else PENULTIMATE
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert x_pen.shape == (BATCH, code_dim)

    # Train mode: gradients reach every block; one SGD step moves them.
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    logits, _ = model(x)
    loss = nn.functional.cross_entropy(logits, torch.arange(BATCH) % NUM_CLASSES)
    loss.backward()
    assert torch.isfinite(loss)
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    after = model.state_dict()
    for part in ["backbone.stem.", *(f"backbone.blocks.{b}." for b in backbone.block_names),
                 "head.output."]:
        keys = [key for key, _ in model.named_parameters() if key.startswith(part)]
        if keys or part != "backbone.stem.":  # only parameter-free stems may be skipped
            assert any(not torch.equal(before[key], after[key]) for key in keys), part


@pytest.mark.parametrize("name", sorted(TINY))
def test_block_hook_points_names_order_and_shapes(name):
    backbone = build_tiny(name)
    _, expected, feature_dim = TINY[name]
    assert backbone.block_names == list(expected)
    seen: list[tuple[str, tuple[int, ...]]] = []
    for block_name, block in backbone.blocks.items():
        block.register_forward_hook(
            lambda _m, _i, out, block_name=block_name: seen.append((block_name, out.shape[1:]))
        )
    backbone.eval()
    with torch.no_grad():
        features = backbone(tiny_input(name))
    assert seen == [(block_name, torch.Size(shape)) for block_name, shape in expected.items()]
    assert features.shape == (BATCH, feature_dim)


@pytest.mark.parametrize("name", sorted(ACTIVATION_SITES))
def test_every_activation_site_is_its_own_module(name):
    made: list[nn.Module] = []

    def recording(channels: int) -> nn.Module:
        made.append(nn.PReLU(channels))
        return made[-1]

    backbone = MODELS[name](TINY[name][0], recording)
    assert len(made) == ACTIVATION_SITES[name]
    occurrences = [m for _, m in backbone.named_modules(remove_duplicate=False)]
    for module in made:
        assert sum(m is module for m in occurrences) == 1


def test_resnet18_activation_channels():
    channels: list[int] = []
    MODELS["resnet18"](TINY["resnet18"][0], lambda c: channels.append(c) or nn.ReLU())
    # stem, then (inside the residual branch, after the sum) for each of the 8 BasicBlocks
    assert channels == [4] + [4] * 4 + [8] * 4 + [16] * 4 + [32] * 4


def test_resnet50_and_vgg11_activation_channels():
    channels: list[int] = []
    MODELS["resnet50"](TINY["resnet50"][0], lambda c: channels.append(c) or nn.ReLU())
    assert channels[:4] == [4, 4, 4, 16]  # stem; 1x1 conv, 3x3 conv, after the sum (x4)
    assert channels[-3:] == [32, 32, 128]
    channels.clear()
    MODELS["vgg11"](TINY["vgg11"][0], lambda c: channels.append(c) or nn.ReLU())
    assert channels == [4, 8, 16, 16, 32, 32, 32, 32, 256, 256]


def test_vgg_width_scales_every_channel_and_the_classifier():
    backbone = MODELS["vgg16_bn"](BackboneSpec((3, 32, 32), 10, width=4), make_activation("relu"))
    convs = [m.out_channels for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]  # torchvision's "D" / 16
    linears = [(m.in_features, m.out_features) for m in backbone.modules()
               if isinstance(m, nn.Linear)]
    assert linears == [(32 * 7 * 7, 256), (256, 256)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in backbone.modules()) == 13


@pytest.mark.parametrize(
    ("name", "input_shape", "width", "feature_dim"),
    [
        ("mnistnet", (1, 32, 32), 4, 16),  # 32 -> 10 -> 3 -> 1
        ("mnistnet", (1, 56, 56), 4, 16 * 2 * 2),  # 56 -> 18 -> 6 -> 2, flattened
        ("cnn3", (3, 32, 32), 2, 2 * 4 * 4),  # UN: 64 * 4 * 4 at width 64
        ("cnn3", (1, 28, 28), 2, 2 * 3 * 3),
        ("cifarnet", (3, 20, 20), 2, 8),  # global max pool: any size
        ("lenet", (1, 28, 28), None, 84),
    ],
)
def test_feature_dim_follows_the_input_size(name, input_shape, width, feature_dim):
    backbone = MODELS[name](BackboneSpec(input_shape, 10, width=width), make_activation("relu"))
    assert backbone.feature_dim == feature_dim
    backbone.eval()
    with torch.no_grad():
        assert backbone(torch.randn(2, *input_shape)).shape == (2, feature_dim)


def test_mlp_defaults_to_th_szt_widths():
    backbone = MODELS["mlp"](BackboneSpec((1, 1, 12), 2), make_activation("tanh"))
    assert backbone.block_names == [f"layer{i}" for i in range(1, 6)]
    linears = [(m.in_features, m.out_features) for m in backbone.modules()
               if isinstance(m, nn.Linear)]
    assert linears == [(12, 10), (10, 7), (7, 5), (5, 4), (4, 3)]
    assert backbone.feature_dim == 3


def test_lenet_uses_hp_xavier_init():
    backbone = MODELS["lenet"](BackboneSpec((3, 32, 32), 10), make_activation("relu"))
    gain = math.sqrt(2.0)
    layers = [m for m in backbone.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 8
    for layer in layers:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # uniform on [-bound, bound], not smaller
        assert torch.count_nonzero(layer.bias) == 0
    assert [m.in_features for m in layers if isinstance(m, nn.Linear)] == [576, 120]


# --- parameter counts at the default width (built on the meta device: no memory, no init) ----


def shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "reference", "final_layer", "first_conv_params_per_channel"),
    [
        ("resnet18_tv", tvm.resnet18, lambda m: m.fc, 7 * 7 * 64),
        ("convnext_t", tvm.convnext_tiny, lambda m: m.classifier[2], 4 * 4 * 96),
        *[(name, getattr(tvm, name), lambda m: m.classifier[6], 3 * 3 * 64)
          for name in sorted(TORCHVISION_BACKED) if name.startswith("vgg")],
    ],
)
def test_torchvision_parameter_parity_at_default_width(
    name, reference, final_layer, first_conv_params_per_channel
):
    activation = make_activation(NATIVE_ACTIVATION.get(name, "relu"))
    with torch.device("meta"):
        ours = MODELS[name](BackboneSpec((3, 32, 32), 10), activation)
        ours_grey = MODELS[name](BackboneSpec((1, 32, 32), 10), activation)
        theirs = reference()
    head_free = count_parameters(theirs) - count_parameters(final_layer(theirs))
    assert count_parameters(ours) == head_free
    final_ids = {id(p) for p in final_layer(theirs).parameters()}
    assert shapes(ours) == sorted(tuple(p.shape) for p in theirs.parameters()
                                  if id(p) not in final_ids)
    # 1-channel inputs: the first conv loses two input channels' worth of weights
    assert count_parameters(ours_grey) == head_free - 2 * first_conv_params_per_channel


@pytest.mark.parametrize(
    ("name", "reference", "total"),
    # CIFAR ResNets as in kuangliu/pytorch-cifar, plus the 64 stem-conv biases BE adds
    [("resnet18", tvm.resnet18, 11_168_896), ("resnet34", tvm.resnet34, 21_277_056),
     ("resnet50", tvm.resnet50, 23_500_416)],
)
def test_be_resnets_have_torchvision_stages_and_a_cifar_stem(name, reference, total):
    with torch.device("meta"):
        ours = MODELS[name](BackboneSpec((3, 32, 32), 10), make_activation("silu"))
        theirs = reference()
    assert count_parameters(ours) == total
    stages = [getattr(theirs, f"layer{i}") for i in range(1, 5)]
    assert shapes(ours.blocks) == sorted(s for stage in stages for s in shapes(stage))
    assert shapes(ours.stem) == sorted([(64, 3, 3, 3), (64,), (64,), (64,)])
    assert ours.feature_dim == theirs.fc.in_features


# --- pretrained weights (the network is never touched) ------------------------------------


@pytest.mark.parametrize("name", ["resnet18_tv", "convnext_t", "vgg11_bn"])
def test_pretrained_offline_raises_a_clear_error(name, monkeypatch, tmp_path):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with torch.device("meta"), pytest.raises(RuntimeError) as error:
        MODELS[name](BackboneSpec((3, 32, 32), 10, pretrained=True),
                     make_activation(NATIVE_ACTIVATION.get(name, "relu")))
    message = str(error.value)
    assert "could not fetch" in message and "name resolution" in message
    assert "TORCH_HOME" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert ".pth" in message and "get_state_dict()" in message
    assert isinstance(error.value.__cause__, urllib.error.URLError)


def test_pretrained_resnet18_tv_computes_torchvision_features(monkeypatch):
    torch.manual_seed(0)
    reference = tvm.resnet18().eval()
    with torch.no_grad():  # non-trivial BN statistics so that they are checked too
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    state = reference.state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
    torch.manual_seed(1)
    ours = MODELS["resnet18_tv"](BackboneSpec((3, 32, 32), 10, pretrained=True),
                                 make_activation("relu")).eval()
    reference.fc = nn.Identity()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize(
    ("name", "reference"),
    [("convnext_t", tvm.convnext_tiny), ("vgg16", tvm.vgg16), ("vgg19_bn", tvm.vgg19_bn)],
)
def test_pretrained_state_dict_keys_fit(name, reference, monkeypatch):
    with torch.device("meta"):
        state = reference().state_dict()
        monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
        # load_state_dict is strict: a missing or unexpected key raises
        MODELS[name](BackboneSpec((1, 32, 32), 10, pretrained=True),
                     make_activation(NATIVE_ACTIVATION.get(name, "relu")))


# --- errors name the key, the value and what is allowed ----------------------------------


@pytest.mark.parametrize(
    ("name", "spec", "match"),
    [
        ("resnet18", BackboneSpec((3, 32, 32), 10, pretrained=True), "model.pretrained"),
        ("resnet18_tv", BackboneSpec((3, 32, 32), 10, width=8, pretrained=True),
         "model.width=8"),
        ("vgg11", BackboneSpec((1, 28, 28), 10), r"32x32.*\(1, 28, 28\)"),
        ("convnext_t", BackboneSpec((3, 16, 16), 10), "32x32"),
        ("mnistnet", BackboneSpec((1, 26, 26), 10), "27x27"),
        ("lenet", BackboneSpec((3, 32, 32), 10, width=8), "model.width=8"),
        ("mlp", BackboneSpec((1, 8, 8), 10, width=8), "model.width=8"),
    ],
)
def test_invalid_specs_are_rejected(name, spec, match):
    with pytest.raises(ValueError, match=match):
        MODELS[name](spec, make_activation("relu"))


@pytest.mark.parametrize(("name", "wrong"), [("resnet18_tv", "silu"), ("convnext_t", "relu")])
def test_torchvision_native_activation_cannot_be_replaced_silently(name, wrong):
    with pytest.raises(ValueError, match=f"model.activation.*allowed: {NATIVE_ACTIVATION[name]}"):
        MODELS[name](TINY[name][0], make_activation(wrong))


TOY_BACKBONE = '''
"""A toy backbone: Flatten -> Linear -> act."""
import math

from torch import nn

from latentgeo.models.base import Backbone, register_model


@register_model("toy_linear")
def toy_linear(spec, activation):
    width = spec.width or 16
    block = nn.Sequential(nn.Linear(math.prod(spec.input_shape), width), activation(width))
    return Backbone(nn.Flatten(), [("layer1", block)], nn.Identity(), feature_dim=width)
'''


def test_a_new_backbone_is_its_module_and_its_yaml(tmp_path, monkeypatch):
    """The module dropped into latentgeo.models (found as every backbone is found) and one
    yaml in conf/model/: composes, trains and is measured, no other file touched."""
    package = tmp_path / "package"
    package.mkdir()
    (package / "toy_linear.py").write_text(TOY_BACKBONE)
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(package)])
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "model" / "toy_linear.yaml").write_text("name: toy_linear\nwidth: 12\n"
                                                    "activation: relu\n")
    try:
        import_modules([str(package)], "latentgeo.models")
        cfg = compose_cfg([*TINY_RUN, "model=toy_linear", "metrics=none"], config_dir=conf)
        train(cfg, tmp_path / "run")
    finally:
        MODELS.pop("toy_linear", None)
        sys.modules.pop("latentgeo.models.toy_linear", None)
    events = RunDir(tmp_path / "run").events()
    assert [e["epoch"] for e in events if "test/accuracy" in e] == [1, 2]
    weights = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    # model.width=8 (TINY) over the yaml's 12; 8x8 RGB synthetic images
    assert weights["model"]["backbone.blocks.layer1.0.weight"].shape == (8, 3 * 8 * 8)
