"""The training loop's parts: LR and γ schedules, the optimizer, the loss, one training epoch,
ReLU_α's hooks and the speed switches. ``engine.fit`` strings them together; the DIB decoders
and the LR range test reuse ``train_epoch`` and ``build_optimizer``.

Loop layer: imports foundation and components only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentgeo.config import (
    HeadConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainerConfig,
)
from latentgeo.data.loaders import Loader, Loaders
from latentgeo.models.base import HEADS
from latentgeo.models.relu_alpha import (
    OscillationTracker,
    alpha_l1,
    anneal_step,
    current_alphas,
    relu_alpha_modules,
    set_step_nu,
)
from latentgeo.records import RunFailed
from latentgeo.runtime import separate_compile_cache


class TrainingDiverged(RunFailed):
    """Loss became NaN or infinite."""


# ---------------------------------------------------------------------------- schedules


def gamma_at(epoch: int, start: float, factor: float, step: int, maximum: float) -> float:
    """γ used while training ``epoch`` (1-based), BE §1.3: after every epoch e with
    e % step == 0 and while γ < maximum, γ ← γ·factor. Epoch 1 trains with ``start``.
    (As in BE the last multiplication may overshoot ``maximum`` once: 0.01·1.05^378 ≈ 1.02e6.)
    """
    gamma = start
    for e in range(1, epoch):
        if e % step == 0 and gamma < maximum:
            gamma *= factor
    return gamma


def head_gamma(head: HeadConfig, epoch: int) -> float | None:
    """The γ of ``epoch`` for a compressed head (bin_enc); None for the others."""
    if not HEADS[head.name].compressed:
        return None
    return gamma_at(epoch, head.gamma_start, head.gamma_factor, head.gamma_step, head.gamma_max)


def lr_factor(epoch: int, schedule: ScheduleConfig, epochs: int) -> float:
    """Multiplier of the base LR while training ``epoch`` (1-based).

    step: BE's delayed StepLR — stepped once after each epoch e > start_epoch, so epoch e has
    had max(0, e-1-start_epoch) steps and the LR is factor^floor(steps/step_size).
    cosine: from 1 to min_lr/base over the run.
    """
    return SCHEDULES[schedule.name](epoch, schedule, epochs)


def _step_factor(epoch: int, schedule: ScheduleConfig, epochs: int) -> float:
    steps = max(0, epoch - 1 - schedule.start_epoch)
    return schedule.factor ** (steps // schedule.step_size)


def _cosine_factor(epoch: int, schedule: ScheduleConfig, epochs: int) -> float:
    return math.cos(math.pi * (epoch - 1) / epochs) * 0.5 + 0.5


# schedule.name -> (epoch, schedule, epochs) -> LR multiplier: the allowed schedule names
SCHEDULES: dict[str, Callable[[int, ScheduleConfig, int], float]] = {
    "constant": lambda epoch, schedule, epochs: 1.0,
    "step": _step_factor,
    "cosine": _cosine_factor,
}


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, factor: float,
                      schedule: ScheduleConfig) -> float:
    """Set every param group's LR; cosine ends at ``min_lr``; with ``keep_output_lr`` (BE) the
    ``output`` group stays at the base LR. Returns the body's LR."""
    lr = base_lr * factor
    if schedule.name == "cosine":
        lr = schedule.min_lr + (base_lr - schedule.min_lr) * factor
    for group in optimizer.param_groups:
        group["lr"] = base_lr if group.get("name") == "output" and schedule.keep_output_lr else lr
    return lr


# optimizer.name -> (param groups, optimizer config) -> optimizer: the allowed names
OPTIMIZERS: dict[str, Callable[[list[dict], OptimizerConfig], torch.optim.Optimizer]] = {
    "adamw": lambda groups, o: torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay),
    "adam": lambda groups, o: torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay),
    "sgd": lambda groups, o: torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum,
                                             weight_decay=o.weight_decay, nesterov=o.nesterov),
}


def build_optimizer(optimizer: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """adamw / adam / sgd; the output layer is its own group (BE keeps it at the base LR);
    ReLU_α parameters get no weight decay (it would act as a hidden extra penalty on α).
    ``model`` needs ``output_parameters()`` (a Classifier, or the DIB's decoder set)."""
    output_ids = {id(p) for p in model.output_parameters()}
    alpha_ids = {id(p) for _, m in relu_alpha_modules(model) for p in m.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in output_ids | alpha_ids],
         "name": "body"},
        {"params": [p for p in model.parameters() if id(p) in output_ids], "name": "output"},
    ]
    if alpha_ids:
        groups.append({"params": [p for p in model.parameters() if id(p) in alpha_ids],
                       "name": "alpha", "weight_decay": 0.0})
    return OPTIMIZERS[optimizer.name](groups, optimizer)


# ---------------------------------------------------------------------------- loss


# head.penalty -> the compression penalty on x_pen that γ multiplies (BE §1.3; BE-dev's
# loss_pen_funct); the one list of the allowed names (``validate`` reads it)
PENALTIES: dict[str, Callable[[Tensor], Tensor]] = {
    "mse": lambda x_pen: x_pen.pow(2).mean(),  # BE: mse_loss(x_pen, 0)
    "exp": lambda x_pen: torch.exp(x_pen.pow(2).mean()),  # BE-dev: exp(mean x²)
    "l1": lambda x_pen: x_pen.abs().mean(),  # BE-dev: mean |x|
}


def loss_terms(logits: Tensor, x_pen: Tensor, y: Tensor, gamma: float | None,
               head_penalty: str = "mse") -> Tensor:
    """CE(logits, y) + γ·penalty(x_pen) (the latter only for bin_enc, when γ is given);
    ``head_penalty`` names the penalty (``PENALTIES``: mse, exp, l1)."""
    loss = nn.functional.cross_entropy(logits, y)
    if gamma is not None:
        loss = loss + gamma * PENALTIES[head_penalty](x_pen)
    return loss


class ReluAlphaHooks:
    """What a model with ReLU_α sites adds to the loop: the L1 penalty on α (penalty mode),
    ν annealing / projection after every step, and freezing oscillating α's out of the
    penalty (``activation.freeze_oscillating``). Their statistics are the ``alpha`` family.
    Anneal mode as seed 004: optimizer step t trains with ν = init_nu + nu_step·t (the
    training forwards add the step's increment, ``set_step_nu``; ν itself is raised after
    the step), so the first step already gives γ a gradient."""

    def __init__(self, activation_cfg, model: nn.Module) -> None:
        self.cfg = activation_cfg
        self.model = model
        set_step_nu(model, activation_cfg.nu_step)
        self.tracker = (OscillationTracker(activation_cfg.oscillation_k,
                                           activation_cfg.oscillation_window)
                        if activation_cfg.freeze_oscillating else None)

    def penalty(self) -> Tensor:
        if self.cfg.mode != "penalty" or self.cfg.l1 == 0:
            return torch.zeros(())
        frozen = self.tracker.frozen if self.tracker is not None else None
        return self.cfg.l1 * alpha_l1(self.model, skip=frozen)

    def after_step(self) -> None:
        anneal_step(self.model, self.cfg.nu_step)

    def epoch_end(self, epoch: int) -> dict[str, Any]:
        """``alpha/frozen``: the sites newly frozen after ``epoch`` (none unless freezing)."""
        out: dict[str, Any] = {}
        if self.tracker is not None:
            newly = self.tracker.update(epoch, current_alphas(self.model))
            if newly:
                out["alpha/frozen"] = sorted(newly)
        return out


# (model, x, y) -> (loss, number of correct predictions); every training loop uses one.
LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


def classifier_loss(gamma: float | None, penalty: Callable[[], Tensor] | None = None,
                    head_penalty: str = "mse") -> LossFn:
    """The main run's loss: CE (+ γ·``head_penalty``(x_pen) for bin_enc, ``loss_terms``)
    (+ an extra penalty term, e.g. ReLU_α's L1)."""

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits, x_pen = model(x)
        loss = loss_terms(logits.float(), x_pen.float(), y, gamma, head_penalty)
        if penalty is not None:
            loss = loss + penalty()
        return loss, (logits.detach().argmax(1) == y).sum()

    return loss_fn


def train_epoch(model: nn.Module, loader: Loader, optimizer: torch.optim.Optimizer,
                epoch: int, loss_fn: LossFn, bar: tqdm | None = None,
                after_step: Callable[[], bool | None] | None = None,
                autocast_dtype: torch.dtype | None = None,
                max_steps: int | None = None) -> dict[str, float]:
    """One pass over the shuffled train split, or its first ``max_steps`` steps; an
    ``after_step`` that returns True ends it after that step (the LR range test's early stop).
    Loss and hits accumulate on the device; the host reads them only every ``REFRESH`` steps
    (for the progress bar) and at the end."""
    model.train()
    device_type = loader.device.type
    loss_sum = torch.zeros((), device=loader.device)
    hits = torch.zeros((), device=loader.device, dtype=torch.long)
    seen = 0
    for step, (x, y) in enumerate(loader.epoch(epoch), 1):
        with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            loss, correct = loss_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stop = after_step() if after_step is not None else False
        loss_sum += loss.detach() * len(y)
        hits += correct
        seen += len(y)
        if bar is not None:
            bar.update(1)
            if step % REFRESH == 0:
                bar.set_postfix(epoch=epoch, loss=f"{loss_sum.item() / seen:.4f}",
                                acc=f"{hits.item() / seen:.3f}", refresh=False)
        if stop or step == max_steps:
            break
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"non-finite training loss ({mean_loss}) in epoch {epoch}")
    return {"train/running_loss": mean_loss, "train/running_accuracy": hits.item() / seen}


REFRESH = 20  # progress-bar refresh interval in steps (one host sync each)


# ---------------------------------------------------------------------------- switches


def apply_switches(trainer: TrainerConfig, model: nn.Module, loaders: Loaders
                   ) -> tuple[nn.Module, float | None]:
    """channels_last (model and batches) and torch.compile; returns the module to train and,
    when compiled, the compile time. Evaluation always uses the eager ``model`` in float32."""
    if trainer.channels_last:
        model.to(memory_format=torch.channels_last)
        for loader in (loaders.train, *loaders.eval.values()):
            loader.channels_last = True
    if trainer.compile.lower() == "false":  # the command line's false arrives as "False"
        return model, None
    separate_compile_cache()
    compiled = torch.compile(model, mode=trainer.compile)
    return compiled, warm_up(compiled, model, loaders.train, trainer.precision)


def warm_up(compiled: nn.Module, model: nn.Module, loader: Loader, precision: str) -> float:
    """Compile now (forward + backward on one batch) so compile time stays out of the epoch
    times; weights, BN statistics, gradients and the RNG are left exactly as they were."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shapes: dict[tuple, tuple[Tensor, Tensor]] = {}
    for x, y in loader.epoch(0):  # the full-batch shape and the last (partial) one
        shapes.setdefault(tuple(x.shape), (x, y))
    devices = [loader.device] if loader.device.type == "cuda" else []
    tic = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        model.train()
        for x, y in shapes.values():
            with torch.autocast(loader.device.type, dtype=torch.bfloat16,
                                enabled=precision == "bf16"):
                loss, _ = classifier_loss(None)(compiled, x, y)
            loss.backward()
    seconds = time.perf_counter() - tic
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    return seconds
