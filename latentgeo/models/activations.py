"""Activation factories: ``model.activation`` names -> ``ActivationFactory``."""

from __future__ import annotations

from torch import nn

from latentgeo.config import ConfigError
from latentgeo.models.base import ActivationFactory

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


def make_activation(name: str) -> ActivationFactory:
    """A factory for a stateless torch activation; ``relu_alpha`` is built in ``build.py``."""
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation={name!r} is not one of {sorted([*ACTIVATIONS, 'relu_alpha'])}"
        )
    module_type = ACTIVATIONS[name]
    return lambda num_channels: module_type()
