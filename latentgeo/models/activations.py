"""Activations: ``model.activation`` names -> ``ActivationFactory``, the one table of them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from latentgeo.config import ActivationConfig, ConfigError
from latentgeo.models.base import ActivationFactory
from latentgeo.models.relu_alpha import relu_alpha_factory


def _stateless(module_type: type[nn.Module]) -> Callable[[ActivationConfig], ActivationFactory]:
    return lambda options: lambda num_channels: module_type()


def _relu_alpha(options: ActivationConfig) -> ActivationFactory:
    return relu_alpha_factory(options.granularity, options.mode, options.init_alpha,
                              options.init_nu)


# model.activation -> (the ``activation`` node -> factory); only relu_alpha reads the node
ACTIVATIONS: dict[str, Callable[[ActivationConfig], ActivationFactory]] = {
    "relu": _stateless(nn.ReLU),
    "silu": _stateless(nn.SiLU),
    "gelu": _stateless(nn.GELU),
    "tanh": _stateless(nn.Tanh),
    "sigmoid": _stateless(nn.Sigmoid),
    "elu": _stateless(nn.ELU),
    "leaky_relu": _stateless(nn.LeakyReLU),
    "softplus": _stateless(nn.Softplus),
    "identity": _stateless(nn.Identity),
    "relu_alpha": _relu_alpha,  # ReLU_α(x) = x + α·ReLU(−x) (UN, seed 004)
}


def make_activation(name: str, options: ActivationConfig | None = None) -> ActivationFactory:
    """The factory of ``model.activation=name`` (``options``: the ``activation`` node)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.activation={name!r} is not allowed: one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](options or ActivationConfig())
