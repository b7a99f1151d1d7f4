"""Structured configs (the schema behind ``conf/``), the metric-schedule vocabulary, the
bookkeeping keys and the resolvers ``conf/train.yaml`` uses.

Hydra merges ``conf/`` onto these dataclasses, so a typo in a key or a wrong type fails at
composition; ``to_typed`` then turns the composed config into the dataclasses once, and every
builder takes its own sub-config. Value checks that need the components' registries live in
``latentgeo.checks.validate``; every message names the key, the bad value and what is allowed.

Foundation layer: imports no other latentgeo module.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import importlib.resources
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class ModelConfig:
    name: str = MISSING
    width: int | None = None  # base channels; None = the architecture's default
    widths: list[int] | None = None  # mlp only: hidden widths (conf/model/mlp.yaml)
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
    name: str = MISSING  # one of models.HEADS: bin_enc | lin_pen | nonlin_pen | no_pen
    penultimate_nodes: int = 6
    dropout_penultimate: bool = False
    # γ-schedule of the bin_enc compression loss (BE §1.3): γ ← γ·factor every `gamma_step`
    # epochs while γ < gamma_max; the loss adds γ·penalty(x_pen).
    gamma_start: float = 0.01
    gamma_factor: float = 1.05
    gamma_step: int = 1
    gamma_max: float = 1e6
    # the compression penalty γ multiplies: one of loop.PENALTIES (mse, exp, l1)
    penalty: str = "mse"


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
    # generated or resized data only (their yaml sets them, OPTION_KEYS): image shape, and for
    # synthetic the class count and sizes; null where the data set fixes them
    image_size: int | None = None
    channels: int | None = None
    num_classes: int | None = None
    train_size: int | None = None
    test_size: int | None = None
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
    # steepest descent w.r.t. log lr, the only rule (``lr``, d/d lr on the exponential ramp,
    # was removed: it picked the smallest candidate); the key stays so old config.yaml read
    slope: str = "log_lr"


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


# ---------------------------------------------------------------------------- schedules
# One vocabulary for when a metric family runs (``metrics.<family>.when``): terms joined by
# ``+`` (a comma would make a Hydra sweep) of
#   off       never
#   init      at epoch 0, on the initial weights (before the first step)
#   every     at every evaluation: every ``metrics.every`` epochs and at the last epoch
#   every:N   every N epochs and at the last epoch (``every:1`` = every epoch)
#   last      at the last epoch only
# e.g. ``init+every:1`` (the hyperplane statistics: data-free, cheap).
SCHEDULE_TERMS = ("off", "init", "every", "every:N", "last")


@dataclass(frozen=True)
class Schedule:
    init: bool = False
    every_evaluation: bool = False
    every_epochs: int | None = None
    last: bool = False

    def due(self, epoch: int, last: bool, evaluation_every: int) -> bool:
        """Is a family with this schedule due after ``epoch`` (0 = the initial weights)?"""
        if epoch == 0:
            return self.init
        if last and (self.last or self.every_evaluation or self.every_epochs):
            return True
        if self.every_evaluation and epoch % evaluation_every == 0:
            return True
        return bool(self.every_epochs) and epoch % self.every_epochs == 0


def parse_schedule(text: str, key: str = "when") -> Schedule:
    """``init+every:5`` -> Schedule; ConfigError naming the key and the vocabulary otherwise."""
    terms = [t.strip() for t in str(text).split("+") if t.strip()]
    allowed = f"terms of {', '.join(SCHEDULE_TERMS)} (N >= 1) joined by '+', e.g. init+every:5"
    if not terms:
        raise ConfigError(f"{key}={text!r} is not allowed: {allowed}")
    if terms == ["off"]:
        return Schedule()
    init = every = last = False
    every_epochs = None
    for term in terms:
        match = re.fullmatch(r"every:(\d+)", term)
        if term == "init":
            init = True
        elif term == "every":
            every = True
        elif term == "last":
            last = True
        elif match and int(match.group(1)) >= 1 and every_epochs is None:
            every_epochs = int(match.group(1))
        else:
            raise ConfigError(f"{key}={text!r} is not allowed: {allowed}")
    return Schedule(init, every, every_epochs, last)


@dataclass
class MetricsConfig:
    """The keys of ``metrics`` that are no family's: the evaluation interval and the samples
    the families share. Every other key of ``metrics`` is one family's node,
    ``{when: <schedule>, <option>: value, ...}``: its default is its line in
    ``conf/metrics/default.yaml`` and its keys' types are the family's ``options`` dataclass
    (``latentgeo.families``), checked by ``families.check_metrics``. A family without a node
    is off."""

    every: int = 50  # evaluate every N epochs (and always at the last epoch)
    seed: int = 0  # GMM seeds of the binarity metrics; the geometry families' subsamples
    # train-side metrics on a fixed stratified sample of this many train images per class
    # (seeded by metrics.seed) instead of the whole split: cheaper evaluations, a small error
    train_subset: int | None = None


METRICS_SETTINGS = tuple(f.name for f in dataclasses.fields(MetricsConfig))


def family_nodes(metrics: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """``metrics``' family nodes by name (every key but ``METRICS_SETTINGS``)."""
    return {name: node for name, node in metrics.items() if name not in METRICS_SETTINGS}


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
    # debugging (conf/debug/): at most this many batches per epoch / per evaluation pass
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    overfit_batches: int | None = None  # train on the first N batches, unshuffled, no augment
    profile_steps: int = 0  # > 0: torch profiler trace of the first N steps -> profile/
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
    # MetricsConfig's keys + one node per family; composed from conf/metrics/, read as a
    # read-only DictConfig (``cfg.metrics.every``, ``cfg.metrics.perturbation.samples``)
    metrics: dict[str, Any] = field(default_factory=dict)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    name: str | None = None  # readable run name; default derived from model/head/dataset


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed."""


class DatasetUnavailable(RuntimeError):
    """The configured data set is neither on disk nor downloadable (an input problem: exit 2)."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError naming the key, the bad value and what is allowed."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


MAX_NAME = 200  # characters of name=: the run dir's name must stay a valid file name


def check_values(cfg: TrainConfig) -> None:
    """The checks that need no component (ranges, combinations, the schedule vocabulary): the
    command line runs them before it imports torch. ``checks.validate`` adds the registries."""
    m, h, d, o, s, t = cfg.model, cfg.head, cfg.dataset, cfg.optimizer, cfg.schedule, cfg.trainer
    check(m.width is None or m.width >= 1, "model.width", m.width, "a positive integer or null")
    check(m.widths is None or (len(m.widths) >= 1 and all(w >= 1 for w in m.widths)),
          "model.widths", m.widths, "null or a non-empty list of positive integers")
    if m.activation == "relu_alpha":
        a = cfg.activation
        check(0 <= a.init_alpha <= 1, "activation.init_alpha", a.init_alpha, "within [0, 1]")
        check(math.isfinite(a.init_nu) and a.init_nu >= 0, "activation.init_nu", a.init_nu,
              "a finite number >= 0")
        check(math.isfinite(a.l1) and a.l1 >= 0, "activation.l1", a.l1, "a finite number >= 0")
        check(math.isfinite(a.nu_step) and a.nu_step >= 0, "activation.nu_step", a.nu_step,
              "a finite number >= 0")
        check(a.oscillation_k >= 1, "activation.oscillation_k", a.oscillation_k, ">= 1")
        check(a.oscillation_window >= 2, "activation.oscillation_window", a.oscillation_window,
              ">= 2")
    check(h.penultimate_nodes >= 1, "head.penultimate_nodes", h.penultimate_nodes,
          "a positive integer")
    check(math.isfinite(h.gamma_start) and h.gamma_start >= 0, "head.gamma_start",
          h.gamma_start, "a finite number >= 0")
    check(math.isfinite(h.gamma_factor) and h.gamma_factor > 0, "head.gamma_factor",
          h.gamma_factor, "a finite number > 0")
    check(not math.isnan(h.gamma_max), "head.gamma_max", h.gamma_max, "a number (inf: no cap)")
    check(h.gamma_step >= 1, "head.gamma_step", h.gamma_step, ">= 1")
    check(d.num_workers >= 0, "dataset.num_workers", d.num_workers, ">= 0")
    for key in ("image_size", "channels", "train_size", "test_size"):
        check(getattr(d, key) is None or getattr(d, key) >= 1, f"dataset.{key}",
              getattr(d, key), "null or >= 1")
    check(0 <= d.label_noise <= 1, "dataset.label_noise", d.label_noise, "within [0, 1]")
    check(d.classes is None or d.num_classes_subsample is None, "dataset.classes", d.classes,
          "null when dataset.num_classes_subsample is set (choose one)")
    size = d.train_subset.size_per_class
    check(size is None or size >= 1, "dataset.train_subset.size_per_class", size,
          "null or a positive integer")
    check(d.val_split is None or 0 < d.val_split < 1, "dataset.val_split", d.val_split,
          "null or within (0, 1)")
    check(d.resize is None or d.resize_pad is None, "dataset.resize", d.resize,
          "null when dataset.resize_pad is set (choose one)")
    check(o.lr == "auto" or (isinstance(o.lr, (int, float)) and not isinstance(o.lr, bool)
                             and math.isfinite(o.lr) and o.lr > 0),
          "optimizer.lr", o.lr, "a finite number > 0, or auto")
    f = o.lr_find
    check(0 < f.min_lr < f.max_lr, "optimizer.lr_find.min_lr", f.min_lr,
          f"> 0 and < optimizer.lr_find.max_lr={f.max_lr}")
    check(math.isfinite(f.max_lr), "optimizer.lr_find.max_lr", f.max_lr, "a finite number")
    check(math.isfinite(o.momentum) and o.momentum >= 0, "optimizer.momentum", o.momentum,
          "a finite number >= 0")
    check(math.isfinite(s.min_lr) and s.min_lr >= 0, "schedule.min_lr", s.min_lr,
          "a finite number >= 0")
    check(f.steps >= 12, "optimizer.lr_find.steps", f.steps, ">= 12")
    check(f.slope == "log_lr", "optimizer.lr_find.slope", f.slope,
          "log_lr (slope=lr was removed: on the exponential ramp d/d lr picks the smallest LR)")
    check(math.isfinite(o.weight_decay) and o.weight_decay >= 0, "optimizer.weight_decay",
          o.weight_decay, "a finite number >= 0")
    check(s.step_size >= 1, "schedule.step_size", s.step_size, ">= 1")
    check(math.isfinite(s.factor) and s.factor > 0, "schedule.factor", s.factor,
          "a finite number > 0")
    metrics = cfg.metrics
    check(metrics.every >= 1, "metrics.every", metrics.every, ">= 1")
    for name, node in family_nodes(metrics).items():  # their options: families.check_metrics
        check(isinstance(node, DictConfig) and "when" in node, f"metrics.{name}", node,
              "a node {when: <schedule>, ...}")
        parse_schedule(node.when, f"metrics.{name}.when")
    check(metrics.train_subset is None or metrics.train_subset >= 1, "metrics.train_subset",
          metrics.train_subset, "null (the whole train split) or samples per class >= 1")
    check(cfg.logger.name in ("wandb", "local"), "logger.name", cfg.logger.name,
          "one of ['wandb', 'local']")
    check(cfg.logger.mode in ("offline", "online", "disabled"), "logger.mode", cfg.logger.mode,
          "one of ['offline', 'online', 'disabled']")
    check(t.epochs >= 1, "trainer.epochs", t.epochs, ">= 1")
    check(t.batch_size >= 1, "trainer.batch_size", t.batch_size, ">= 1")
    check(t.eval_batch_size >= 1, "trainer.eval_batch_size", t.eval_batch_size, ">= 1")
    for key in ("limit_train_batches", "limit_eval_batches", "overfit_batches"):
        value = getattr(t, key)
        check(value is None or value >= 1, f"trainer.{key}", value, "null or >= 1")
    check(t.profile_steps >= 0, "trainer.profile_steps", t.profile_steps, ">= 0 (0 = off)")
    check(t.precision in ("32", "bf16"), "trainer.precision", t.precision, "32 or bf16")
    check(t.compile.lower() in ("false", "default", "max-autotune"), "trainer.compile",
          t.compile, "false, default or max-autotune")
    check(t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"), "trainer.device",
          t.device, "auto, cpu, cuda or cuda:N")  # whether it exists here: build.resolve_device
    bad = [e for e in t.snapshot_epochs if not 1 <= e <= t.epochs]
    check(not bad, "trainer.snapshot_epochs", list(t.snapshot_epochs),
          f"epochs within 1..trainer.epochs={t.epochs}")
    check(cfg.name is None or len(cfg.name) <= MAX_NAME, "name",
          cfg.name if cfg.name is None or len(cfg.name) < 40 else cfg.name[:37] + "...",
          f"null or at most {MAX_NAME} characters (it names the run dir)")


# ---------------------------------------------------------------------------- bookkeeping
# Keys that do not change what a run computes: left out of the run-dir hash (conf/train.yaml
# reads them through ${lg_bookkeeping:}) and of the "same config?" check on resume.
BOOKKEEPING = ("trainer.resume", "trainer.progress", "trainer.device", "trainer.num_threads",
               "logger")


def bookkeeping_overrides() -> list[str]:
    """Every override key of BOOKKEEPING (a group such as ``logger`` with each of its keys):
    Hydra's ``override_dirname.exclude_keys`` matches keys exactly."""
    keys = []
    for key in BOOKKEEPING:
        keys.append(key)
        node = next((f for f in dataclasses.fields(TrainConfig) if f.name == key), None)
        if node is not None:
            keys += [f"{key}.{f.name}" for f in dataclasses.fields(node.default_factory())]
    return keys


def is_bookkeeping(key: str) -> bool:
    """True for a flattened key (``logger.mode``) that BOOKKEEPING covers."""
    return any(key == k or key.startswith(k + ".") for k in BOOKKEEPING)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config without its bookkeeping keys (what decides "the same run")."""
    config = copy.deepcopy(config)
    for key in BOOKKEEPING:
        group, _, leaf = key.partition(".")
        if leaf:
            config.get(group, {}).pop(leaf, None)
        else:
            config.pop(group, None)
    return config


# ---------------------------------------------------------------------------- old run dirs
# Keys renamed when every metric family got a ``when`` (second wave): old -> how to translate.
LEGACY_WHEN_FLAGS = {"collapse": "every", "binarity": "every", "same_encoding": "every"}


# Keys that only some options of a group use: the option's yaml sets them, the others leave
# them null, so a config.yaml says only what applies to its run.
OPTION_KEYS = {"model": ("widths",),
               "dataset": ("image_size", "channels", "num_classes", "train_size", "test_size")}


@functools.cache
def option_yaml(group: str, option: str) -> dict[str, Any]:
    """``conf/<group>/<option>.yaml`` as a dict (read once, torch-free); {} when absent."""
    path = importlib.resources.files("latentgeo.conf").joinpath(f"{group}/{option}.yaml")
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.create(path.read_text()))  # type: ignore[return-value]


def default_metrics() -> dict[str, Any]:
    """``conf/metrics/default.yaml``: every family's default node."""
    return option_yaml("metrics", "default")


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """A config.yaml written by an older version, in today's keys (numbers and meaning
    unchanged): ``metrics.collapse: true`` -> ``{when: every}``,
    ``hyperplanes.enabled`` -> ``when: init+every:1 | off``, ``dib.every: N`` ->
    ``when: every:N | off``, ``reinit.at_end`` -> ``when: last | off``,
    ``store_penultimate`` -> ``penultimate.when: last | off``; a family node it lacks (and a
    key of a node: its options were schema defaults then) -> its line in
    ``conf/metrics/default.yaml``, what the schema's defaults were; an ``OPTION_KEYS`` key
    that the run's option does not set (a schema default then, never used) -> null."""
    config = copy.deepcopy(config)
    for group, keys in OPTION_KEYS.items():
        node = config.get(group)
        if isinstance(node, dict) and isinstance(node.get("name"), str):
            used = option_yaml(group, node["name"])
            for key in keys:
                if key in node and key not in used:
                    node[key] = None
    metrics = config.get("metrics")
    if not isinstance(metrics, dict):
        return config
    for name, node in family_nodes(default_metrics()).items():
        if isinstance(metrics.get(name), dict):
            metrics[name] = {**node, **metrics[name]}
        elif name not in metrics:
            metrics[name] = copy.deepcopy(node)
    for name, on in LEGACY_WHEN_FLAGS.items():
        if isinstance(metrics.get(name), bool):
            metrics[name] = {"when": on if metrics[name] else "off"}
    hyperplanes = metrics.get("hyperplanes") or {}
    if "enabled" in hyperplanes:
        hyperplanes["when"] = "init+every:1" if hyperplanes.pop("enabled") else "off"
    dib = metrics.get("dib") or {}
    if "every" in dib:
        every = dib.pop("every")
        dib["when"] = f"every:{every}" if every else "off"
    reinit = metrics.get("reinit") or {}
    if "at_end" in reinit:
        reinit["when"] = "last" if reinit.pop("at_end") else "off"
    if "store_penultimate" in metrics:
        metrics["penultimate"] = {"when": "last" if metrics.pop("store_penultimate") else "off"}
    return config


# ---------------------------------------------------------------------------- typed configs


def to_container(cfg: DictConfig | TrainConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists (what config.yaml holds)."""
    if isinstance(cfg, TrainConfig):
        return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return copy.deepcopy(value)


def to_typed(cfg: DictConfig | dict[str, Any] | TrainConfig) -> TrainConfig:
    """The composed config (or a config.yaml's dict, upgraded) as the dataclasses, once."""
    if isinstance(cfg, TrainConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    merged = OmegaConf.merge(schema(), upgrade(cfg))  # merge copies: the schema stays clean
    typed: TrainConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    typed.metrics = typed_metrics(typed.metrics)
    return typed


def typed_metrics(metrics: dict[str, Any]) -> DictConfig:
    """``metrics`` with MetricsConfig's keys typed (a wrong type fails as at composition),
    the family nodes as composed; read-only, and a key that is not there raises."""
    settings = {k: v for k, v in metrics.items() if k in METRICS_SETTINGS}
    typed = OmegaConf.merge(OmegaConf.structured(MetricsConfig), settings)
    node = OmegaConf.create({**OmegaConf.to_container(typed), **family_nodes(metrics)})
    OmegaConf.set_struct(node, True)
    OmegaConf.set_readonly(node, True)
    return node


@functools.cache
def schema() -> DictConfig:
    """``TrainConfig`` as an OmegaConf schema, built once (30 ms; a sweep job converts twice)."""
    return OmegaConf.structured(TrainConfig)


def with_changes(cfg: TrainConfig, **groups: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with some keys of some groups replaced: ``optimizer={"lr": 1e-3}``."""
    changed = {name: dataclasses.replace(getattr(cfg, name), **values)
               for name, values in groups.items()}
    return dataclasses.replace(cfg, **changed)


# ---------------------------------------------------------------------------- resolvers


def run_name(name: str | None, dataset: str, model: str, head: str, overrides: str) -> str:
    """Readable name + short hash of the overrides: rerunning a command finds its run dir."""
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or f"{dataset}-{model}-{head}")
    # a leading dot would hide the run dir (``ls``, ``runs`` and ``load_runs`` skip dot dirs)
    readable = re.sub(r"^\.+", "_", readable)
    # a file name has at most 255 bytes: a longer name= fails validation (MAX_NAME), with
    # this dir (cut) as its record, instead of an OSError before the run starts
    return f"{readable[:MAX_NAME]}-{digest}"


def sweep_id() -> str:
    """One id per sweep, shared with its jobs through the environment (they inherit it).
    Timestamp for sorting plus random hex, so two sweeps started in one second differ.
    Set LATENTGEO_SWEEP_ID to re-enter (and resume) an existing sweep."""
    if not os.environ.get("LATENTGEO_SWEEP_ID"):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        os.environ["LATENTGEO_SWEEP_ID"] = f"{stamp}-{uuid.uuid4().hex[:6]}"
    check_sweep_id(os.environ["LATENTGEO_SWEEP_ID"])
    return os.environ["LATENTGEO_SWEEP_ID"]


def check_sweep_id(value: str) -> None:
    """A sweep id names one folder under ``sweeps/``: ``../x`` would put the sweep elsewhere,
    ``.x`` would hide it from ``runs``."""
    check(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", value) is not None, "LATENTGEO_SWEEP_ID",
          value, "letters, digits, _ . - (not starting with . or -), as a sweep prints it")


def compose(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` (as the command line takes them) without
    running anything; ``config_dir``: a conf/ tree to compose from instead of the package's
    (a copy with a new option, say). Hydra's own errors name a bad key or option."""
    if config_dir is None:
        context = initialize_config_module("latentgeo.conf", version_base=None)
    else:
        context = initialize_config_dir(str(Path(config_dir).resolve()), version_base=None)
    with context:
        return hydra_compose("train", overrides=list(overrides))


def register_configs() -> None:
    """The schema as ``train_schema`` and the resolvers of ``conf/train.yaml``; idempotent."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    OmegaConf.register_new_resolver("lg_run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("lg_sweep_id", sweep_id, replace=True)
    OmegaConf.register_new_resolver("lg_bookkeeping", bookkeeping_overrides, replace=True)


register_configs()  # the configs are here, so their resolvers are registered here too
