"""Hyperplane-arrangement statistics of conv filters (and optionally linear neurons).

After Gamba, Carlsson, Azizpour & Björkman, "Hyperplane Arrangements of Trained ConvNets Are
Biased" (arXiv 2003.07797; HP@867d0fd:compute_projections.py, docs/definitions.md §3.1–3.2).

Each filter i of a conv layer, with weight W_i (bias ignored), defines a hyperplane whose normal
is w_i = vec(W_i) ∈ R^n. The statistic is the projection of the all-ones vector 1 (the diagonal
of the positive orthant, where post-ReLU inputs live) onto that normal. It is weight-only and
data-free, so it is cheap to log every epoch.

Grouped and depthwise convs: the weight is ``[C_out, C_in/groups, *kernel]``, and the normal of
output channel i is its own slice, n = C_in/groups · prod(kernel) — the filter only sees the
inputs of its group. ``nn.Linear``: row j of the weight is the normal of neuron j, n = in_features.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# which layers a per-layer analysis (re-init robustness) visits: conv, or conv and nn.Linear
LAYER_SETS = ("conv", "conv+linear")


def included_layers(
    model: nn.Module, with_linear: bool = False, skip_pointwise: bool = True
) -> list[tuple[str, nn.Module]]:
    """The layers whose filters define hyperplanes, in ``model.named_modules()`` order.

    Conv1d/2d/3d layers, minus pointwise ones (every kernel size 1, e.g. 1×1 shortcut convs) when
    ``skip_pointwise`` (HP skips 1×1 convs); plus ``nn.Linear`` layers when ``with_linear``.
    """
    layers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, CONV_TYPES):
            if skip_pointwise and all(size == 1 for size in module.kernel_size):
                continue
            layers.append((name, module))
        elif with_linear and isinstance(module, nn.Linear):
            layers.append((name, module))
    return layers


def _filter_normals(module: nn.Module) -> Tensor:
    """``[num_filters, n]`` float64 matrix whose rows are the filter normals vec(W_i)."""
    weight = module.weight.detach()
    return weight.reshape(weight.shape[0], -1).to(torch.float64)


def filter_projections(module: nn.Module, normalize: bool = True) -> Tensor:
    """Per-filter projection of 1 onto the filter normal, ``[num_filters]`` float64.

    raw:       p_i = ⟨w_i, 1⟩ = Σ entries of W_i
    normalize: p_i = ⟨w_i, 1⟩ / (‖w_i‖₂ · √n) = cos∠(w_i, 1) ∈ [−1, 1]

    A zero filter has no direction; its cosine is defined as 0 (so it counts towards ``mass``,
    the fraction p ≤ 0, exactly as its raw sum 0 does). Computed in float64; the cosine is
    clamped to [−1, 1] against rounding.
    """
    normals = _filter_normals(module)
    sums = normals.sum(dim=1)
    if not normalize:
        return sums
    norms = torch.linalg.vector_norm(normals, dim=1) * math.sqrt(normals.shape[1])
    safe_norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    cosines = torch.where(norms > 0, sums / safe_norms, torch.zeros_like(sums))
    return cosines.clamp(-1.0, 1.0)


def _summary(projections: Tensor) -> dict:
    """``projections`` as a list, their mean, and mass = ECDF at 0 = fraction p ≤ 0.

    An empty set of filters gives mean and mass NaN.
    """
    if projections.numel() == 0:
        return {"projections": [], "mean": math.nan, "mass": math.nan}
    return {
        "projections": projections.tolist(),
        "mean": projections.mean().item(),
        "mass": (projections <= 0).to(torch.float64).mean().item(),
    }


def projection_stats(
    model: nn.Module,
    normalize: bool = True,
    with_linear: bool = False,
    skip_pointwise: bool = True,
) -> dict:
    """Projection statistic of every included layer and of the whole network (HP §3.1).

    Returns ``{"layers": [{"name", "projections", "mean", "mass"}, ...] (module order),
    "net": {"projections", "mean", "mass"}}``, where ``projections`` has one float per filter
    (see ``filter_projections``), ``mean`` is their mean and ``mass`` the fraction of filters with
    p ≤ 0. ``net`` pools the filters of all included layers (each filter weighs the same, so
    wide layers dominate), as HP's ``net`` entry does.
    """
    layers = []
    per_layer: list[Tensor] = []
    for name, module in included_layers(model, with_linear, skip_pointwise):
        projections = filter_projections(module, normalize)
        per_layer.append(projections)
        layers.append({"name": name, **_summary(projections)})
    pooled = torch.cat(per_layer) if per_layer else torch.empty(0, dtype=torch.float64)
    return {"layers": layers, "net": _summary(pooled)}


def distance_from_init(
    model: nn.Module,
    init_state_dict: dict[str, Tensor],
    with_linear: bool = True,
    skip_pointwise: bool = True,
) -> dict[str, dict[str, float]]:
    """Relative distance of each included layer's weight from its initial value (HP §3.2).

    l2_dist    = ‖W − W₀‖_F / ‖W₀‖_F
    l_inf_dist = max|W − W₀| / max|W₀|

    Weights only (no bias). ``init_state_dict`` uses the model's own state_dict keys
    (``<layer name>.weight``), e.g. the epoch-0 checkpoint. Linear layers are included by
    default (HP's MLP recipe uses ``--with-linear --init-from``), unlike ``projection_stats``.
    A zero W₀ gives 0.0 when W is also zero and ``inf`` otherwise. Computed in float64.
    """
    distances: dict[str, dict[str, float]] = {}
    for name, module in included_layers(model, with_linear, skip_pointwise):
        key = f"{name}.weight"
        if key not in init_state_dict:
            raise KeyError(f"init_state_dict has no {key!r} (layer {name!r} of the model)")
        weight = module.weight.detach().to(torch.float64)
        initial = init_state_dict[key].detach().to(device=weight.device, dtype=torch.float64)
        if initial.shape != weight.shape:
            raise ValueError(
                f"init_state_dict[{key!r}] has shape {tuple(initial.shape)}, "
                f"the model's weight {tuple(weight.shape)}"
            )
        difference = weight - initial
        distances[name] = {
            "l2_dist": _ratio(
                torch.linalg.vector_norm(difference).item(),
                torch.linalg.vector_norm(initial).item(),
            ),
            "l_inf_dist": _ratio(difference.abs().max().item(), initial.abs().max().item()),
        }
    return distances


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return 0.0 if numerator == 0 else math.inf
