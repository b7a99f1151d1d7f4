"""Run building: check a config's names against the registries, build its data, loaders and
model, and open a run dir at one of its checkpoints — the same way for ``train``, ``evaluate``
and the post-hoc analyses. ``latentgeo.checks.validate`` calls the checks here once per run.

Each registry is the one source of its allowed values: models (``models.MODELS``, ``HEADS``,
``ACTIVATIONS``), datasets (``data.DATASETS``, ``LOADERS``), optimizers, LR schedules and
compression penalties (``loop.OPTIMIZERS``, ``SCHEDULES``, ``PENALTIES``).

Run-building layer: foundation, components and the loop only.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from latentgeo.config import ConfigError, TrainConfig, check, to_typed, with_changes
from latentgeo.data import DATASETS, LOADERS, DataBundle, Loaders, load_dataset, make_loaders
from latentgeo.data.datasets import load_ood
from latentgeo.loop import OPTIMIZERS, PENALTIES, SCHEDULES
from latentgeo.models import HEADS, MODELS, Classifier, build_model
from latentgeo.models.activations import ACTIVATIONS
from latentgeo.models.relu_alpha import GRANULARITIES, MODES
from latentgeo.records import LockHeld, RunDir, checkpoint_name
from latentgeo.runtime import load_checkpoint, select_device


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """The device ``name`` means here; ConfigError when it names CUDA and there is none."""
    device = select_device(name)
    check(device.type != "cuda" or torch.cuda.is_available(), key, name,
          f"{'--device cpu' if key.startswith('--') else 'cpu'} or auto here (CUDA is not "
          "available on this machine)")
    return device


def check_names(cfg: TrainConfig) -> None:
    """Every name the config picks from a registry is in it; ConfigError naming key, value,
    allowed."""
    m, h, d = cfg.model, cfg.head, cfg.dataset
    check(m.name in MODELS, "model.name", m.name, f"one of {sorted(MODELS)}")
    check(m.activation in ACTIVATIONS, "model.activation", m.activation,
          f"one of {sorted(ACTIVATIONS)}")
    if m.activation == "relu_alpha":
        a = cfg.activation
        check(a.granularity in GRANULARITIES, "activation.granularity", a.granularity,
              f"one of {list(GRANULARITIES)}")
        check(a.mode in MODES, "activation.mode", a.mode, f"one of {list(MODES)}")
    check(h.name in HEADS, "head.name", h.name, f"one of {list(HEADS)}")
    check(h.penalty in PENALTIES, "head.penalty", h.penalty, f"one of {list(PENALTIES)}")
    check(d.name in DATASETS, "dataset.name", d.name, f"one of {sorted(DATASETS)}")
    check(d.loader in LOADERS, "dataset.loader", d.loader, f"one of {list(LOADERS)}")
    check(cfg.optimizer.name in OPTIMIZERS, "optimizer.name", cfg.optimizer.name,
          f"one of {list(OPTIMIZERS)}")
    check(cfg.schedule.name in SCHEDULES, "schedule.name", cfg.schedule.name,
          f"one of {list(SCHEDULES)}")


def check_data(cfg: TrainConfig, num_classes: int) -> None:
    """The check that needs the loaded data's class count (``dataset.classes`` against the
    raw data set is ``load_dataset``'s)."""
    h = cfg.head
    if HEADS[h.name].binary_code:
        check(2**h.penultimate_nodes >= num_classes, "head.penultimate_nodes",
              h.penultimate_nodes,
              f"2^penultimate_nodes >= number of classes ({num_classes}) for head "
              f"{h.name}, i.e. >= {math.ceil(math.log2(num_classes))}")


def load_data(cfg: TrainConfig) -> tuple[DataBundle, DataBundle | None]:
    """The run's data (subsets and corruptions applied) and, when configured, the OOD set."""
    data = load_dataset(cfg.dataset)
    ood_name = cfg.metrics.ood.dataset if "ood" in cfg.metrics else None
    ood = load_ood(ood_name, cfg.dataset, data.input_shape) if ood_name else None
    return data, ood


def build_loaders(cfg: TrainConfig, data: DataBundle, device: torch.device,
                  ood: DataBundle | None = None) -> Loaders:
    """The run's loaders from its whole config (``data.make_loaders`` takes the sub-configs)."""
    return make_loaders(cfg.dataset, cfg.trainer, cfg.metrics, data, device, ood)


@dataclass
class LoadedRun:
    """A run dir rebuilt as training built it, with the weights of one checkpoint."""

    run: RunDir
    cfg: TrainConfig  # optimizer.lr numeric: an lr=auto run's suggestion from lr_find.json
    data: DataBundle
    ood: DataBundle | None
    model: Classifier  # on ``device``, eval mode
    loaders: Loaders
    checkpoint: str  # last | init | epoch_XXXX
    epoch: int  # epochs completed by the loaded weights
    device: torch.device

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loaders.train)


def run_config(run: RunDir, tree: dict | None = None) -> TrainConfig:
    """A run dir's config.yaml (or ``tree``, e.g. it with overrides) as the dataclasses, older
    keys upgraded; an lr=auto run gets the LR it trained with (``lr_find.json``'s suggestion)."""
    tree = run.config() if tree is None else tree
    if not tree:
        raise FileNotFoundError(f"{run.dir} is not a run dir: {run.artifact('config')} is missing")
    cfg = to_typed(tree)
    if cfg.optimizer.lr == "auto":
        found = run.read_artifact("lr_find")
        if not found or found.get("suggestion") is None:
            raise FileNotFoundError(f"optimizer.lr='auto' and no suggestion in "
                                    f"{run.artifact('lr_find')}")
        cfg = with_changes(cfg, optimizer={"lr": float(found["suggestion"])})
    return cfg


def checkpoint_of(name: str | int | None) -> str:
    """``last`` / ``init`` / ``epoch_XXXX`` from a name or an epoch (0 = init, None = last)."""
    return name if isinstance(name, str) else checkpoint_name(name)


def load_run(run_dir: Path | RunDir, checkpoint: str | int | None = "last",
             device: str | None = None, with_ood: bool = False,
             cfg: TrainConfig | None = None) -> LoadedRun:
    """config.yaml (or ``cfg``, from ``run_config``) + ``checkpoints/<checkpoint>.pt`` ->
    data, model, loaders, as ``training.train_and_record`` built them. ``device``: default the run's
    ``trainer.device``. Raises FileNotFoundError (naming the checkpoints that exist) or
    ConfigError (a device that is not here)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    cfg = run_config(run) if cfg is None else cfg
    name = checkpoint_of(checkpoint)
    path = run.checkpoint(name)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {name!r} ({path}); this run has "
                                f"{run.checkpoint_names() or 'no checkpoints'}")
    target = resolve_device(device or cfg.trainer.device,
                            "--device" if device else "the run's trainer.device (pass --device)")
    data, ood = load_data(cfg) if with_ood else (load_dataset(cfg.dataset), None)
    model = build_model(cfg, data.input_shape, data.num_classes).to(target)
    state = load_checkpoint(path, target)
    model.load_state_dict(state["model"])
    model.eval()
    loaders = build_loaders(cfg, data, target, ood)
    return LoadedRun(run, cfg, data, ood, model, loaders, name, int(state["epoch"]), target)


def owning(run_dir: Path, purpose: str, command: Callable[[], int]) -> int:
    """Run a command that writes into ``run_dir`` with the run dir's owner lock held; exit
    code 2 with the holder's name when another process (a training run) has it."""
    try:
        with RunDir(run_dir).owned(purpose):
            return command()
    except LockHeld as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


__all__ = ["ConfigError", "LoadedRun", "check_data", "check_names", "load_data", "load_run",
           "build_loaders", "owning", "resolve_device", "run_config"]
