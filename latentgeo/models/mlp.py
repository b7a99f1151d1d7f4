"""Fully connected backbone (TH's MLP, docs/definitions.md §2.3; also BE's ``MLPvanilla`` body).

stem: Flatten; blocks ``layer1..layerL``: Linear(prev -> widths[i]) -> act; pool: Identity;
feature_dim = widths[-1]. TH hooks every (Linear, act) block, i.e. exactly these block outputs.

``model.widths`` are the hidden widths; when empty, TH's default (10, 7, 5, 4, 3), the
Schwartz-Ziv & Tishby net for the 12-bit SZT data. ``model.width`` is not used.
"""

from __future__ import annotations

import math

from torch import nn

from latentgeo.config import ConfigError
from latentgeo.models.base import ActivationFactory, Backbone, BackboneSpec, register_model
from latentgeo.models.common import reject_pretrained, reject_width

SZT_WIDTHS = (10, 7, 5, 4, 3)


@register_model("mlp")
def mlp(spec: BackboneSpec, activation: ActivationFactory) -> Backbone:
    reject_pretrained(spec, "mlp")
    reject_width(spec, "mlp", "its hidden sizes are model.widths")
    widths = tuple(spec.widths) or SZT_WIDTHS
    if any(width < 1 for width in widths):
        raise ConfigError(f"model.widths={list(widths)} must be positive integers")
    blocks = []
    in_features = math.prod(spec.input_shape)
    for index, width in enumerate(widths):
        blocks.append((f"layer{index + 1}", nn.Sequential(nn.Linear(in_features, width),
                                                          activation(width))))
        in_features = width
    return Backbone(nn.Flatten(), blocks, nn.Identity(), feature_dim=widths[-1])
