"""torchvision-backed backbones: ``resnet18_tv``, ``convnext_t`` (TH §2.3), ``vgg*`` (HP §3.5).

Each is assembled from torchvision's own building blocks (``resnet.BasicBlock``, the
``ConvNeXt`` class, ``vgg.make_layers``/``vgg.cfgs``) with torchvision's initialisation, so at
the default width the parameters are torchvision's one for one, minus the final classification
layer (our head replaces it) and with the first conv adapted when C_in != 3. ``model.width``
scales every channel count so that tiny CPU runs are possible.

``model.pretrained=true`` loads torchvision's ImageNet weights (default width only) through its
weights API; offline without a cached file it raises an error saying where the file goes. A
first conv adapted to C_in != 3 is freshly initialised, pretrained or not.

resnet18_tv: torchvision's ImageNet ResNet-18 (TH's ``ResNet``): stem = conv1 7x7/2, bn1, relu,
    maxpool 3x3/2; blocks ``layer1..layer4`` (2 BasicBlocks each); pool = avgpool + flatten.
    ``model.width`` = first-stage channels w (default 64; stages w, 2w, 4w, 8w; feature_dim 8w).
    torchvision cannot scale a BasicBlock ResNet (``width_per_group`` is for bottlenecks only),
    so the stages are assembled here exactly as ``ResNet._make_layer`` does.
    Activation: torchvision's ReLU. Its BasicBlock calls one ``relu`` module twice, so a
    per-site (trainable) activation cannot be swapped in; ``model.activation`` must be relu.
convnext_t: torchvision's ConvNeXt-T (TH's ``ConvNeXt``): stem = features[0] (patchify conv 4x4/4
    + LayerNorm2d); blocks ``stage1..stage4`` = CNBlock stages, stage i >= 2 with its preceding
    downsample layer (its output = TH's hooked last CNBlock of the stage); pool = avgpool +
    classifier[0:2] (LayerNorm2d + Flatten). ``model.width`` = first-stage channels w (default
    96; stages w, 2w, 4w, 8w; feature_dim 8w); depths stay [3, 3, 9, 3] and stochastic depth
    0.1 (torchvision's convnext_tiny default, which TH used) at every width. Activation:
    torchvision's GELU inside the channels-last CNBlock MLP; ``model.activation`` must be gelu.
    Needs H, W >= 32.
vgg11/13/16/19 and *_bn: torchvision's VGG (HP): blocks ``stage1..stage5`` (one per max-pool) and
    ``classifier`` = AdaptiveAvgPool(7x7) -> Flatten -> Linear(512·49 -> 4096) -> act -> Dropout
    -> Linear(4096 -> 4096) -> act -> Dropout, i.e. torchvision's classifier without its last
    Linear (our head). HP kept this classifier for 32x32 inputs; so do we, for parameter counts
    and hyperplane statistics comparable with HP, although on 32x32 inputs the 7x7 pool only
    copies the 1x1 map 49 times (102.8M of vgg16's 134M backbone parameters sit in that first
    Linear). pool Identity; feature_dim 4096. ``model.width`` = first-stage channels w (default
    64): every channel count and the 4096 hidden units are multiplied by w/64 (exact: all are
    multiples of 64). Every ReLU site is replaced by the activation factory (HP: relu). An
    adapted first conv gets a Kaiming fan-out init and zero bias, as HP's. Needs H, W >= 32.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections import OrderedDict
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

from latentgeo.config import ConfigError
from latentgeo.models.base import ActivationFactory, Backbone, BackboneSpec, register_model
from latentgeo.models.common import require_min_input_size


def tv(module: str) -> ModuleType:
    """``torchvision.models.<module>``, imported when a torchvision-backed model is first built:
    torchvision's model zoo costs seconds to import, and most runs never need it."""
    return importlib.import_module(f"torchvision.models.{module}")


def fetch_state_dict(weights: WeightsEnum, model_name: str) -> dict[str, torch.Tensor]:
    """torchvision's cached-or-downloaded state dict, with a clear error when offline."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as error:  # URLError, HTTPError, timeouts: no network or blocked
        checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
        filename = os.path.basename(urlparse(weights.url).path)
        enum = f"{type(weights).__name__}.{weights.name}"
        raise RuntimeError(
            f"model.pretrained=true: could not fetch the torchvision weights {enum} for "
            f"model.name={model_name!r} from {weights.url} ({error}). torchvision caches them "
            f"as {os.path.join(checkpoints, filename)} ($TORCH_HOME/hub/checkpoints; TORCH_HOME "
            "defaults to ~/.cache/torch). Pre-download on a machine with network access with "
            f"`python -c 'import torchvision; torchvision.models.{enum}.get_state_dict()'` and "
            f"copy {filename} into that folder, or set TORCH_HOME to a folder whose "
            "hub/checkpoints holds it."
        ) from error


def _check_pretrained_width(spec: BackboneSpec, model_name: str, default_width: int) -> None:
    if spec.pretrained and spec.width not in (None, default_width):
        raise ConfigError(
            f"model.width={spec.width} with model.pretrained=true: torchvision's weights for "
            f"{model_name!r} exist only at the default width; allowed: null or {default_width}"
        )


def _check_native_activation(
    activation: ActivationFactory, native: type[nn.Module], model_name: str, channels: int
) -> None:
    """Refuse a ``model.activation`` these models cannot apply instead of ignoring it."""
    module = activation(channels)
    if type(module) is not native:
        raise ConfigError(
            f"model.activation gives {type(module).__name__} but model.name={model_name!r} "
            f"keeps torchvision's own {native.__name__} (see latentgeo/models/"
            f"torchvision_models.py); allowed: {native.__name__.lower()}"
        )


# --- resnet18_tv ------------------------------------------------------------------------------


def _torchvision_resnet18_parts(width: int) -> nn.ModuleDict:
    """torchvision's ResNet-18 minus avgpool/fc at first-stage width ``width``, same keys."""
    parts = nn.ModuleDict()
    parts["conv1"] = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    parts["bn1"] = nn.BatchNorm2d(width)
    parts["relu"] = nn.ReLU(inplace=True)
    parts["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    in_channels = width
    for index, stride in enumerate((1, 2, 2, 2)):  # as torchvision's ResNet._make_layer
        channels = width * 2**index
        downsample = None
        if stride != 1 or in_channels != channels:
            downsample = nn.Sequential(
                tv("resnet").conv1x1(in_channels, channels, stride), nn.BatchNorm2d(channels)
            )
        parts[f"layer{index + 1}"] = nn.Sequential(
            tv("resnet").BasicBlock(in_channels, channels, stride, downsample),
            tv("resnet").BasicBlock(channels, channels),
        )
        in_channels = channels
    for module in parts.modules():  # torchvision's ResNet.__init__ initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return parts


@register_model("resnet18_tv")
def resnet18_tv(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    _check_pretrained_width(spec, "resnet18_tv", 64)
    width = spec.width or 64
    _check_native_activation(activation, nn.ReLU, "resnet18_tv", width)
    parts = _torchvision_resnet18_parts(width)
    if spec.pretrained:
        state = fetch_state_dict(tv("resnet").ResNet18_Weights.DEFAULT, "resnet18_tv")
        parts.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    in_channels = spec.input_shape[0]
    if in_channels != 3:
        parts["conv1"] = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3,
                                   bias=False)
        nn.init.kaiming_normal_(parts["conv1"].weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(OrderedDict((name, parts[name]) for name in
                                     ("conv1", "bn1", "relu", "maxpool")))
    blocks = [(f"layer{index}", parts[f"layer{index}"]) for index in range(1, 5)]
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone(stem, blocks, pool, feature_dim=8 * width)


# --- convnext_t -------------------------------------------------------------------------------


@register_model("convnext_t")
def convnext_t(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    require_min_input_size(spec, "convnext_t", 32, "the 4x4/4 stem and three 2x2/2 "
                           "downsamplings divide H and W by 32")
    _check_pretrained_width(spec, "convnext_t", 96)
    width = spec.width or 96
    _check_native_activation(activation, nn.GELU, "convnext_t", 4 * width)
    block_setting = [  # torchvision's convnext_tiny, channels scaled by width/96
        tv("convnext").CNBlockConfig(width, 2 * width, 3),
        tv("convnext").CNBlockConfig(2 * width, 4 * width, 3),
        tv("convnext").CNBlockConfig(4 * width, 8 * width, 9),
        tv("convnext").CNBlockConfig(8 * width, None, 3),
    ]
    model = tv("convnext").ConvNeXt(block_setting, stochastic_depth_prob=0.1)
    if spec.pretrained:
        model.load_state_dict(fetch_state_dict(tv("convnext").ConvNeXt_Tiny_Weights.DEFAULT,
                                               "convnext_t"))
    in_channels = spec.input_shape[0]
    if in_channels != 3:
        conv = nn.Conv2d(in_channels, width, kernel_size=4, stride=4)
        nn.init.trunc_normal_(conv.weight, std=0.02)  # torchvision's ConvNeXt init
        nn.init.zeros_(conv.bias)
        model.features[0][0] = conv
    features = model.features
    blocks = [("stage1", nn.Sequential(OrderedDict(blocks=features[1])))]
    for index in range(2, 5):
        blocks.append((f"stage{index}", nn.Sequential(OrderedDict(
            downsample=features[2 * index - 2], blocks=features[2 * index - 1]))))
    pool = nn.Sequential(model.avgpool, model.classifier[0], model.classifier[1])
    return Backbone(features[0], blocks, pool, feature_dim=8 * width)


# --- vgg --------------------------------------------------------------------------------------


def _with_activation(layers: list[nn.Module], activation: ActivationFactory) -> list[nn.Module]:
    """Replace every ReLU by ``activation(channels of the preceding conv / linear)``."""
    result = []
    channels = 0
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
        elif isinstance(layer, nn.Linear):
            channels = layer.out_features
        result.append(activation(channels) if isinstance(layer, nn.ReLU) else layer)
    return result


def _vgg(
    name: str,
    config: str,
    batch_norm: bool,
    weights: str,
    spec: BackboneSpec,
    activation: ActivationFactory,
) -> Backbone:
    require_min_input_size(spec, name, 32, "five 2x2 max-pools divide H and W by 32")
    _check_pretrained_width(spec, name, 64)
    width = spec.width or 64
    cfg = [v if v == "M" else v // 64 * width for v in tv("vgg").cfgs[config]]
    features = tv("vgg").make_layers(cfg, batch_norm=batch_norm)
    last_channels, hidden = cfg[-2], 64 * width  # 512 and 4096 at the default width
    classifier = nn.Sequential(  # torchvision's VGG.classifier without its last Linear
        nn.Linear(last_channels * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(0.5),
    )
    for module in [*features.modules(), *classifier.modules()]:  # torchvision's VGG init
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
    if spec.pretrained:
        state = fetch_state_dict(getattr(tv("vgg"), weights).DEFAULT, name)
        nn.ModuleDict({"features": features, "classifier": classifier}).load_state_dict(
            {k: v for k, v in state.items() if not k.startswith("classifier.6.")}
        )
    in_channels = spec.input_shape[0]
    if in_channels != 3:  # HP's adapted input layer
        conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        features[0] = conv

    blocks = []
    stage: list[nn.Module] = []
    for layer in features:
        stage.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append((f"stage{len(blocks) + 1}",
                           nn.Sequential(*_with_activation(stage, activation))))
            stage = []
    head_layers = [nn.AdaptiveAvgPool2d(7), nn.Flatten(), *classifier]
    blocks.append(("classifier", nn.Sequential(*_with_activation(head_layers, activation))))
    return Backbone(nn.Identity(), blocks, nn.Identity(), feature_dim=hidden)


VGG_VARIANTS = {  # name: (torchvision cfg key, batch norm, torchvision weights enum)
    "vgg11": ("A", False, "VGG11_Weights"),
    "vgg13": ("B", False, "VGG13_Weights"),
    "vgg16": ("D", False, "VGG16_Weights"),
    "vgg19": ("E", False, "VGG19_Weights"),
    "vgg11_bn": ("A", True, "VGG11_BN_Weights"),
    "vgg13_bn": ("B", True, "VGG13_BN_Weights"),
    "vgg16_bn": ("D", True, "VGG16_BN_Weights"),
    "vgg19_bn": ("E", True, "VGG19_BN_Weights"),
}

for _name, (_config, _batch_norm, _weights) in VGG_VARIANTS.items():
    register_model(_name)(functools.partial(_vgg, _name, _config, _batch_norm, _weights))
