"""``python -m latentgeo.train [overrides]``: compose -> validate -> build -> fit -> record."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import uuid
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from latentgeo.config import ConfigError, register_configs, to_container, validate
from latentgeo.data import DatasetUnavailable, load_dataset
from latentgeo.data.datasets import load_ood
from latentgeo.engine import alpha_trajectories, fit, seed_everything
from latentgeo.models import build_model
from latentgeo.records import (
    RunRecord,
    atomic_write_json,
    read_json,
    read_metrics,
    scrub_secrets,
    summarize,
)
from latentgeo.tracking import WandbSink

# Keys that do not change what a run computes: excluded from the run-dir hash (conf/train.yaml)
# and from the "same config?" check on resume.
BOOKKEEPING = ("trainer.resume", "trainer.progress", "trainer.device", "trainer.num_threads",
               "logger")


def run_name(name: str | None, dataset: str, model: str, head: str, overrides: str) -> str:
    """Readable name + short hash of the overrides: rerunning a command finds its run dir."""
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    readable = name or f"{dataset}-{model}-{head}"
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', readable)}-{digest}"


def sweep_id() -> str:
    """One id per sweep, shared with its jobs through the environment (they inherit it).
    Timestamp for sorting plus random hex, so two sweeps started in one second differ.
    Set LATENTGEO_SWEEP_ID to re-enter (and resume) an existing sweep."""
    if not os.environ.get("LATENTGEO_SWEEP_ID"):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        os.environ["LATENTGEO_SWEEP_ID"] = f"{stamp}-{uuid.uuid4().hex[:6]}"
    return os.environ["LATENTGEO_SWEEP_ID"]


OmegaConf.register_new_resolver("lg_run_name", run_name, replace=True)
OmegaConf.register_new_resolver("lg_sweep_id", sweep_id, replace=True)
register_configs()


def comparable(config: dict) -> dict:
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key in BOOKKEEPING:
        group, _, leaf = key.partition(".")
        if leaf:
            config.get(group, {}).pop(leaf, None)
        else:
            config.pop(group, None)
    return config


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(num_threads: int | None) -> None:
    """Slurm does not limit torch's threads: follow SLURM_CPUS_PER_TASK unless configured."""
    threads = num_threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0))
    if threads:
        torch.set_num_threads(threads)


def resolve_auto_lr(cfg: DictConfig, data, device: torch.device, record: RunRecord
                    ) -> DictConfig:
    """optimizer.lr=auto: run the LR range test (once: a resumed run reads lr_find.json) and
    train with its suggestion — TH's tuned LR never reached training; ours does."""
    from latentgeo.analysis.lr_find import LR_FIND_FILE, suggest_lr, write_lr_find

    path = record.dir / LR_FIND_FILE
    result = read_json(path) if path.is_file() else suggest_lr(cfg, data, device)
    if result["suggestion"] is None:
        raise ConfigError("optimizer.lr=auto: the LR range test gave no suggestion; raise "
                          "optimizer.lr_find.steps or optimizer.lr_find.max_lr")
    if not path.is_file():
        write_lr_find(record.dir, result)
        record.log({"epoch": 0, "step": 0, "lr_find/suggestion": result["suggestion"]})
    print(f"optimizer.lr=auto: LR range test suggests {result['suggestion']:.3g}")
    return OmegaConf.merge(cfg, {"optimizer": {"lr": result["suggestion"]}})


def train(cfg: DictConfig, run_dir: Path, group: str | None = None) -> dict:
    """Run (or resume) one training run into ``run_dir``; returns its summary."""
    record = RunRecord(run_dir)
    config = scrub_secrets(to_container(cfg))
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(config))
    if record.exists() and not cfg.trainer.resume:
        print(f"trainer.resume=false: previous record moved to {record.archive()}")
    if record.exists() and record.config_path.is_file():
        previous = OmegaConf.to_container(OmegaConf.load(record.config_path))
        if comparable(previous) != comparable(config):
            raise ConfigError(
                f"run dir {run_dir} holds a run with a different config; pass "
                f"trainer.resume=false to archive it and start fresh, or choose another name=")
    if record.state == "ok":
        print(f"run already complete: {run_dir} (trainer.resume=false starts it afresh)")
        return summarize(read_metrics(record.metrics_path))

    resumed_epoch = 0
    if record.last_checkpoint.is_file():
        resumed_epoch = torch.load(record.last_checkpoint, weights_only=True)["epoch"]
    record.start(config_yaml, resumed_epoch)
    sink = None
    try:
        validate(cfg)
        data = load_dataset(cfg.dataset)
        validate(cfg, num_classes=data.num_classes)
        ood_name = cfg.metrics.ood.dataset
        ood = load_ood(ood_name, cfg.dataset, data.input_shape) if ood_name else None
        set_threads(cfg.trainer.num_threads)
        seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
        device = select_device(cfg.trainer.device)
        if cfg.optimizer.lr == "auto":
            cfg = resolve_auto_lr(cfg, data, device, record)
        model = build_model(cfg, data.input_shape, data.num_classes).to(device)
        if cfg.logger.name == "wandb":
            sink = WandbSink.start(
                run_dir, cfg.logger.mode, cfg.logger.project, cfg.logger.entity,
                cfg.logger.group or group or run_dir.name, job_type=cfg.head.name,
                tags=[cfg.dataset.name, cfg.model.name, *cfg.logger.tags], config=config,
                init_timeout=cfg.logger.init_timeout)
        if resumed_epoch:
            print(f"resuming {run_dir} from epoch {resumed_epoch}")
        fit(cfg, data, model, record, device, sink, ood)
        events = read_metrics(record.metrics_path)
        if cfg.model.activation == "relu_alpha":
            from latentgeo.analysis.plots import plot_alpha_trajectories

            trajectories = alpha_trajectories(events)
            atomic_write_json(run_dir / "alpha.json", trajectories)
            plot_alpha_trajectories(trajectories, run_dir / "alpha.png")
        summary = summarize(events)
        record.finish_ok(summary)
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        # submitit requeues a timed-out or preempted job by raising SystemExit: that run is
        # not failed, it resumes from last.pt when the job starts again
        record.fail(reason, "interrupted" if isinstance(error, SystemExit) else "failed")
        if sink is not None:
            sink.finish(exit_code=1)
        raise
    if sink is not None:
        sink.run.summary.update({k: v for k, v in summary.items() if v is not None})
        sink.finish(exit_code=0)
    print(f"run ok: {run_dir}  test accuracy {summary.get('test/accuracy', float('nan')):.4f}")
    return summary


@hydra.main(version_base=None, config_path="pkg://latentgeo.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    group = Path(hydra_cfg.sweep.dir).name if multirun else None
    try:
        summary = train(cfg, Path(hydra_cfg.runtime.output_dir), group)
    except (ConfigError, DatasetUnavailable) as error:
        if multirun:
            raise  # the launcher records the failure and finishes the other jobs
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return summary.get("test/accuracy")


if __name__ == "__main__":
    main()
