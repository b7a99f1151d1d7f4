"""ReLU_α: a trainable interpolation between the identity (α=0) and ReLU (α=1).

    ReLU_α(x) = ReLU(x) − (1−α)·ReLU(−x) = x + α·ReLU(−x),   α ∈ [0, 1]

Source: UniTS Advanced ML "Challenge 2" (docs/definitions.md §4.2) and seed 004 (R_α, annealed α).
It is computed as ``x + α·relu(−x)``, which is exact at both ends in IEEE arithmetic: α=0 gives
x + 0 = x, α=1 gives x + (−x) = 0 for x < 0 and x + 0 = x otherwise, i.e. ReLU(x) bit for bit.

Two ways to train α (``mode``):

- ``penalty`` (assignment §4.2): α is a parameter kept in [0, 1]; the engine adds
  λ·Σ|α| (``alpha_l1``) to the loss so that sites linearise when they can. Parametrisation:
  forward uses clamp(α_raw, 0, 1) with a straight-through gradient, and ``anneal_step`` projects
  α_raw back onto [0, 1] after every optimizer step (projected gradient descent). Why not a
  sigmoid: it never reaches exactly 0 (linear) or 1 (ReLU) and its gradient vanishes there, so
  the L1 penalty stalls just short of linear. Why not a plain ``torch.clamp``: its gradient is 0
  at the boundary, so an α initialised at exactly 1 (ReLU) would never move.
- ``anneal`` (seed 004): α = σ((σ(γ) − ½)·ν) with γ trainable (init 0, so α=½) and ν a buffer
  raised by ``nu_step`` after every optimizer step; a growing ν drives α towards {0, 1} following
  sign(γ). ν is a buffer so checkpoints save it and resume restores it exactly. The seed raises
  ν by 0.01 at the start of every training forward, so optimizer step t (1-based) trains with
  ν = 0.01·t and an evaluation after t steps sees ν = 0.01·t. Here the engine raises the buffer
  after each step (``anneal_step``) and a training forward uses ν + ``step_nu``, the increment
  of the step in progress (``set_step_nu``; ``loop.ReluAlphaHooks`` sets it to
  ``activation.nu_step``): the same ν's bit for bit (step 1 already gives γ a gradient), while
  evaluation passes and extra forwards never move ν. ``step_nu`` is 0 on a model without the
  hooks (an evaluated checkpoint, a DIB decoder), and eval mode always uses ν itself.

``granularity``: ``layer`` (one α per site) or ``channel`` (one α per channel, broadcast over
dim 1 of ``[B, C, ...]`` and over the features of ``[B, F]``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from latentgeo.config import ConfigError

GRANULARITIES = ("layer", "channel")
MODES = ("penalty", "anneal")


def relu_alpha(x: Tensor, alpha: Tensor) -> Tensor:
    """x + α·ReLU(−x); ``alpha`` is 0-d or already shaped to broadcast against ``x``."""
    return x + alpha.to(x.dtype) * torch.relu(-x)


def annealed_alpha(gamma: Tensor, nu: Tensor) -> Tensor:
    """α = σ((σ(γ) − ½)·ν) (seed 004); α ∈ (σ(−ν/2), σ(ν/2)), α = ½ at γ = 0 for every ν."""
    return torch.sigmoid((torch.sigmoid(gamma) - 0.5) * nu)


class ReLUAlpha(nn.Module):
    """x + α·ReLU(−x) with trainable α; see the module docstring for ``mode``/``granularity``.

    Parameters/buffers (state_dict keys): penalty → ``raw_alpha``; anneal → ``gamma``, ``nu``.
    Their shape is ``[]`` for ``layer`` and ``[num_channels]`` for ``channel``.
    ``init_alpha`` (penalty only; default 1.0 = exactly ReLU) sets the starting α; anneal mode
    always starts at γ=0, i.e. α=½, with ν=``init_nu``.
    """

    def __init__(
        self,
        num_channels: int,
        granularity: str = "layer",
        mode: str = "penalty",
        init_alpha: float = 1.0,
        init_nu: float = 0.0,
    ) -> None:
        super().__init__()
        _check_options(granularity, mode, init_alpha, init_nu)
        if granularity == "channel" and num_channels < 1:
            raise ValueError(f"num_channels={num_channels} must be >= 1 for granularity=channel")
        self.num_channels = num_channels
        self.granularity = granularity
        self.mode = mode
        shape = (num_channels,) if granularity == "channel" else ()
        if mode == "penalty":
            self.raw_alpha = nn.Parameter(torch.full(shape, float(init_alpha)))
        else:
            self.gamma = nn.Parameter(torch.zeros(shape))
            self.register_buffer("nu", torch.tensor(float(init_nu)))
        # anneal: the ν increment of the training step in progress (module docstring); not in
        # the state_dict: it is a setting of the loop, not a state
        self.step_nu = 0.0

    def alpha(self, in_step: bool = False) -> Tensor:
        """The current α (0-d or ``[C]``), differentiable w.r.t. the trainable parameter.
        ``in_step`` (anneal): the α of a training forward, with ν + ``step_nu``."""
        if self.mode == "anneal":
            nu = self.nu + self.step_nu if in_step and self.step_nu else self.nu
            return annealed_alpha(self.gamma, nu)
        raw = self.raw_alpha
        # value clamp(raw, 0, 1) exactly, gradient 1 (straight-through): see module docstring
        return raw.detach().clamp(0.0, 1.0) + (raw - raw.detach())

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha(in_step=self.training)
        if alpha.dim() == 1:
            channel_dim = 1 if x.dim() >= 2 else 0
            if x.shape[channel_dim] != alpha.shape[0]:
                raise ValueError(
                    f"ReLUAlpha has {alpha.shape[0]} channels, input of shape {tuple(x.shape)} "
                    f"has {x.shape[channel_dim]} on dim {channel_dim}"
                )
            alpha = alpha.reshape(alpha.shape[0], *([1] * (x.dim() - channel_dim - 1)))
        return relu_alpha(x, alpha)

    @torch.no_grad()
    def post_step(self, nu_step: float) -> None:
        """After an optimizer step: anneal → ν += nu_step; penalty → project α_raw onto [0, 1]."""
        if self.mode == "anneal":
            self.nu.add_(nu_step)
        else:
            self.raw_alpha.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, granularity={self.granularity}, mode={self.mode}"


def _check_options(granularity: str, mode: str, init_alpha: float, init_nu: float) -> None:
    if granularity not in GRANULARITIES:
        raise ConfigError(f"activation.granularity={granularity!r} is not one of {GRANULARITIES}")
    if mode not in MODES:
        raise ConfigError(f"activation.mode={mode!r} is not one of {MODES}")
    if not 0.0 <= init_alpha <= 1.0:
        raise ConfigError(f"activation.init_alpha={init_alpha!r} must lie in [0, 1]")
    if not math.isfinite(init_nu) or init_nu < 0:
        raise ConfigError(f"activation.init_nu={init_nu!r} must be finite and >= 0")


def relu_alpha_factory(
    granularity: str = "layer",
    mode: str = "penalty",
    init_alpha: float = 1.0,
    init_nu: float = 0.0,
) -> Callable[[int], nn.Module]:
    """An activation factory (``num_channels -> module``) building one ``ReLUAlpha`` per site.

    Options are validated here, once, so a bad config fails before the model is built.
    """
    _check_options(granularity, mode, init_alpha, init_nu)

    def build(num_channels: int) -> nn.Module:
        return ReLUAlpha(num_channels, granularity, mode, init_alpha, init_nu)

    return build


def relu_alpha_modules(model: nn.Module) -> list[tuple[str, ReLUAlpha]]:
    """Every ``ReLUAlpha`` in ``model.named_modules()`` order, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ReLUAlpha)]


def alpha_l1(model: nn.Module, skip: set[str] | None = None) -> Tensor:
    """Σ|α| over every ReLUAlpha site and channel, except the units named in ``skip``.

    ``skip`` holds unit names as ``OscillationTracker`` reports them: a site name drops the
    whole site, ``site[c]`` drops channel c. The engine adds ``λ · alpha_l1(model, frozen)`` to
    the loss (assignment §4.2: L̃ = L + λ‖α‖₁). Returns a 0-d tensor (0 when there is no site).
    """
    skip = skip or set()
    terms: list[Tensor] = []
    for name, module in relu_alpha_modules(model):
        if name in skip:
            continue
        magnitudes = module.alpha().abs()
        if module.granularity == "channel":
            keep = [f"{name}[{c}]" not in skip for c in range(module.num_channels)]
            if not all(keep):
                mask = torch.tensor(keep, device=magnitudes.device)
                magnitudes = magnitudes[mask]
        terms.append(magnitudes.sum())
    if not terms:
        parameter = next(model.parameters(), None)
        return torch.zeros((), device=parameter.device if parameter is not None else None)
    return torch.stack(terms).sum()


def set_step_nu(model: nn.Module, nu_step: float) -> None:
    """Every anneal site's training forwards use ν + ``nu_step`` (the increment of the step in
    progress, as seed 004); 0 restores plain ν. Penalty sites are unaffected."""
    if not math.isfinite(nu_step) or nu_step < 0:
        raise ConfigError(f"activation.nu_step={nu_step!r} must be finite and >= 0")
    for _, module in relu_alpha_modules(model):
        if module.mode == "anneal":
            module.step_nu = float(nu_step)


def anneal_step(model: nn.Module, nu_step: float) -> None:
    """Call after every optimizer step: ν += ``nu_step`` on anneal sites, and project penalty
    sites' α back onto [0, 1] (so one call serves both modes)."""
    for _, module in relu_alpha_modules(model):
        module.post_step(nu_step)


@torch.no_grad()
def current_alphas(model: nn.Module) -> dict[str, Tensor]:
    """Site name -> detached CPU copy of its α (0-d or ``[C]``); feeds ``OscillationTracker``."""
    return {name: m.alpha().detach().cpu().clone() for name, m in relu_alpha_modules(model)}


@torch.no_grad()
def alpha_stats(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per site: ``{"mean"}`` (layer) or ``{"mean", "min", "max", "std"}`` (channel).

    ``std`` is the population standard deviation over channels (0 for a single channel).
    """
    stats: dict[str, dict[str, float]] = {}
    for name, module in relu_alpha_modules(model):
        alpha = module.alpha().detach().to(torch.float64)
        entry = {"mean": alpha.mean().item()}
        if module.granularity == "channel":
            entry["min"] = alpha.min().item()
            entry["max"] = alpha.max().item()
            entry["std"] = alpha.std(correction=0).item()
        stats[name] = entry
    return stats


class OscillationTracker:
    """Freezes α's out of the L1 penalty when they keep oscillating (assignment §4.2, task 3).

    Fed once per epoch with every site's α (``current_alphas``). A unit — a site name for
    ``layer`` granularity, ``site[c]`` for channel c of a ``channel`` site — is frozen when the
    sign of its epoch-to-epoch change flips more than ``k`` times among its last ``window``
    changes (the last ``window + 1`` values). Changes with |Δα| ≤ ``tolerance`` carry no sign
    (neither flip nor reset), so an α parked at 0 or 1, chattering by rounding or by the
    projection, is not mistaken for an oscillation. Frozen is permanent; pass ``frozen`` as
    ``skip`` to ``alpha_l1``.
    """

    def __init__(self, k: int, window: int, tolerance: float = 1e-4) -> None:
        if k < 0:
            raise ConfigError(f"activation.oscillation_k={k!r} must be >= 0")
        if window < 2:
            raise ConfigError(f"activation.oscillation_window={window!r} must be >= 2")
        if tolerance < 0:
            raise ConfigError(f"activation.oscillation_tolerance={tolerance!r} must be >= 0")
        self.k = k
        self.window = window
        self.tolerance = tolerance
        self._history: dict[str, list[float]] = {}
        self._frozen: list[str] = []
        self._last_epoch: int | None = None

    @property
    def frozen(self) -> set[str]:
        """Names of the units frozen out of the penalty so far."""
        return set(self._frozen)

    def update(self, epoch: int, alphas: dict[str, Tensor]) -> list[str]:
        """Record this epoch's α's; return the unit names newly frozen (in site/channel order).

        An ``epoch`` not later than the last one recorded is ignored (returns ``[]``), so
        re-feeding an epoch after a resume changes nothing.
        """
        if self._last_epoch is not None and epoch <= self._last_epoch:
            return []
        self._last_epoch = epoch
        frozen_now = set(self._frozen)
        newly_frozen: list[str] = []
        for site, alpha in alphas.items():
            values = alpha.detach().to(torch.float64).reshape(-1).tolist()
            names = [site] if alpha.dim() == 0 else [f"{site}[{c}]" for c in range(len(values))]
            for name, value in zip(names, values):
                history = self._history.setdefault(name, [])
                history.append(value)
                del history[: -(self.window + 1)]
                if name not in frozen_now and self._sign_flips(history) > self.k:
                    newly_frozen.append(name)
        self._frozen.extend(newly_frozen)
        return newly_frozen

    def _sign_flips(self, history: list[float]) -> int:
        signs = [
            1 if after > before else -1
            for before, after in itertools.pairwise(history)
            if abs(after - before) > self.tolerance
        ]
        return sum(1 for a, b in itertools.pairwise(signs) if a != b)

    def state_dict(self) -> dict:
        return {
            "k": self.k,
            "window": self.window,
            "tolerance": self.tolerance,
            "history": {name: list(values) for name, values in self._history.items()},
            "frozen": list(self._frozen),
            "last_epoch": self._last_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore history, frozen units and last epoch; k/window/tolerance stay as constructed
        (histories are trimmed to the current window)."""
        self._history = {
            name: list(values)[-(self.window + 1) :] for name, values in state["history"].items()
        }
        self._frozen = list(state["frozen"])
        self._last_epoch = state["last_epoch"]


def fold_linear_alphas(model: nn.Module, threshold: float) -> list[str]:
    """Replace, in place, every ReLUAlpha whose α ≤ ``threshold`` on all channels by
    ``nn.Identity``; return the replaced names (module order).

    The replacement drops α·ReLU(−x): the function is unchanged only for α exactly 0
    (``threshold=0``); otherwise each folded site's output moves by at most threshold·|x⁻|.
    Every registration of a shared module instance is replaced.
    """
    replaced: list[str] = []
    for name, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, ReLUAlpha):
            continue
        if name == "":
            raise ValueError("fold_linear_alphas: the model itself is a ReLUAlpha; wrap it")
        if module.alpha().detach().max().item() <= threshold:
            replaced.append(name)
    for name in replaced:
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, nn.Identity())
    return replaced
