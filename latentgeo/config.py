"""Structured configs (the schema behind ``conf/``) and validation with clear messages.

Hydra merges ``conf/`` onto these dataclasses, so a typo in a key or a wrong type fails at
composition. ``validate`` then checks values (ranges, combinations) before anything is built;
every message names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class ModelConfig:
    name: str = MISSING
    width: int | None = None  # base channels; None = the architecture's default
    widths: list[int] = field(default_factory=lambda: [512, 256])  # MLP hidden widths
    activation: str = "silu"
    pretrained: bool = False


@dataclass
class HeadConfig:
    name: str = MISSING  # bin_enc | lin_pen | nonlin_pen | no_pen
    penultimate_nodes: int = 6
    dropout_penultimate: bool = False
    # γ-schedule of the bin_enc compression loss (BE §1.3): γ ← γ·factor every `gamma_step`
    # epochs while γ < gamma_max; the loss uses γ·mean(x_pen²).
    gamma_start: float = 0.01
    gamma_factor: float = 1.05
    gamma_step: int = 1
    gamma_max: float = 1e6


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str | None = None  # where to look first (and download to)
    download: bool = True  # use torchvision's download when the data are not found locally
    augment: bool = False  # random crop (pad 4) + horizontal flip, batched on the device
    # digits / synthetic only: image shape, class count and sizes
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    train_size: int = 2000
    test_size: int = 500
    seed: int = 0  # data generation / corruption seed (independent of trainer.seed)


@dataclass
class OptimizerConfig:
    name: str = MISSING  # adamw | adam | sgd
    lr: float = 5e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only


@dataclass
class ScheduleConfig:
    name: str = MISSING  # constant | step | cosine
    step_size: int = 50  # step: epochs between decays
    factor: float = 0.5  # step: multiplicative decay
    start_epoch: int = 0  # step: first epoch after which decays happen (BE: 250)
    keep_output_lr: bool = False  # BE keeps the output layer at the base LR
    min_lr: float = 0.0  # cosine: final LR


@dataclass
class MetricsConfig:
    every: int = 50  # evaluate every N epochs (and always at the last epoch)


@dataclass
class LoggerConfig:
    name: str = MISSING  # wandb | local
    mode: str = "offline"  # offline | online | disabled
    project: str = "latentgeo"
    entity: str | None = None
    group: str | None = None  # default: the sweep id, else the run name
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # seconds; on failure warn and continue with local records
    histograms: bool = True  # x_pen histograms per node at evaluation points


@dataclass
class TrainerConfig:
    epochs: int = 800
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int | None = None  # torch CPU threads; None = SLURM_CPUS_PER_TASK or default
    snapshot_epochs: list[int] = field(default_factory=list)  # checkpoints/epoch_XXXX.pt
    resume: bool = True  # continue from checkpoints/last.pt when the run dir has one
    progress: bool = True  # progress bar with ETA and live loss / accuracy


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    name: str | None = None  # readable run name; default derived from model/head/dataset


def register_configs() -> None:
    """Make the schema available to ``conf/train.yaml`` as ``train_schema``."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed."""


OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "step", "cosine")
LOGGERS = ("wandb", "local")
LOGGER_MODES = ("offline", "online", "disabled")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def validate(cfg: DictConfig, num_classes: int | None = None) -> None:
    """Check values the schema cannot express; raise ConfigError naming key, value, allowed."""
    from latentgeo.data import DATASETS  # local: config must not import data at module load
    from latentgeo.models import HEADS, MODELS
    from latentgeo.models.activations import ACTIVATIONS

    _check(cfg.model.name in MODELS, "model.name", cfg.model.name, f"one of {sorted(MODELS)}")
    activations = sorted([*ACTIVATIONS, "relu_alpha"])
    _check(
        cfg.model.activation in activations,
        "model.activation", cfg.model.activation, f"one of {activations}",
    )
    _check(cfg.model.width is None or cfg.model.width >= 1, "model.width", cfg.model.width,
           "a positive integer or null")
    _check(len(cfg.model.widths) >= 1 and all(w >= 1 for w in cfg.model.widths),
           "model.widths", list(cfg.model.widths), "a non-empty list of positive integers")
    _check(cfg.head.name in HEADS, "head.name", cfg.head.name, f"one of {list(HEADS)}")
    _check(cfg.head.penultimate_nodes >= 1, "head.penultimate_nodes",
           cfg.head.penultimate_nodes, "a positive integer")
    _check(cfg.head.gamma_start >= 0, "head.gamma_start", cfg.head.gamma_start, ">= 0")
    _check(cfg.head.gamma_factor > 0, "head.gamma_factor", cfg.head.gamma_factor, "> 0")
    _check(cfg.head.gamma_step >= 1, "head.gamma_step", cfg.head.gamma_step, ">= 1")
    _check(cfg.dataset.name in DATASETS, "dataset.name", cfg.dataset.name,
           f"one of {sorted(DATASETS)}")
    _check(cfg.optimizer.name in OPTIMIZERS, "optimizer.name", cfg.optimizer.name,
           f"one of {list(OPTIMIZERS)}")
    lr = cfg.optimizer.lr
    _check(math.isfinite(lr) and lr > 0, "optimizer.lr", lr, "a finite number > 0")
    _check(cfg.optimizer.weight_decay >= 0, "optimizer.weight_decay",
           cfg.optimizer.weight_decay, ">= 0")
    _check(cfg.schedule.name in SCHEDULES, "schedule.name", cfg.schedule.name,
           f"one of {list(SCHEDULES)}")
    _check(cfg.schedule.step_size >= 1, "schedule.step_size", cfg.schedule.step_size, ">= 1")
    _check(cfg.schedule.factor > 0, "schedule.factor", cfg.schedule.factor, "> 0")
    _check(cfg.metrics.every >= 1, "metrics.every", cfg.metrics.every, ">= 1")
    _check(cfg.logger.name in LOGGERS, "logger.name", cfg.logger.name, f"one of {list(LOGGERS)}")
    _check(cfg.logger.mode in LOGGER_MODES, "logger.mode", cfg.logger.mode,
           f"one of {list(LOGGER_MODES)}")
    _check(cfg.trainer.epochs >= 1, "trainer.epochs", cfg.trainer.epochs, ">= 1")
    _check(cfg.trainer.batch_size >= 1, "trainer.batch_size", cfg.trainer.batch_size, ">= 1")
    _check(cfg.trainer.eval_batch_size >= 1, "trainer.eval_batch_size",
           cfg.trainer.eval_batch_size, ">= 1")
    device = cfg.trainer.device
    _check(device in ("auto", "cpu", "cuda") or device.startswith("cuda:"), "trainer.device",
           device, "auto, cpu, cuda or cuda:N")
    bad = [e for e in cfg.trainer.snapshot_epochs if not 1 <= e <= cfg.trainer.epochs]
    _check(not bad, "trainer.snapshot_epochs", list(cfg.trainer.snapshot_epochs),
           f"epochs within 1..trainer.epochs={cfg.trainer.epochs}")
    if num_classes is not None and cfg.head.name in ("bin_enc", "lin_pen"):
        nodes = cfg.head.penultimate_nodes
        _check(2**nodes >= num_classes, "head.penultimate_nodes", nodes,
               f"2^penultimate_nodes >= number of classes ({num_classes}) for head "
               f"{cfg.head.name}, i.e. >= {math.ceil(math.log2(num_classes))}")


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
