"""LR range test (Smith 2017, "Cyclical Learning Rates"; fastai / Lightning ``lr_find``; TH's
``--tune``, docs/definitions.md §2.7).

    python -m latentgeo.analysis.lr_find [the usual Hydra overrides]
        [optimizer.lr_find.min_lr=1e-8] [optimizer.lr_find.max_lr=1]
        [optimizer.lr_find.steps=100] [optimizer.lr_find.early_stop_threshold=4]

Trains the run's freshly initialised model (``trainer.seed``, as ``train`` builds it) for up
to ``steps`` optimizer steps on the run's training batches with the run's optimizer and loss,
the LR ramped exponentially from ``min_lr`` to ``max_lr``:
lr_i = min_lr·(max_lr/min_lr)^(i/(steps−1)), i = 0..steps−1, evenly spaced in log lr with both
ends included (Lightning's ladder never visits the exponent 1/steps: its step 1 jumps to 2/steps).
After step i the raw loss L_i is smoothed as fastai does: a_i = β·a_{i−1} + (1−β)·L_i, a_{−1} = 0,
S_i = a_i / (1 − β^(i+1)), β = 0.98 (Lightning divides by 1 − β^(i+2), one step off). Stop after
step i ≥ 1 when S_i > ``early_stop_threshold`` · min_{j<i} S_j (Lightning's rule, 4 by default),
or at once when L_i is not finite (Lightning keeps stepping on NaN).

Suggestion (Lightning's ``suggestion``): drop the first 10 points and the last one, keep the
finite ones, differentiate S w.r.t. log lr (``numpy.gradient``, non-uniform spacing allowed) and
return the LR at the most negative slope, i.e. where the smoothed loss falls fastest on the usual
log-LR plot. On an exponential ramp that is the argmin of ``torch.gradient(losses)`` (unit
spacing), what Lightning did before PR #21055 (merged Aug 2025), so most likely what TH's runs
used; it is also what Lightning's fix for its exponential mode computes (differentiate
w.r.t. log10(lr), issue #21141 / PR #21171). PR #21055 differentiated w.r.t. lr itself
(``spacing=[lrs]``): on an exponential ramp that divides each slope by its lr, so the
smallest candidates dominate; latentgeo's ``slope=lr`` copied that, returned the smallest
candidate on every curve tried, and was removed (``optimizer.lr_find.slope`` now only allows
``log_lr``, so that old config.yaml files still read). No suggestion (None) when fewer than 2
points remain.

Writes ``lr_find.json`` (``lrs``, ``losses`` (raw), ``smoothed``, ``suggestion``,
``suggestion_index``, ``stopped_early`` and the settings) and ``lr_find.png`` into the Hydra run
dir, and prints the suggestion. The model's weights and buffers are restored exactly.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import Tensor, nn

from latentgeo.build import build_loaders, check_data, check_names, load_data, resolve_device
from latentgeo.config import (
    ConfigError,
    LRFindConfig,
    TrainConfig,
    check_values,
    to_typed,
    with_changes,
)
from latentgeo.data import DataBundle, DatasetUnavailable, Loader
from latentgeo.loop import (
    LossFn,
    ReluAlphaHooks,
    TrainingDiverged,
    build_optimizer,
    classifier_loss,
    head_gamma,
    train_epoch,
)
from latentgeo.models import build_model
from latentgeo.models.relu_alpha import relu_alpha_modules
from latentgeo.records import RunDir
from latentgeo.runtime import set_threads

DEFAULTS = LRFindConfig()  # Lightning's defaults (Tuner.lr_find, _LRCallback, suggestion)
SKIP_BEGIN, SKIP_END = 10, 1

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


# ---------------------------------------------------------------------------- the curve


def lr_ramp(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """min_lr·(max_lr/min_lr)^(i/(steps−1)) for i = 0..steps−1 (both ends included)."""
    if not 0 < min_lr < max_lr or not math.isfinite(max_lr):
        raise ValueError(f"min_lr={min_lr}, max_lr={max_lr}: need 0 < min_lr < max_lr < inf")
    if steps < 2:
        raise ValueError(f"steps={steps} must be >= 2")
    return [float(v) for v in np.geomspace(min_lr, max_lr, steps)]


def smooth_losses(losses: list[float], beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average S_i = a_i / (1 − β^(i+1)) (module docstring)."""
    average, smoothed = 0.0, []
    for step, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** (step + 1)))
    return smoothed


def suggestion_index(lrs: list[float], smoothed: list[float],
                     skip_begin: int = SKIP_BEGIN, skip_end: int = SKIP_END) -> int | None:
    """Index of the steepest descent of ``smoothed`` w.r.t. log lr, Lightning's rule:
    points [skip_begin, len − skip_end), finite ones only; None when fewer than 2 remain."""
    candidates = [i for i in range(skip_begin, len(smoothed) - skip_end)
                  if math.isfinite(smoothed[i])]
    if len(candidates) < 2:
        return None
    x = np.array([lrs[i] for i in candidates])
    gradient = np.gradient(np.array([smoothed[i] for i in candidates]), np.log(x))
    return candidates[int(np.argmin(gradient))]


# ---------------------------------------------------------------------------- the test


def lr_find(model: nn.Module, loader: Loader, optimizer_factory: OptimizerFactory,
            loss_fn: LossFn, min_lr: float = DEFAULTS.min_lr, max_lr: float = DEFAULTS.max_lr,
            steps: int = DEFAULTS.steps,
            early_stop_threshold: float | None = DEFAULTS.early_stop_threshold,
            beta: float = DEFAULTS.beta,
            after_step: Callable[[], None] | None = None,
            autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The LR range test of the module docstring through ``loop.train_epoch`` (epochs 1, 2,
    … of ``loader`` until ``steps`` steps are done or the loss diverges).

    ``optimizer_factory(model)`` builds the run's optimizer (its LR is overwritten every step,
    in every param group); ``loss_fn`` is the run's ``LossFn``; ``after_step`` runs after every
    optimizer step as in training (e.g. ReLU_α annealing); ``autocast_dtype`` as in
    ``train_epoch`` (bf16 training). ``early_stop_threshold=None`` never stops early.
    Afterwards the model holds its initial weights and buffers again, bit for bit, in its
    initial train/eval mode, without gradients; the global RNG state is restored.
    """
    schedule = lr_ramp(min_lr, max_lr, steps)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    raw: list[Tensor] = []
    losses: list[float] = []
    smoothed: list[float] = []
    best = math.inf
    stopped_early = False
    optimizer = optimizer_factory(model)

    def set_lr(lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr

    def recording_loss(m: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss, correct = loss_fn(m, x, y)
        raw.append(loss.detach())
        return loss, correct

    def step_done() -> bool:
        """After each step: record its loss; True (end the test) when the loss diverged."""
        nonlocal best, stopped_early
        if after_step is not None:
            after_step()
        step = len(losses)
        losses.append(float(raw[-1]))  # one host sync per step, as Lightning's .item()
        smoothed[:] = smooth_losses(losses, beta)  # O(steps²) additions: nothing at 100 steps
        current = smoothed[-1]
        if not math.isfinite(losses[-1]) or (
                early_stop_threshold is not None and step > 0
                and current > early_stop_threshold * best):
            stopped_early = True
            return True
        best = min(best, current)
        if step + 1 < steps:
            set_lr(schedule[step + 1])
        return False

    set_lr(schedule[0])
    device = loader.device
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            epoch = 1
            while len(losses) < steps and not stopped_early:
                train_epoch(model, loader, optimizer, epoch, recording_loss, after_step=step_done,
                            autocast_dtype=autocast_dtype, max_steps=steps - len(losses))
                epoch += 1
    except TrainingDiverged:  # the non-finite loss that ended the test (stopped_early)
        if not stopped_early:
            raise
    finally:
        model.load_state_dict(initial)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    lrs = schedule[:len(losses)]
    index = suggestion_index(lrs, smoothed)
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed,
            "suggestion": lrs[index] if index is not None else None,
            "suggestion_index": index, "stopped_early": stopped_early,
            "min_lr": min_lr, "max_lr": max_lr, "steps": steps,
            "early_stop_threshold": early_stop_threshold, "beta": beta, "slope": "log_lr"}


# ---------------------------------------------------------------------------- from a config


def suggest_lr(cfg: TrainConfig | DictConfig, data: DataBundle, device: torch.device
               ) -> dict[str, Any]:
    """``lr_find`` on the model, optimizer, loss and training batches ``train`` would use: the
    model built with ``trainer.seed`` (the same initialisation as the run), ``build_optimizer``
    (``optimizer.lr`` is ignored, it may be ``auto``), ``classifier_loss`` with epoch 1's γ and
    the ReLU_α penalty / step hooks, ``build_loaders(...).train``, bf16 autocast when
    ``trainer.precision=bf16`` (eager: ``trainer.compile`` is not applied). Global RNG state
    untouched. Settings: ``optimizer.lr_find``."""
    cfg = to_typed(cfg)
    settings = cfg.optimizer.lr_find
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.trainer.seed)
        model = build_model(cfg, data.input_shape, data.num_classes).to(device)
    loaders = build_loaders(cfg, data, device)
    alphas = ReluAlphaHooks(cfg.activation, model) if relu_alpha_modules(model) else None
    loss_fn = classifier_loss(head_gamma(cfg.head, 1), alphas.penalty if alphas else None,
                              cfg.head.penalty)
    # the optimizer is built at min_lr, so a non-numeric optimizer.lr never reaches torch
    optimizer_cfg = with_changes(cfg, optimizer={"lr": float(settings.min_lr)}).optimizer

    def optimizer_factory(m: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(optimizer_cfg, m)

    return lr_find(model, loaders.train, optimizer_factory, loss_fn,
                   min_lr=settings.min_lr, max_lr=settings.max_lr, steps=settings.steps,
                   early_stop_threshold=settings.early_stop_threshold, beta=settings.beta,
                   after_step=alphas.after_step if alphas else None,
                   autocast_dtype=torch.bfloat16 if cfg.trainer.precision == "bf16" else None)


# ---------------------------------------------------------------------------- outputs


def write_lr_find(run: RunDir, result: dict[str, Any]) -> tuple[Path, Path]:
    """``lr_find.json`` (atomic; NaN -> null) and ``lr_find.png`` in the run dir."""
    from latentgeo.figures.analyses import plot_lr_find  # matplotlib: when a figure is drawn

    json_path = run.write_artifact("lr_find", result)
    png_path = run.artifact("lr_find_plot")
    plot_lr_find(result, png_path)
    return json_path, png_path


def run_range_test(cfg: DictConfig) -> None:
    """The command's body: ``suggest_lr`` on the composed config, outputs in the Hydra run dir."""
    run = RunDir(HydraConfig.get().runtime.output_dir)
    try:
        typed = to_typed(cfg)
        check_values(typed)  # no metric family runs here: the values and the names suffice
        check_names(typed)
        data, _ = load_data(typed)
        check_data(typed, data.num_classes)
    except (ConfigError, DatasetUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    set_threads(typed.trainer.num_threads)
    result = suggest_lr(typed, data, resolve_device(typed.trainer.device))
    json_path, png_path = write_lr_find(run, result)
    stop = " (stopped early: loss diverged)" if result["stopped_early"] else ""
    print(f"LR range test: {len(result['losses'])} steps from {result['lrs'][0]:.3g} to "
          f"{result['lrs'][-1]:.3g}{stop}; wrote {json_path} and {png_path}")
    if result["suggestion"] is None:
        print("no suggestion: too few points (raise optimizer.lr_find.steps or max_lr)")
    else:
        print(f"suggested lr: {result['suggestion']:.6g}")


main = hydra.main(version_base=None, config_path="pkg://latentgeo.conf",
                  config_name="train")(run_range_test)


if __name__ == "__main__":
    main()
