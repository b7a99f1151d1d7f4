"""Backbones, heads and the registry that maps ``model.name`` to a builder."""

from latentgeo.models import zoo  # noqa: F401  (registers every backbone)
from latentgeo.models.base import (
    HEADS,
    MODELS,
    Backbone,
    BackboneSpec,
    Classifier,
    Head,
    register_model,
)

__all__ = ["HEADS", "MODELS", "Backbone", "BackboneSpec", "Classifier", "Head", "register_model"]

from latentgeo.models.build import build_model  # noqa: E402

__all__ += ["build_model"]
