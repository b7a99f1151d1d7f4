"""Imports every backbone module so that each ``@register_model`` runs (see ``MODELS``)."""

from latentgeo.models import (  # noqa: F401
    cnn3,
    lenet,
    mlp,
    resnet,
    thesis,
    torchvision_models,
)
