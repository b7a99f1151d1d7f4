"""BE's CIFAR ResNets (docs/definitions.md §1.2, BE@9465647:binary_encoding/networks.py).

stem: Conv3x3(C_in->w, stride 1, pad 1, with bias) -> BN -> act; no max-pool.
blocks ``layer1..layer4``: w, 2w, 4w, 8w channels (times the block's expansion), strides
1, 2, 2, 2; resnet18 [2,2,2,2] BasicBlock, resnet34 [3,4,6,3] BasicBlock, resnet50 [3,4,6,3]
Bottleneck (expansion 4, stride on the 3x3 conv). pool: global average + flatten, so
feature_dim = 8w·expansion (512 / 512 / 2048 at the default w = 64).

``model.width`` = w, the stem/first-stage channels. Every activation site calls the factory with
its own channel count, so trainable activations get their own parameters per site. Weights keep
PyTorch's default initialisation, as BE does.
"""

from __future__ import annotations

from torch import Tensor, nn

from latentgeo.models.base import ActivationFactory, Backbone, BackboneSpec, register_model
from latentgeo.models.common import reject_pretrained

DEFAULT_WIDTH = 64
STAGE_STRIDES = (1, 2, 2, 2)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or 1x1 conv (no bias) + BN when the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN, plus shortcut, then act after the sum."""

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int, activation: ActivationFactory
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            activation(channels),
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.activation = activation(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1x1-BN-act-conv3x3(stride)-BN-act-conv1x1(x4)-BN, plus shortcut, then act."""

    expansion = 4

    def __init__(
        self, in_channels: int, channels: int, stride: int, activation: ActivationFactory
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            activation(channels),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            activation(channels),
            nn.Conv2d(channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.activation = activation(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.residual(x) + self.shortcut(x))


def cifar_resnet(
    name: str,
    block: type[BasicBlock | Bottleneck],
    blocks_per_stage: tuple[int, int, int, int],
    spec: BackboneSpec,
    activation: ActivationFactory,
) -> Backbone:
    reject_pretrained(spec, name)
    width = spec.width or DEFAULT_WIDTH
    stem = nn.Sequential(
        nn.Conv2d(spec.input_shape[0], width, 3, padding=1, bias=True),
        nn.BatchNorm2d(width),
        activation(width),
    )
    stages = []
    in_channels = width
    for index, (num_blocks, stride) in enumerate(zip(blocks_per_stage, STAGE_STRIDES, strict=True)):
        channels = width * 2**index
        stage = []
        for block_index in range(num_blocks):
            stage.append(block(in_channels, channels, stride if block_index == 0 else 1,
                               activation))
            in_channels = channels * block.expansion
        stages.append((f"layer{index + 1}", nn.Sequential(*stage)))
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone(stem, stages, pool, feature_dim=in_channels)


@register_model("resnet18")
def resnet18(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    return cifar_resnet("resnet18", BasicBlock, (2, 2, 2, 2), spec, activation)


@register_model("resnet34")
def resnet34(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    return cifar_resnet("resnet34", BasicBlock, (3, 4, 6, 3), spec, activation)


@register_model("resnet50")
def resnet50(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    return cifar_resnet("resnet50", Bottleneck, (3, 4, 6, 3), spec, activation)
