"""Backbones, heads and the registry that maps ``model.name`` to a builder. Every module of
this package but the shared ones is a backbone module and is imported here, so that its
``@register_model`` runs: a new backbone is its module and its ``conf/model/*.yaml``."""

from latentgeo.models.assembly import build_model
from latentgeo.models.base import (
    HEADS,
    MODELS,
    Backbone,
    BackboneSpec,
    Classifier,
    Head,
    HeadSpec,
    register_model,
)
from latentgeo.plugins import import_modules

SHARED = ("activations", "assembly", "base", "common", "relu_alpha")  # modules without a backbone
import_modules(__path__, __name__, skip=SHARED)

__all__ = ["HEADS", "MODELS", "Backbone", "BackboneSpec", "Classifier", "Head", "HeadSpec",
           "build_model", "register_model"]
