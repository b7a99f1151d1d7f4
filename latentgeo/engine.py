"""The fit loop: train steps, evaluation, γ/LR schedules, checkpoint/resume, NaN guard.

Reads top to bottom: ``fit`` builds the optimizer, restores ``last.pt`` if there is one, then
for each epoch trains, evaluates when due, logs one event, and checkpoints.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentgeo.data import DataBundle, TensorLoader
from latentgeo.data.loader import normalize
from latentgeo.metrics import suite
from latentgeo.models import Classifier
from latentgeo.models.relu_alpha import (
    OscillationTracker,
    alpha_l1,
    alpha_stats,
    anneal_step,
    current_alphas,
    relu_alpha_modules,
)
from latentgeo.records import RunRecord, atomic_write_bytes, atomic_write_json

SPLITS = ("train", "test")


class TrainingDiverged(RuntimeError):
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


def lr_factor(epoch: int, schedule, epochs: int) -> float:
    """Multiplier of the base LR while training ``epoch`` (1-based).

    step: BE's delayed StepLR — stepped once after each epoch e > start_epoch, so epoch e has
    had max(0, e-1-start_epoch) steps and the LR is factor^floor(steps/step_size).
    cosine: from 1 to min_lr/base over the run.
    """
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "step":
        steps = max(0, epoch - 1 - schedule.start_epoch)
        return schedule.factor ** (steps // schedule.step_size)
    if schedule.name == "cosine":
        return math.cos(math.pi * (epoch - 1) / epochs) * 0.5 + 0.5
    raise ValueError(f"schedule.name={schedule.name!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, factor: float,
                      schedule) -> float:
    lr = base_lr * factor
    if schedule.name == "cosine":
        lr = schedule.min_lr + (base_lr - schedule.min_lr) * factor
    for group in optimizer.param_groups:
        group["lr"] = base_lr if group.get("name") == "output" and schedule.keep_output_lr else lr
    return lr


def build_optimizer(cfg, model: Classifier) -> torch.optim.Optimizer:
    """adamw / adam / sgd; the output layer is its own group (BE keeps it at the base LR);
    ReLU_α parameters get no weight decay (it would act as a hidden extra penalty on α)."""
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
    opt = cfg.optimizer
    if opt.name == "adamw":
        return torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay)
    if opt.name == "adam":
        return torch.optim.Adam(groups, lr=opt.lr, weight_decay=opt.weight_decay)
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum,
                               weight_decay=opt.weight_decay, nesterov=opt.nesterov)
    raise ValueError(f"optimizer.name={opt.name!r}")


# ---------------------------------------------------------------------------- loss


def loss_terms(logits: Tensor, x_pen: Tensor, y: Tensor, gamma: float | None) -> Tensor:
    """CE(logits, y) + γ·mean(x_pen²) (the latter only for bin_enc, when γ is given)."""
    loss = nn.functional.cross_entropy(logits, y)
    if gamma is not None:
        loss = loss + gamma * x_pen.pow(2).mean()
    return loss


class ReluAlphaHooks:
    """What a model with ReLU_α sites adds to the loop: the L1 penalty on α (penalty mode),
    ν annealing / projection after every step, α statistics every epoch, and freezing
    oscillating α's out of the penalty (``activation.freeze_oscillating``)."""

    def __init__(self, activation_cfg, model: nn.Module) -> None:
        self.cfg = activation_cfg
        self.model = model
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
        out: dict[str, Any] = {}
        for site, stats in alpha_stats(self.model).items():
            out[f"alpha/{site}"] = stats["mean"]
            out.update({f"alpha/{site}/{k}": v for k, v in stats.items() if k != "mean"})
        if self.tracker is not None:
            newly = self.tracker.update(epoch, current_alphas(self.model))
            if newly:
                out["alpha/frozen"] = sorted(newly)
        return out


def apply_switches(trainer, model: nn.Module, loaders: Loaders) -> tuple[nn.Module, float | None]:
    """channels_last (model and batches) and torch.compile; returns the module to train and,
    when compiled, the compile time. Evaluation always uses the eager ``model`` in float32."""
    if trainer.channels_last:
        model.to(memory_format=torch.channels_last)
        for loader in (loaders.train, *loaders.eval.values()):
            loader.channels_last = True
    if trainer.compile == "false":
        return model, None
    compiled = torch.compile(model, mode=trainer.compile)
    return compiled, warm_up(compiled, model, loaders.train, trainer.precision)


def warm_up(compiled: nn.Module, model: nn.Module, loader: TensorLoader, precision: str) -> float:
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


# ---------------------------------------------------------------------------- state


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, obj: dict[str, Any]) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, device: torch.device) -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=True)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# ---------------------------------------------------------------------------- loop


@dataclass
class Loaders:
    train: TensorLoader  # shuffled, augmented when dataset.augment
    eval: dict[str, TensorLoader]  # fixed order, no augmentation
    probe_images: Tensor | None = None  # DeepFool's fixed random test sample, normalised
    ood: TensorLoader | None = None  # metrics.ood.dataset, in the in-dataset's shape/stats

    def eval_inputs(self) -> suite.EvalInputs:
        return suite.EvalInputs(
            splits={name: loader.epoch for name, loader in self.eval.items()},
            probe_images=self.probe_images,
            ood=self.ood.epoch if self.ood is not None else None,
        )


def make_loaders(cfg, data: DataBundle, device: torch.device, ood: DataBundle | None = None
                 ) -> Loaders:
    def loader(split, **kw) -> TensorLoader:
        if cfg.dataset.loader == "torch":  # per-sample transforms, for data that doesn't fit
            from latentgeo.data.torch_loader import TorchLoader

            return TorchLoader(split, data.mean, data.std, device=device,
                               num_workers=cfg.dataset.num_workers, **kw)
        return TensorLoader(split, data.mean, data.std, device=device, **kw)

    train = loader(data.train, batch_size=cfg.trainer.batch_size, shuffle=True,
                   augment=cfg.dataset.augment, seed=cfg.trainer.seed)
    evals = {
        name: loader(getattr(data, name), batch_size=cfg.trainer.eval_batch_size)
        for name in SPLITS + ("val",) if getattr(data, name) is not None
    }
    probe = None
    if cfg.metrics.perturbation.when != "off":
        generator = torch.Generator().manual_seed(cfg.trainer.seed)
        count = min(cfg.metrics.perturbation.samples, len(data.test))
        index = torch.randperm(len(data.test), generator=generator)[:count]
        probe = normalize(data.test.x[index].to(device), data.mean.to(device),
                          data.std.to(device))
    ood_loader = None
    if ood is not None:
        ood_loader = loader(ood.test, batch_size=cfg.trainer.eval_batch_size)
    return Loaders(train, evals, probe, ood_loader)


# (model, x, y) -> (loss, number of correct predictions); every training loop uses one.
LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


def classifier_loss(gamma: float | None, penalty: Callable[[], Tensor] | None = None) -> LossFn:
    """The main run's loss: CE (+ γ·mean(x_pen²) for bin_enc) (+ an extra penalty term)."""

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits, x_pen = model(x)
        loss = loss_terms(logits.float(), x_pen.float(), y, gamma)
        if penalty is not None:
            loss = loss + penalty()
        return loss, (logits.detach().argmax(1) == y).sum()

    return loss_fn


def train_epoch(model: nn.Module, loader: TensorLoader, optimizer: torch.optim.Optimizer,
                epoch: int, loss_fn: LossFn, bar: tqdm | None = None,
                after_step: Callable[[], None] | None = None,
                autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """One pass over the shuffled train split. Loss and hits accumulate on the device; the
    host reads them only every ``REFRESH`` steps (for the progress bar) and at the end."""
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
        if after_step is not None:
            after_step()
        loss_sum += loss.detach() * len(y)
        hits += correct
        seen += len(y)
        if bar is not None:
            bar.update(1)
            if step % REFRESH == 0:
                bar.set_postfix(epoch=epoch, loss=f"{loss_sum.item() / seen:.4f}",
                                acc=f"{hits.item() / seen:.3f}", refresh=False)
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"non-finite training loss ({mean_loss}) in epoch {epoch}")
    return {"train/running_loss": mean_loss, "train/running_accuracy": hits.item() / seen}


REFRESH = 20  # progress-bar refresh interval in steps (one host sync each)


def evaluate(cfg, model: Classifier, loaders: Loaders, last: bool
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One feature pass per split feeding every metric; returns (metrics, features)."""
    return suite.evaluate(cfg, model, loaders.eval_inputs(), last)


def alpha_trajectories(events: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """``alpha.json``: per ReLU_α site, α statistics vs epoch, from the run's events."""
    trajectories: dict[str, dict[str, list]] = {}
    for event in events:
        for key, value in event.items():
            if not key.startswith("alpha/") or key == "alpha/frozen":
                continue
            site, _, stat = key[len("alpha/"):].partition("/")
            entry = trajectories.setdefault(site, {"epochs": []})
            if not stat:
                entry["epochs"].append(event["epoch"])
            entry.setdefault(stat or "mean", []).append(value)
    return trajectories


def dib_evaluation(cfg, model: Classifier, loaders: Loaders, num_classes: int
                   ) -> dict[str, float]:
    """V-sufficiency / V-minimality per block (TH §2.6) on the eager float32 model."""
    from latentgeo.analysis.dib import dib_metrics  # lazy: analysis.dib imports this module

    d = cfg.metrics.dib
    return dib_metrics(model, {s: loaders.eval[s] for s in d.splits if s in loaders.eval},
                       num_classes, cfg.optimizer, list(d.blocks) if d.blocks else None,
                       d.epochs, cfg.trainer.seed, minimality_epochs=d.minimality_epochs,
                       batch_size=d.batch_size or cfg.trainer.batch_size)


def save_penultimate(path, features: dict[str, Any]) -> None:
    """penultimate.npz: final x_pen, labels and predictions of every evaluated split."""
    import io

    arrays = {}
    for split, f in features.items():
        arrays[f"{split}_x_pen"] = f.x_pen.numpy()
        arrays[f"{split}_labels"] = f.labels.numpy()
        arrays[f"{split}_preds"] = f.preds.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def fit(cfg, data: DataBundle, model: Classifier, record: RunRecord, device: torch.device,
        sink=None, ood: DataBundle | None = None) -> None:
    """Train ``model`` for ``trainer.epochs`` epochs, resuming from ``last.pt`` if present."""
    trainer = cfg.trainer
    optimizer = build_optimizer(cfg, model)
    loaders = make_loaders(cfg, data, device, ood)
    alphas = ReluAlphaHooks(cfg.activation, model) if relu_alpha_modules(model) else None
    train_model, compile_s = apply_switches(trainer, model, loaders)
    autocast_dtype = torch.bfloat16 if trainer.precision == "bf16" else None
    start_epoch = 0
    if record.last_checkpoint.is_file():
        state = load_checkpoint(record.last_checkpoint, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        if alphas is not None and alphas.tracker is not None:
            alphas.tracker.load_state_dict(state["oscillation"])
        start_epoch = state["epoch"]
        init_state = load_checkpoint(record.checkpoints / "init.pt", device)["model"]
    else:
        init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_checkpoint(record.checkpoints / "init.pt", {"epoch": 0, "model": init_state})
        weights, _ = suite.weight_metrics(cfg, model, init_state)
        if weights:  # epoch 0: the data-free statistics of the initialisation
            record.log({"epoch": 0, "step": 0, **weights})
    steps_per_epoch = len(loaders.train)
    bar = tqdm(total=trainer.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               disable=not trainer.progress, unit="step", dynamic_ncols=True, leave=False)
    head = cfg.head
    try:
        for epoch in range(start_epoch + 1, trainer.epochs + 1):
            tic = time.perf_counter()
            lr = set_learning_rate(optimizer, cfg.optimizer.lr,
                                   lr_factor(epoch, cfg.schedule, trainer.epochs), cfg.schedule)
            gamma = (gamma_at(epoch, head.gamma_start, head.gamma_factor, head.gamma_step,
                              head.gamma_max) if head.name == "bin_enc" else None)
            event: dict[str, Any] = {"epoch": epoch, "step": epoch * steps_per_epoch, "lr": lr}
            if gamma is not None:
                event["gamma"] = gamma
            loss_fn = classifier_loss(gamma, alphas.penalty if alphas else None)
            event.update(train_epoch(train_model, loaders.train, optimizer, epoch, loss_fn, bar,
                                     after_step=alphas.after_step if alphas else None,
                                     autocast_dtype=autocast_dtype))
            event["time/epoch_s"] = time.perf_counter() - tic
            if compile_s is not None and epoch == start_epoch + 1:
                event["time/compile_s"] = compile_s  # excluded from time/epoch_s
            if alphas is not None:
                event.update(alphas.epoch_end(epoch))
            last = epoch == trainer.epochs
            weights, projections = suite.weight_metrics(cfg, model, init_state)
            event.update(weights)
            if epoch % cfg.metrics.every == 0 or last:
                tic = time.perf_counter()
                metrics, features = evaluate(cfg, model, loaders, last)
                event.update(metrics)
                event["time/eval_s"] = time.perf_counter() - tic
                if sink is not None and cfg.logger.histograms:
                    sink.log_histograms(suite.histogram_arrays(features), step=event["step"])
                if last and cfg.metrics.store_penultimate:
                    save_penultimate(record.dir / "penultimate.npz", features)
                bar.write(f"epoch {epoch}/{trainer.epochs}  "
                          f"train acc {event['train/accuracy']:.4f}  "
                          f"test acc {event['test/accuracy']:.4f}  lr {lr:.3g}"
                          + (f"  gamma {gamma:.4g}" if gamma is not None else ""))
            dib = cfg.metrics.dib
            if dib.every and (epoch % dib.every == 0 or last):
                tic = time.perf_counter()
                event.update(dib_evaluation(cfg, model, loaders, data.num_classes))
                event["time/dib_s"] = time.perf_counter() - tic
            if last and projections:
                atomic_write_json(record.dir / "hyperplanes.json", projections)
                if sink is not None and cfg.logger.histograms:
                    sink.log_histograms({f"hyperplanes/{layer['name']}/projections":
                                         np.asarray(layer["projections"])
                                         for layer in projections["layers"]},
                                        step=event["step"])
            record.log(event)
            if sink is not None:
                sink.log(event, step=event["step"])
            checkpoint = {"epoch": epoch, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "rng": rng_state()}
            if alphas is not None and alphas.tracker is not None:
                checkpoint["oscillation"] = alphas.tracker.state_dict()
            if epoch in trainer.snapshot_epochs:
                save_checkpoint(record.checkpoints / f"epoch_{epoch:04d}.pt",
                                {"epoch": epoch, "model": checkpoint["model"]})
            save_checkpoint(record.last_checkpoint, checkpoint)
            record.set_epoch(epoch)
    finally:
        bar.close()
    if cfg.metrics.reinit.at_end and not (record.dir / "reinit.json").is_file():
        event = {"epoch": trainer.epochs, "step": trainer.epochs * steps_per_epoch,
                 **reinit_at_end(cfg, model, loaders, record, data, device)}
        record.log(event)
        if sink is not None:
            sink.log(event, step=event["step"])


def reinit_at_end(cfg, model: Classifier, loaders: Loaders, record: RunRecord,
                  data: DataBundle, device: torch.device) -> dict[str, float]:
    """reinit.json / reinit.png and ``reinit/<source>/<layer>`` top-1 of the final model."""
    from latentgeo.analysis import reinit  # lazy: analysis.reinit imports this module

    r = cfg.metrics.reinit
    sources, seed = reinit.gather_sources(cfg, record.checkpoints, data.input_shape,
                                          data.num_classes, device,
                                          trained_epoch=cfg.trainer.epochs, rand=r.rand,
                                          rand_seed=r.rand_seed)
    result = reinit.reinit_robustness(model, loaders.eval["test"].epoch, sources,
                                      reinit.reinit_layer_names(model, r.layers),
                                      data.num_classes, seed)
    reinit.write_reinit(record.dir, result)
    return reinit.reinit_events(result)
