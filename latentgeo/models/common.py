"""Spec checks shared by the backbone builders; every message names the key, value and allowed."""

from __future__ import annotations

from latentgeo.config import ConfigError
from latentgeo.models.base import BackboneSpec


def reject_pretrained(spec: BackboneSpec, model_name: str) -> None:
    """Only the torchvision-backed backbones have pretrained weights."""
    if spec.pretrained:
        raise ConfigError(
            f"model.pretrained=true is not available for model.name={model_name!r}: only the "
            "torchvision-backed models (resnet18_tv, convnext_t, vgg*) have pretrained weights"
        )


def reject_width(spec: BackboneSpec, model_name: str, why: str) -> None:
    """For architectures without a width knob, a set ``model.width`` would be silently ignored."""
    if spec.width is not None:
        raise ConfigError(f"model.width={spec.width} is not used by model.name={model_name!r} "
                         f"({why}); allowed: null")


def require_min_input_size(spec: BackboneSpec, model_name: str, min_size: int, why: str) -> None:
    """Fail at build time, not with a shape error deep inside the first forward."""
    _, height, width = spec.input_shape
    if min(height, width) < min_size:
        raise ConfigError(
            f"model.name={model_name!r} needs inputs of at least {min_size}x{min_size} ({why}); "
            f"the dataset's input_shape is {tuple(spec.input_shape)}"
        )
