"""UN's small CNN (seed 004_0c3cf4f5f4155471, ``CustomCNN``; the R_α / ReLU_α experiment).

blocks ``block1..block3`` = Conv3x3 (pad 1, with bias) -> BN -> act -> MaxPool2, all with
w channels (UN: 64; ``model.width`` = w). stem Identity; pool Flatten, as UN's
``view(-1, 64*4*4)``: feature_dim = w·(H//8)·(W//8) (1024 for 32x32 CIFAR, 576 for 28x28).
UN's Linear(->10) + Softmax is replaced by our head (the loss takes logits). Needs H, W >= 8.
"""

from __future__ import annotations

from torch import nn

from latentgeo.models.base import ActivationFactory, Backbone, BackboneSpec, register_model
from latentgeo.models.common import reject_pretrained, require_min_input_size


@register_model("cnn3")
def cnn3(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    reject_pretrained(spec, "cnn3")
    require_min_input_size(spec, "cnn3", 8, "three 2x2 max-pools divide H and W by 8")
    width = spec.width or 64
    in_channels, height, width_px = spec.input_shape
    blocks = []
    for index in range(3):
        blocks.append((f"block{index + 1}", nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            activation(width),
            nn.MaxPool2d(2),
        )))
        in_channels = width
    feature_dim = width * (height // 8) * (width_px // 8)
    return Backbone(nn.Identity(), blocks, nn.Flatten(), feature_dim)
