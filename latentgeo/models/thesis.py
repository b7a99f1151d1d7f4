"""TH's small CNNs (docs/definitions.md §2.3, TH@0f91561:networks.py): ``mnistnet`` and
``cifarnet``.

Both use ``BatchNorm2d(track_running_stats=False)`` as TH does: batch statistics are used in
eval mode too, so an evaluation output depends on the other samples of its batch.

mnistnet: blocks ``block1..block3`` = Conv5x5 ("same", no bias) -> BN -> MaxPool3 -> act with
    w, 2w, 4w channels (TH: 16, 32, 64; ``model.width`` = w, default 16). pool: Flatten, as TH's
    head (Flatten -> Linear(64 -> C)). Three max-pools of 3 shrink a 28x28 (or 32x32) input to
    1x1, so feature_dim = 4w there; for larger inputs the flattened map is kept (feature_dim =
    4w·(H//27)·(W//27)) rather than pooled, so nothing TH computes changes. Needs H, W >= 27.
cifarnet (airbench-like): blocks ``block1..block3``, each
    x <- act(x + BN(conv3x3 in->in)); x <- act(MaxPool2(BN(conv3x3 in->out))), convs without
    bias, "same" padding, out channels w, 2w, 4w (TH: 64, 128, 256; ``model.width`` = w,
    default 64). pool: global max pool + flatten, feature_dim = 4w. Needs H, W >= 8.
Activation sites: mnistnet one per block (out channels); cifarnet two per block (in, then out
channels), each its own module (TH reuses one stateless module for both).
"""

from __future__ import annotations

from torch import Tensor, nn

from latentgeo.models.base import ActivationFactory, Backbone, BackboneSpec, register_model
from latentgeo.models.common import reject_pretrained, require_min_input_size


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=False)


@register_model("mnistnet")
def mnistnet(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    reject_pretrained(spec, "mnistnet")
    require_min_input_size(spec, "mnistnet", 27, "three 3x3 max-pools divide H and W by 27")
    width = spec.width or 16
    in_channels, height, width_px = spec.input_shape
    channels = (in_channels, width, 2 * width, 4 * width)
    blocks = [
        (f"block{index + 1}", nn.Sequential(
            nn.Conv2d(channels[index], channels[index + 1], 5, padding="same", bias=False),
            _batch_norm(channels[index + 1]),
            nn.MaxPool2d(3),
            activation(channels[index + 1]),
        ))
        for index in range(3)
    ]
    feature_dim = channels[-1] * (height // 27) * (width_px // 27)
    return Backbone(nn.Identity(), blocks, nn.Flatten(), feature_dim)


class CifarNetBlock(nn.Module):
    """TH's ``_Block``: residual conv at constant width, then conv + max-pool to ``out``."""

    def __init__(self, in_channels: int, out_channels: int, activation: ActivationFactory) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding="same", bias=False)
        self.bn = _batch_norm(in_channels)
        self.activation = activation(in_channels)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
        self.bn2 = _batch_norm(out_channels)
        self.pool = nn.MaxPool2d(2)
        self.activation2 = activation(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(x + self.bn(self.conv(x)))
        return self.activation2(self.pool(self.bn2(self.conv2(x))))


@register_model("cifarnet")
def cifarnet(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    reject_pretrained(spec, "cifarnet")
    require_min_input_size(spec, "cifarnet", 8, "three 2x2 max-pools divide H and W by 8")
    width = spec.width or 64
    channels = (spec.input_shape[0], width, 2 * width, 4 * width)
    blocks = [
        (f"block{index + 1}", CifarNetBlock(channels[index], channels[index + 1], activation))
        for index in range(3)
    ]
    pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
    return Backbone(nn.Identity(), blocks, pool, feature_dim=channels[-1])
