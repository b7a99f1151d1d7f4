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
class ActivationConfig:
    """ReLU_α(x) = x + α·ReLU(−x), used when ``model.activation=relu_alpha`` (UN, seed 004)."""

    granularity: str = "layer"  # layer: one α per activation site | channel: one per channel
    mode: str = "penalty"  # penalty: α in [0, 1], loss += l1·Σ|α| | anneal: α = σ((σ(γ)−½)·ν)
    init_alpha: float = 1.0  # penalty mode: start as ReLU
    init_nu: float = 0.0  # anneal mode: ν at step 0
    nu_step: float = 0.01  # anneal mode: ν grows by this per optimizer step
    l1: float = 1e-3  # penalty mode: λ
    freeze_oscillating: bool = False  # stop the penalty for an α that keeps oscillating
    oscillation_k: int = 3  # ... more than k flips of the sign of its change
    oscillation_window: int = 10  # ... within the last `window` epochs


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
class TrainSubsetConfig:
    size_per_class: int | None = None  # TH: stratified subsets of this many samples per class
    index: int = 0  # which subset (class ranks [index·size, (index+1)·size))


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str | None = None  # where to look first (and download to)
    download: bool = True  # use torchvision's download when the data are not found locally
    augment: bool = False  # random crop (pad 4) + horizontal flip, batched on the device
    loader: str = "tensor"  # tensor: split resident on the training device | torch: DataLoader
    num_workers: int = 2  # loader=torch only: DataLoader worker processes
    # digits / synthetic only: image shape, class count and sizes
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    train_size: int = 2000
    test_size: int = 500
    seed: int = 0  # data generation / corruption seed (independent of trainer.seed)
    # corruptions and subsets (HP §3.5, TH §2.2); all seeded by dataset.seed, train split only
    label_noise: float = 0.0  # each train label -> (y+u) mod K, u ~ U{1..K-1}, with this prob.
    pixel_shuffle: bool = False  # a fixed random pixel permutation per training image
    classes: list[int] | None = None  # keep these classes, relabelled 0..K-1 in this order
    num_classes_subsample: int | None = None  # or a seeded choice of K classes
    train_subset: TrainSubsetConfig = field(default_factory=lambda: TrainSubsetConfig())
    val_split: float | None = None  # fraction of train held out as `val` (metrics val/...)
    stratified: bool = True  # val split stratified by class
    resize: int | None = None  # HP --upscale: bilinear resize to resize x resize
    resize_pad: int | None = None  # HP --upscale-padding: resize to half, zero-pad to full


@dataclass
class LRFindConfig:
    """The LR range test (TH §2.7, Lightning's defaults), run first when optimizer.lr=auto."""

    min_lr: float = 1e-8
    max_lr: float = 1.0
    steps: int = 100
    early_stop_threshold: float | None = 4.0  # stop when smoothed loss > this × its best
    beta: float = 0.98  # EMA smoothing of the loss
    slope: str = "log_lr"  # steepest descent w.r.t. log lr (log_lr) or lr (Lightning 2.5+)


@dataclass
class OptimizerConfig:
    name: str = MISSING  # adamw | adam | sgd
    # a number > 0, or "auto": run the LR range test first and train with its suggestion
    # (OmegaConf cannot type float | str; `validate` checks it)
    lr: Any = 5e-4
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
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


# "when" values of the scheduled metric families: off | last (the last epoch only) | every
# (every evaluation, i.e. every `metrics.every` epochs and the last epoch)
WHEN = ("off", "last", "every")


@dataclass
class MahalanobisConfig:
    when: str = "last"  # BE computes it at the last epoch only


@dataclass
class PerturbationConfig:
    when: str = "last"  # DeepFool needs gradients: BE computes it at the last epoch only
    samples: int = 1000  # fixed random sample of the test split (seeded by trainer.seed)
    overshoot: float = 0.02
    max_iter: int = 50
    num_candidates: int = 10


@dataclass
class OODConfig:
    dataset: str | None = None  # a dataset option, e.g. svhn for cifar10; null = off
    when: str = "last"


@dataclass
class NC1Config:
    when: str = "off"  # per-block streaming NC1 (TH); two extra passes per split


@dataclass
class HyperplanesConfig:
    enabled: bool = True  # data-free: every epoch and at epoch 0
    normalize: bool = True
    with_linear: bool = False
    skip_pointwise: bool = True


@dataclass
class DIBConfig:
    """Decodable information bottleneck per block (TH §2.6): decoders trained on frozen
    encoders; costly (≈ 9 main epochs per decoder epoch on a tiny run), so scheduled rarely."""

    every: int = 0  # 0 = off; else every N epochs and at the last epoch
    blocks: list[str] | None = None  # null = all: stem + the backbone's blocks
    epochs: int = 20  # V-sufficiency decoders (TH --epochs)
    minimality_epochs: int | None = None  # V-minimality decoders (TH --dib-epochs 50)
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    batch_size: int | None = None  # null = trainer.batch_size


@dataclass
class ReinitConfig:
    """Layer re-initialisation robustness (Zhang, Bengio & Singer 2019, as HP) at run end."""

    at_end: bool = False
    layers: str = "conv"  # conv | conv+linear
    rand: bool = True  # also re-initialise from a fresh independent random draw
    rand_seed: int | None = None  # null = trainer.seed + 1000003


@dataclass
class MetricsConfig:
    every: int = 50  # evaluate every N epochs (and always at the last epoch)
    collapse: bool = True  # BE's collapse metrics on x_pen (by predictions and by true labels)
    binarity: bool = True  # BE: bin_enc and lin_pen heads only
    same_encoding: bool = True
    mahalanobis: MahalanobisConfig = field(default_factory=MahalanobisConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    ood: OODConfig = field(default_factory=OODConfig)
    nc1: NC1Config = field(default_factory=NC1Config)
    hyperplanes: HyperplanesConfig = field(default_factory=HyperplanesConfig)
    dib: DIBConfig = field(default_factory=DIBConfig)
    reinit: ReinitConfig = field(default_factory=ReinitConfig)
    store_penultimate: bool = False  # penultimate.npz with the final x_pen of train and test
    seed: int = 0  # GMM seeds of the binarity metrics


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
    # speed switches (benchmarks/switches.py measures them): all off by default, since on CPU
    # bf16 autocast is 6-65x slower and compile costs 18-50 s per model for no gain
    channels_last: bool = False  # NHWC memory format for conv nets
    precision: str = "32"  # 32 | bf16 (autocast for the training step; metrics stay float32)
    compile: str = "false"  # false | default | max-autotune (torch.compile mode)


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
    activation: ActivationConfig = field(default_factory=ActivationConfig)
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
    if cfg.model.activation == "relu_alpha":
        a = cfg.activation
        _check(a.granularity in ("layer", "channel"), "activation.granularity", a.granularity,
               "layer or channel")
        _check(a.mode in ("penalty", "anneal"), "activation.mode", a.mode, "penalty or anneal")
        _check(0 <= a.init_alpha <= 1, "activation.init_alpha", a.init_alpha, "within [0, 1]")
        _check(a.l1 >= 0, "activation.l1", a.l1, ">= 0")
        _check(a.nu_step >= 0, "activation.nu_step", a.nu_step, ">= 0")
        _check(a.oscillation_k >= 1, "activation.oscillation_k", a.oscillation_k, ">= 1")
        _check(a.oscillation_window >= 2, "activation.oscillation_window",
               a.oscillation_window, ">= 2")
    _check(cfg.head.name in HEADS, "head.name", cfg.head.name, f"one of {list(HEADS)}")
    _check(cfg.head.penultimate_nodes >= 1, "head.penultimate_nodes",
           cfg.head.penultimate_nodes, "a positive integer")
    _check(cfg.head.gamma_start >= 0, "head.gamma_start", cfg.head.gamma_start, ">= 0")
    _check(cfg.head.gamma_factor > 0, "head.gamma_factor", cfg.head.gamma_factor, "> 0")
    _check(cfg.head.gamma_step >= 1, "head.gamma_step", cfg.head.gamma_step, ">= 1")
    _check(cfg.dataset.name in DATASETS, "dataset.name", cfg.dataset.name,
           f"one of {sorted(DATASETS)}")
    d = cfg.dataset
    _check(d.loader in ("tensor", "torch"), "dataset.loader", d.loader, "tensor or torch")
    _check(d.num_workers >= 0, "dataset.num_workers", d.num_workers, ">= 0")
    _check(0 <= d.label_noise <= 1, "dataset.label_noise", d.label_noise, "within [0, 1]")
    _check(d.classes is None or d.num_classes_subsample is None, "dataset.classes", d.classes,
           "null when dataset.num_classes_subsample is set (choose one)")
    _check(d.val_split is None or 0 < d.val_split < 1, "dataset.val_split", d.val_split,
           "null or within (0, 1)")
    _check(d.resize is None or d.resize_pad is None, "dataset.resize", d.resize,
           "null when dataset.resize_pad is set (choose one)")
    _check(cfg.optimizer.name in OPTIMIZERS, "optimizer.name", cfg.optimizer.name,
           f"one of {list(OPTIMIZERS)}")
    lr = cfg.optimizer.lr
    _check(lr == "auto" or (isinstance(lr, (int, float)) and not isinstance(lr, bool)
                            and math.isfinite(lr) and lr > 0),
           "optimizer.lr", lr, "a finite number > 0, or auto")
    f = cfg.optimizer.lr_find
    _check(0 < f.min_lr < f.max_lr, "optimizer.lr_find.min_lr", f.min_lr,
           f"> 0 and < optimizer.lr_find.max_lr={f.max_lr}")
    _check(f.steps >= 12, "optimizer.lr_find.steps", f.steps, ">= 12")
    _check(f.slope in ("log_lr", "lr"), "optimizer.lr_find.slope", f.slope, "log_lr or lr")
    _check(cfg.optimizer.weight_decay >= 0, "optimizer.weight_decay",
           cfg.optimizer.weight_decay, ">= 0")
    _check(cfg.schedule.name in SCHEDULES, "schedule.name", cfg.schedule.name,
           f"one of {list(SCHEDULES)}")
    _check(cfg.schedule.step_size >= 1, "schedule.step_size", cfg.schedule.step_size, ">= 1")
    _check(cfg.schedule.factor > 0, "schedule.factor", cfg.schedule.factor, "> 0")
    _check(cfg.metrics.every >= 1, "metrics.every", cfg.metrics.every, ">= 1")
    for family in ("mahalanobis", "perturbation", "ood", "nc1"):
        when = cfg.metrics[family].when
        _check(when in WHEN, f"metrics.{family}.when", when, f"one of {list(WHEN)}")
    _check(cfg.metrics.perturbation.samples >= 1, "metrics.perturbation.samples",
           cfg.metrics.perturbation.samples, ">= 1")
    dib = cfg.metrics.dib
    _check(dib.every >= 0, "metrics.dib.every", dib.every, ">= 0 (0 = off)")
    _check(dib.epochs >= 1, "metrics.dib.epochs", dib.epochs, ">= 1")
    bad_splits = [s for s in dib.splits if s not in ("train", "test", "val")]
    _check(not bad_splits, "metrics.dib.splits", list(dib.splits), "train, test or val")
    r = cfg.metrics.reinit
    _check(r.layers in ("conv", "conv+linear"), "metrics.reinit.layers", r.layers,
           "conv or conv+linear")
    _check(r.rand_seed != cfg.trainer.seed, "metrics.reinit.rand_seed", r.rand_seed,
           f"a seed other than trainer.seed={cfg.trainer.seed} (which reproduces init.pt)")
    ood = cfg.metrics.ood.dataset
    _check(ood is None or ood in DATASETS, "metrics.ood.dataset", ood,
           f"null or one of {sorted(DATASETS)}")
    _check(cfg.logger.name in LOGGERS, "logger.name", cfg.logger.name, f"one of {list(LOGGERS)}")
    _check(cfg.logger.mode in LOGGER_MODES, "logger.mode", cfg.logger.mode,
           f"one of {list(LOGGER_MODES)}")
    _check(cfg.trainer.epochs >= 1, "trainer.epochs", cfg.trainer.epochs, ">= 1")
    _check(cfg.trainer.batch_size >= 1, "trainer.batch_size", cfg.trainer.batch_size, ">= 1")
    _check(cfg.trainer.eval_batch_size >= 1, "trainer.eval_batch_size",
           cfg.trainer.eval_batch_size, ">= 1")
    _check(cfg.trainer.precision in ("32", "bf16"), "trainer.precision", cfg.trainer.precision,
           "32 or bf16")
    _check(cfg.trainer.compile in ("false", "default", "max-autotune"), "trainer.compile",
           cfg.trainer.compile, "false, default or max-autotune")
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
