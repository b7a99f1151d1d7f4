"""config -> Classifier: the one place that turns ``model``/``head`` configs into modules."""

from __future__ import annotations

from latentgeo.models.activations import make_activation
from latentgeo.models.base import MODELS, BackboneSpec, Classifier, Head


def build_model(cfg, input_shape: tuple[int, int, int], num_classes: int) -> Classifier:
    spec = BackboneSpec(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        width=cfg.model.width,
        widths=tuple(cfg.model.widths or ()),
        pretrained=cfg.model.pretrained,
    )
    backbone = MODELS[cfg.model.name](spec, make_activation(cfg.model.activation, cfg.activation))
    head = Head(
        cfg.head.name,
        backbone.feature_dim,
        num_classes,
        cfg.head.penultimate_nodes,
        cfg.head.dropout_penultimate,
    )
    return Classifier(backbone, head)
