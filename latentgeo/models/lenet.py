"""HP's 9-layer LeNet (docs/definitions.md §3.5, HP@867d0fd:models.py ``lenet``).

HP: 3x3 convs (pad 1, with bias) [6, 6, M, 16, 16, M, 64, 64, M], each followed by ReLU,
AdaptiveAvgPool(3x3), then Linear(576->120)-ReLU-Dropout-Linear(120->84)-ReLU-Dropout-Linear(84->K);
Xavier-uniform (gain of ReLU) weights and zero biases for every conv and linear layer.

Here: stem Identity; blocks ``stage1..stage3`` (one per max-pool: conv-act-conv-act-maxpool) and
``classifier`` (AdaptiveAvgPool 3x3 -> Flatten -> the 576->120->84 MLP with its dropouts); pool
Identity; feature_dim 84. HP's last Linear(84->K) is our head, which keeps its own init. The
widths are HP's and fixed (``model.width`` must be null). Needs H, W >= 8.
"""

from __future__ import annotations

from torch import nn

from latentgeo.models.base import ActivationFactory, Backbone, BackboneSpec, register_model
from latentgeo.models.common import reject_pretrained, reject_width, require_min_input_size

STAGE_CHANNELS = ((6, 6), (16, 16), (64, 64))
HIDDEN = (120, 84)


@register_model("lenet")
def lenet(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    reject_pretrained(spec, "lenet")
    reject_width(spec, "lenet", "HP's LeNet has fixed widths")
    require_min_input_size(spec, "lenet", 8, "three 2x2 max-pools divide H and W by 8")
    blocks = []
    in_channels = spec.input_shape[0]
    for index, stage_channels in enumerate(STAGE_CHANNELS):
        layers: list[nn.Module] = []
        for channels in stage_channels:
            layers += [nn.Conv2d(in_channels, channels, 3, padding=1), activation(channels)]
            in_channels = channels
        layers.append(nn.MaxPool2d(2))
        blocks.append((f"stage{index + 1}", nn.Sequential(*layers)))
    classifier: list[nn.Module] = [nn.AdaptiveAvgPool2d(3), nn.Flatten()]
    in_features = in_channels * 3 * 3
    for features in HIDDEN:
        classifier += [nn.Linear(in_features, features), activation(features), nn.Dropout(0.5)]
        in_features = features
    blocks.append(("classifier", nn.Sequential(*classifier)))
    backbone = Backbone(nn.Identity(), blocks, nn.Identity(), feature_dim=HIDDEN[-1])

    gain = nn.init.calculate_gain("relu")
    for module in backbone.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight, gain=gain)
            nn.init.zeros_(module.bias)
    return backbone
