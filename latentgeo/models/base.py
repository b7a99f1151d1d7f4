"""The one interface every backbone implements, the model registry, and the classifier.

A backbone is ``stem -> blocks -> pool``:

- ``stem``: input adaptation (a conv stem, a Flatten for MLPs, ``nn.Identity``);
- ``blocks``: an ordered ``nn.ModuleDict`` of named blocks; their outputs are the hook points
  of the per-layer metrics (NC1, DIB), and ``blocks[:b]`` / ``blocks[b:]`` split the network
  into encoder and decoder;
- ``pool``: global pooling + flatten to ``[B, feature_dim]`` (``nn.Identity`` for MLPs).

Adding a backbone is one file in ``latentgeo/models/`` with a ``@register_model("name")``
builder (``zoo`` imports every module of the package) plus one yaml in ``conf/model/``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor, nn

from latentgeo.config import ConfigError

# Called once per activation site with the number of channels (dim 1 of [B, C, H, W]) or
# features (last dim of [B, F]); returns a fresh module (so trainable activations get their
# own parameters per site).
ActivationFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class BackboneSpec:
    """What a builder receives besides the activation factory."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    width: int | None = None  # base channels; None = the architecture's default
    widths: tuple[int, ...] = ()  # hidden widths for MLPs
    pretrained: bool = False


class Backbone(nn.Module):
    """``stem -> blocks -> pool``; see the module docstring."""

    def __init__(
        self,
        stem: nn.Module,
        blocks: Iterable[tuple[str, nn.Module]],
        pool: nn.Module,
        feature_dim: int,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleDict(OrderedDict(blocks))
        self.pool = pool
        self.feature_dim = feature_dim

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks.keys())

    def encode(self, x: Tensor, num_blocks: int | None = None) -> Tensor:
        """stem + the first ``num_blocks`` blocks (all when None)."""
        h = self.stem(x)
        for block in list(self.blocks.values())[:num_blocks]:
            h = block(h)
        return h

    def decode(self, h: Tensor, start_block: int) -> Tensor:
        """blocks[start_block:] + pool."""
        for block in list(self.blocks.values())[start_block:]:
            h = block(h)
        return self.pool(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.encode(x))


ModelBuilder = Callable[[BackboneSpec, ActivationFactory], Backbone]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = builder
        return builder

    return decorator


@dataclass(frozen=True)
class HeadSpec:
    """What a head is; every head-dependent decision reads these, never the head's name."""

    code_layer: bool  # a Linear(F->P) penultimate layer (head.penultimate_nodes); else x_pen = F
    code_activation: type[nn.Module] | None  # applied after the code layer
    compressed: bool  # the loss adds γ·penalty(x_pen) (head.gamma_*, head.penalty)
    # the code is linear, so BE's binarity metrics apply, and it must tell K classes apart
    # as a sign pattern: 2^P >= K
    binary_code: bool


# BE's four heads (docs/definitions.md, "Heads")
HEADS: dict[str, HeadSpec] = {
    "bin_enc": HeadSpec(code_layer=True, code_activation=None, compressed=True,
                        binary_code=True),
    "lin_pen": HeadSpec(code_layer=True, code_activation=None, compressed=False,
                        binary_code=True),
    "nonlin_pen": HeadSpec(code_layer=True, code_activation=nn.SiLU, compressed=False,
                           binary_code=False),
    "no_pen": HeadSpec(code_layer=False, code_activation=None, compressed=False,
                       binary_code=False),
}


class Head(nn.Module):
    """A head of ``HEADS``; forward returns ``(logits, x_pen)``.

    bin_enc / lin_pen: Linear(F->P), no activation -> Linear(P->K)
    nonlin_pen:        Linear(F->P) -> SiLU        -> Linear(P->K)
    no_pen:            x_pen = the backbone features -> Linear(F->K)
    ``dropout_penultimate`` applies Dropout(0.5) to the *logits*, as BE does.
    """

    def __init__(
        self,
        name: str,
        feature_dim: int,
        num_classes: int,
        penultimate_nodes: int,
        dropout_penultimate: bool = False,
    ) -> None:
        super().__init__()
        if name not in HEADS:
            raise ConfigError(f"head.name={name!r} is not allowed: one of {list(HEADS)}")
        self.name = name
        spec = HEADS[name]
        if spec.code_layer:
            layers: list[nn.Module] = [nn.Linear(feature_dim, penultimate_nodes)]
            if spec.code_activation is not None:
                layers.append(spec.code_activation())
            self.penultimate: nn.Module = nn.Sequential(*layers)
            code_dim = penultimate_nodes
        else:
            self.penultimate = nn.Identity()
            code_dim = feature_dim
        self.code_dim = code_dim
        output: list[nn.Module] = [nn.Linear(code_dim, num_classes)]
        if dropout_penultimate:
            output.append(nn.Dropout(0.5))
        self.output = nn.Sequential(*output)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        x_pen = self.penultimate(features)
        return self.output(x_pen), x_pen


class Classifier(nn.Module):
    """backbone ▸ head; ``forward(x) -> (logits, x_pen)``."""

    def __init__(self, backbone: Backbone, head: Head) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.backbone(x))

    def decode(self, h: Tensor, start_block: int) -> tuple[Tensor, Tensor]:
        """The decoder half after ``backbone.encode(x, start_block)``."""
        return self.head(self.backbone.decode(h, start_block))

    def output_parameters(self) -> list[nn.Parameter]:
        """Parameters of the final (output) layer: BE keeps them at the base learning rate."""
        return list(self.head.output.parameters())

