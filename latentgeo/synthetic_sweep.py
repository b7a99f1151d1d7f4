"""Synthetic sweeps in the run-dir layout training writes (``records``: config.yaml, its
config.json twin, status.json, summary.json, metrics.jsonl), fast enough for 10,000 runs: the
results commands' benchmark (``benchmarks/results_scale.py``) and growth test
(``tests/test_results_scale.py``) read them. Numbers are seeded; files are written directly
(no fsync), so a sweep of 10,000 runs × 300 epochs takes a few minutes, not hours.

The grid: ``HEADS`` × ``LRS`` × seeds, job ``i`` in ``<sweep>/<i>/``; about 1 % of the runs
failed (no summary, fewer epochs) and 0.5 % still running (no live owner: listed ``dead``).
``twin=False`` writes the layout of run dirs recorded before config.json existed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from latentgeo.records import ARTIFACTS, write_config_twin

HEADS = ("bin_enc", "lin_pen", "nonlin_pen", "no_pen")
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
STEPS_PER_EPOCH = 16
FAILED_EVERY = 97  # job numbers divisible by this failed (about 1 %)
RUNNING_EVERY = 199  # ... and these are still "running" (no live owner)

# the config.yaml of a real tiny run (``python -m latentgeo.train dataset=synthetic model=mlp
# head=bin_enc``), with the values the grid varies as fields
CONFIG_TEMPLATE = """\
model:
  name: mlp
  width: null
  widths:
  - 512
  - 256
  activation: relu
  pretrained: false
head:
  name: {head}
  penultimate_nodes: 6
  dropout_penultimate: false
  gamma_start: 0.01
  gamma_factor: 1.05
  gamma_step: 1
  gamma_max: 1000000.0
  penalty: mse
dataset:
  name: synthetic
  root: null
  download: true
  augment: false
  loader: tensor
  num_workers: 2
  image_size: 16
  channels: 3
  num_classes: 10
  train_size: 2000
  test_size: 500
  seed: 0
  label_noise: 0.0
  pixel_shuffle: false
  classes: null
  num_classes_subsample: null
  train_subset:
    size_per_class: null
    index: 0
  val_split: null
  stratified: true
  resize: null
  resize_pad: null
optimizer:
  name: adamw
  lr: {lr}
  lr_find:
    min_lr: 1.0e-08
    max_lr: 1.0
    steps: 100
    early_stop_threshold: 4.0
    beta: 0.98
    slope: log_lr
  weight_decay: 0.0005
  momentum: 0.9
  nesterov: false
schedule:
  name: step
  step_size: 50
  factor: 0.5
  start_epoch: 250
  keep_output_lr: true
  min_lr: 0.0
metrics:
  every: 50
  collapse:
    when: every
  binarity:
    when: every
  same_encoding:
    when: every
  mahalanobis:
    when: last
  perturbation:
    when: last
    samples: 1000
    overshoot: 0.02
    max_iter: 50
    num_candidates: 10
  ood:
    dataset: null
    when: last
  nc1:
    when: 'off'
  hyperplanes:
    when: init+every:1
    normalize: true
    with_linear: false
    skip_pointwise: true
  alpha:
    when: every:1
  dib:
    when: 'off'
    blocks: null
    epochs: 20
    minimality_epochs: 50
    splits:
    - train
    - test
    batch_size: null
  reinit:
    when: 'off'
    layers: conv
    rand: true
    rand_seed: null
  penultimate:
    when: 'off'
  seed: 0
  train_subset: null
logger:
  name: local
  mode: offline
  project: latentgeo
  entity: null
  group: null
  tags: []
  init_timeout: 30.0
  histograms: true
trainer:
  epochs: {epochs}
  batch_size: 128
  eval_batch_size: 1000
  seed: {seed}
  deterministic: false
  device: auto
  num_threads: null
  snapshot_epochs: []
  resume: true
  progress: true
  limit_train_batches: null
  limit_eval_batches: null
  overfit_batches: null
  profile_steps: 0
  channels_last: false
  precision: '32'
  compile: 'false'
activation:
  granularity: layer
  mode: penalty
  init_alpha: 1.0
  init_nu: 0.0
  nu_step: 0.01
  l1: 0.001
  freeze_oscillating: false
  oscillation_k: 3
  oscillation_window: 10
name: {name}
"""

# 40 metrics per event, the names training records (``test/collapse/...``); each drawn as a
# smooth curve towards its final value with seeded noise
METRICS = (
    "train/loss", "train/accuracy", "train/running_loss", "train/running_accuracy",
    "test/loss", "test/accuracy", "lr", "gamma", "hyperplanes/net/mean", "hyperplanes/net/mass",
    *(f"{split}/collapse/{name}" for split in ("train", "test") for name in (
        "within_class_variation", "within_class_variation_weighted", "sigma_w", "equiangular",
        "maxangle", "equinorm", "relative_norm_std")),
    *(f"{split}/binarity/{name}" for split in ("train", "test") for name in (
        "score", "stds", "peaks_distance_mean", "peaks_distance_std")),
    "train/same_encoding_fraction", "test/same_encoding_fraction", "test/mahalanobis/auroc",
    "test/mahalanobis/auroc_exact", "test/perturbation/score", "time/epoch_s", "time/eval_s",
    "test/mahalanobis/num_classes_used",
)
VERSIONS = {"hydra-core": "1.3.8", "latentgeo": "0.1.0", "numpy": "2.4.6", "python": "3.11.7",
            "torch": "2.14.1", "torchvision": "0.29.1"}


def grid(runs: int) -> list[tuple[str, float, int]]:
    """(head, lr, seed) of jobs ``0 .. runs-1``: heads outermost, then seeds, then LRs."""
    per_head = math.ceil(runs / len(HEADS))
    seeds = math.ceil(per_head / len(LRS))
    cells = [(head, lr, seed) for head in HEADS for seed in range(seeds) for lr in LRS]
    return cells[:runs]


def base_config() -> dict:
    """The template parsed as config.yaml is read (its twin's content before the grid's values)."""
    from omegaconf import OmegaConf

    text = CONFIG_TEMPLATE.format(head="bin_enc", lr=0.001, epochs=1, seed=0, name="x")
    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)  # type: ignore[return-value]


def curves(rng: np.random.Generator, epochs: int, lr: float) -> np.ndarray:
    """(epochs + 1, len(METRICS)) values: each metric from a start to an end value."""
    t = np.arange(epochs + 1, dtype=float)[:, None]
    speed = 5.0 + 40.0 * rng.random(len(METRICS))
    start, end = rng.normal(1.0, 0.3, len(METRICS)), rng.normal(0.2, 0.1, len(METRICS))
    end[[1, 3, 5]] = 0.95 - 0.3 * abs(math.log10(lr) + 3) / 2 + rng.normal(0, 0.01, 3)
    start[[1, 3, 5]] = 0.1
    values = end + (start - end) * np.exp(-t / speed) + rng.normal(0, 0.005, t.shape[:1] + (len(
        METRICS),))
    values[:, METRICS.index("lr")] = lr
    return values


def write_run(run_dir: Path, job: int, head: str, lr: float, seed: int, epochs: int,
              base: dict, twin: bool) -> None:
    rng = np.random.default_rng([job, seed, 17])
    state = ("failed" if job % FAILED_EVERY == FAILED_EVERY - 1 else
             "running" if job % RUNNING_EVERY == RUNNING_EVERY - 1 else "ok")
    done = epochs if state == "ok" else epochs // 3
    values = curves(rng, epochs, lr)[:done + 1]
    run_dir.mkdir(parents=True)
    name = f"{head}-lr{lr:g}-s{seed}"
    config_text = CONFIG_TEMPLATE.format(head=head, lr=lr, epochs=epochs, seed=seed, name=name)
    (run_dir / ARTIFACTS["config"]).write_text(config_text)
    if twin:
        config = json.loads(json.dumps(base))
        config["head"]["name"], config["optimizer"]["lr"] = head, lr
        config["trainer"]["epochs"], config["trainer"]["seed"], config["name"] = (
            epochs, seed, name)
        write_config_twin(run_dir, config, atomic=False)
    keys = [json.dumps(key) for key in METRICS]
    with open(run_dir / ARTIFACTS["metrics"], "w") as f:
        for epoch, row in enumerate(values.tolist()):
            f.write(f'{{"epoch": {epoch}, "step": {epoch * STEPS_PER_EPOCH}, '
                    + ", ".join(f"{k}: {v!r}" for k, v in zip(keys, row)) + "}\n")
    accuracy = values[:, METRICS.index("test/accuracy")]
    train_accuracy = values[:, METRICS.index("train/accuracy")]
    status = {"state": state, "reason": "CUDA out of memory" if state == "failed" else None,
              "started": "2026-11-30T10:00:00+00:00",
              "ended": None if state == "running" else "2026-11-30T11:00:00+00:00",
              "epoch": done, "git_sha": "d35cecc5c76fc5cb79938239ca655058e4b72cc9",
              "versions": VERSIONS, "overrides": [f"head={head}", f"optimizer.lr={lr}",
                                                   f"trainer.seed={seed}"]}
    if twin:  # what training records in status.json today (``RunDir.log`` / ``start``)
        status |= {"epochs": epochs, "best/test/accuracy": float(accuracy.max())}
    (run_dir / ARTIFACTS["status"]).write_text(json.dumps(status, indent=2, sort_keys=True))
    if state == "ok":
        summary = dict(zip(METRICS, values[-1].tolist()))
        converged = np.flatnonzero(train_accuracy > 0.999)
        summary |= {"epochs": done, "best/test/accuracy": float(accuracy.max()),
                    "best_epoch": int(accuracy.argmax()),
                    "convergence_epoch": int(converged[0]) if len(converged) else None}
        (run_dir / ARTIFACTS["summary"]).write_text(
            json.dumps(summary, indent=2, sort_keys=True) + "\n")


def write_sweep(sweep_dir: Path | str, runs: int, epochs: int = 300, twin: bool = True,
                first_job: int = 0) -> Path:
    """``runs`` run dirs (jobs ``first_job ..``) of the grid under ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    base = base_config()
    for job, (head, lr, seed) in enumerate(grid(first_job + runs)):
        if job >= first_job:
            write_run(sweep_dir / str(job), job, head, lr, seed, epochs, base, twin)
    (sweep_dir / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    return sweep_dir
