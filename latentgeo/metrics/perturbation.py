"""DeepFool perturbation score (BE's ``perturbation_score``, after LTS4/DeepFool).

BE@9465647:binary_encoding/deepfool.py is LTS4/DeepFool's ``Python/deepfool.py`` (Moosavi-Dezfooli,
Fawzi & Frossard 2016) with the step r_i = (|f_k|/‖w_k‖ + 1e-4)·w_k/‖w_k‖. BE scores a model by
the mean over 1000 normalised test images of ‖r‖₂/‖x‖₂ with overshoot 0.02, max_iter 50 and the
10 top-logit classes as candidates (docs/definitions.md §1.5).

:func:`deepfool` runs the algorithm batched over images; the tests compare it with a
straightforward one-image port of the LTS4 loop (``tests/reference_deepfool.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# LTS4's step: the linearised distance to the boundary plus this, along the unit normal.
STEP_EPSILON = 1e-4


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Model output, or element 0 of it when the model returns a tuple (logits, x_pen)."""
    output = model(images)
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    training_flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, was_training in training_flags:
            module.training = was_training


def _check_arguments(num_candidates: int, max_iter: int) -> None:
    if num_candidates < 2:
        raise ValueError(f"num_candidates={num_candidates!r}: need at least 2 (label + 1 target)")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r}: need at least 1 iteration")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("DeepFool needs input gradients: call it outside torch.inference_mode()")


def _flat_norm(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flatten(1).norm(dim=1)


def deepfool(
    model: nn.Module,
    images: torch.Tensor,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched DeepFool (LTS4 algorithm with BE's step); returns per-image results.

    For each image x with clean logits f, ``label`` = argmax f and the candidate targets are the
    next top-logit classes (the top ``min(num_candidates, C)`` logits of the clean image). At
    the current point x + (1+overshoot)·r_tot, for every candidate k ≠ label:

        w_k = ∇ₓ(f_k − f_label),   f'_k = f_k − f_label,   k̂ = argmin_k |f'_k| / ‖w_k‖,
        r_i = (|f'_k̂| / ‖w_k̂‖ + 1e-4) · w_k̂ / ‖w_k̂‖,   r_tot ← r_tot + r_i,

    repeated until argmax over *all* classes at x + (1+overshoot)·r_tot differs from ``label``, or
    ``max_iter`` steps. The result is r = (1+overshoot)·r_tot (LTS4 returns this scaled value).
    Ties in k̂ go to the higher-ranked candidate, as LTS4's strict ``pert_k < pert``.

    Batching: each iteration does one forward pass of the still-active images and one backward
    pass per candidate (``torch.autograd.grad`` of Σ_b (f_k − f_label)(x_b) w.r.t. the input only);
    images that flipped drop out and stop changing. This gives per-sample gradients **only if
    samples do not interact** in the forward pass: true in eval mode (BatchNorm uses running
    statistics, dropout is off), which this function sets for the call and undoes afterwards
    (each submodule's own flag is restored). Parameters are not touched and no ``.grad`` is
    written. A model whose eval-mode forward still mixes samples is not supported. Autocast is
    disabled inside (DeepFool runs in the dtype of ``images`` and the model, as BE's float32).

    Deviation from LTS4: an image for which every ‖w_k‖ is 0 (no gradient, e.g. all-dead ReLUs)
    stops with r_tot unchanged and ``flipped`` False, where LTS4 would produce NaN.

    Args:
        model: returns logits [B, C], or a tuple whose element 0 is the logits.
        images: [B, ...] inputs as the model sees them (BE: normalised images).
        overshoot, max_iter, num_candidates: LTS4/BE defaults 0.02, 50, 10.
    Returns:
        (perturbations [B, ...] = (1+overshoot)·r_tot, iterations [B] (long), flipped [B] (bool)).
    """
    _check_arguments(num_candidates, max_iter)
    clean = images.detach().clone()  # a normal tensor even if `images` came from inference mode
    batch_size = clean.shape[0]
    r_tot = torch.zeros_like(clean)
    iterations = torch.zeros(batch_size, dtype=torch.long, device=clean.device)
    flipped = torch.zeros(batch_size, dtype=torch.bool, device=clean.device)
    if batch_size == 0:
        return r_tot, iterations, flipped

    # full precision even inside the engine's bf16 autocast: the steps are small differences
    full_precision = torch.autocast(clean.device.type, enabled=False)
    with _eval_mode(model), torch.enable_grad(), full_precision:
        with torch.no_grad():
            clean_logits = _logits(model, clean)
        num_kept = min(num_candidates, clean_logits.shape[1])
        candidates = clean_logits.argsort(dim=1, descending=True)[:, :num_kept]  # [B, K]
        labels = candidates[:, 0]
        active = torch.arange(batch_size, device=clean.device)

        for step in range(max_iter + 1):
            point = (clean[active] + (1 + overshoot) * r_tot[active]).requires_grad_(True)
            logits = _logits(model, point)
            if step > 0:  # LTS4 checks the flip after each step; the clean point is not checked
                changed = logits.detach().argmax(dim=1) != labels[active]
                flipped[active[changed]] = True
            else:
                changed = torch.zeros_like(labels, dtype=torch.bool)
            if step == max_iter or bool(changed.all()):
                break

            keep = ~changed
            label_logit = logits.gather(1, labels[active, None])  # [b, 1]
            best_pert = torch.full_like(label_logit[:, 0].detach(), math.inf)
            best_direction = torch.zeros_like(point)
            for k in range(1, num_kept):
                difference = logits.gather(1, candidates[active, k, None]) - label_logit  # [b, 1]
                (normal,) = torch.autograd.grad(difference.sum(), point, retain_graph=True)
                normal_norm = _flat_norm(normal)
                pert = difference.detach()[:, 0].abs() / normal_norm  # inf where the norm is 0
                better = pert < best_pert
                best_pert = torch.where(better, pert, best_pert)
                best_direction[better] = normal[better]
            del logits, label_logit, point

            usable = keep & torch.isfinite(best_pert)
            tiny = torch.finfo(best_direction.dtype).tiny  # rows with zero norm are not usable
            unit = best_direction / _flat_norm(best_direction).clamp_min(tiny).view(
                -1, *[1] * (clean.dim() - 1)
            )
            step_size = (best_pert + STEP_EPSILON).view(-1, *[1] * (clean.dim() - 1))
            r_tot[active[usable]] += (step_size * unit)[usable]
            iterations[active[usable]] += 1
            active = active[usable]
            if active.numel() == 0:
                break

    return (1 + overshoot) * r_tot, iterations, flipped


def deepfool_score(
    model: nn.Module,
    images: torch.Tensor,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
) -> float:
    """BE's perturbation score: mean over images of ‖r(x)‖₂ / ‖x‖₂ (BE@9465647 deepfool.py).

    r(x) is the DeepFool perturbation of :func:`deepfool` (LTS4 algorithm, BE's step,
    r = (1+overshoot)·Σ r_i). Images that did not flip within ``max_iter`` are included with
    their last r, as BE does. ``images`` are the inputs as the model sees them (BE: a random batch
    of 1000 normalised test images). Larger = more robust.
    """
    if images.shape[0] == 0:
        raise ValueError("images: empty batch, need at least one image")
    perturbations, _, _ = deepfool(model, images, overshoot, max_iter, num_candidates)
    ratio = _flat_norm(perturbations.double()) / _flat_norm(images.detach().double())
    return float(ratio.mean())
