"""The reference the batched DeepFool (``latentgeo.metrics.perturbation.deepfool``) is tested
against: a line-by-line, one-image port of LTS4/DeepFool ``Python/deepfool.py`` with BE's step."""

from __future__ import annotations

import math

import torch
from torch import nn

from latentgeo.metrics.perturbation import STEP_EPSILON
from latentgeo.metrics.perturbation import _check_arguments as check_arguments
from latentgeo.metrics.perturbation import _eval_mode as eval_mode
from latentgeo.metrics.perturbation import _logits as logits_of


def deepfool_single(
    model: nn.Module,
    image: torch.Tensor,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
) -> tuple[torch.Tensor, int, bool]:
    """Reference: a line-by-line port of LTS4/DeepFool ``Python/deepfool.py`` for one image.

    Same algorithm and formulas as :func:`deepfool` (see there), with BE's step
    r_i = (pert + 1e-4)·w/‖w‖, gradients of f_k and f_label taken separately and subtracted as
    LTS4 does, one candidate at a time. Too slow for evaluation.
    ``image`` is one input without batch dimension. Returns ((1+overshoot)·r_tot, iterations,
    flipped).
    """
    check_arguments(num_candidates, max_iter)
    image = image.detach().clone()
    with eval_mode(model), torch.enable_grad():
        with torch.no_grad():
            f_image = logits_of(model, image[None])[0]
        ranked = f_image.argsort(descending=True)[: min(num_candidates, f_image.numel())]
        label = int(ranked[0])

        r_tot = torch.zeros_like(image)
        loop_i = 0
        x = image[None].clone().requires_grad_(True)
        fs = logits_of(model, x)
        k_i = label
        while k_i == label and loop_i < max_iter:
            pert = math.inf
            w = torch.zeros_like(image)
            (grad_orig,) = torch.autograd.grad(fs[0, ranked[0]], x, retain_graph=True)
            for k in range(1, ranked.numel()):
                (cur_grad,) = torch.autograd.grad(fs[0, ranked[k]], x, retain_graph=True)
                w_k = (cur_grad - grad_orig)[0]
                f_k = float(fs[0, ranked[k]].detach() - fs[0, ranked[0]].detach())
                pert_k = abs(f_k) / float(w_k.norm())  # ZeroDivisionError: w_k = 0, see deepfool
                if pert_k < pert:
                    pert, w = pert_k, w_k
            r_i = (pert + STEP_EPSILON) * w / w.norm()
            r_tot = r_tot + r_i
            x = (image + (1 + overshoot) * r_tot)[None].clone().requires_grad_(True)
            fs = logits_of(model, x)
            k_i = int(fs.detach()[0].argmax())
            loop_i += 1
    return (1 + overshoot) * r_tot, loop_i, k_i != label
