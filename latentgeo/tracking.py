"""The sink for metrics besides the run record: wandb (offline by default). (The progress
bar and the per-epoch line on the terminal are ``engine.fit``'s, not a sink.)

wandb never decides whether a run succeeds: if it cannot start we warn and carry on with the
local records; ``finish`` is always called, with exit code 1 when the run failed.

A run's wandb identity (id, name, group) is chosen once and kept in its status.json, so a
resumed, requeued or moved run continues the same wandb run, and the post-hoc commands
(DIB, re-init, evaluate) reach that run's summary later (``add_to_summary``); ``evaluate``
also logs its own run, ``job_type=evaluate``, in the same group (``log_evaluation``).
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from latentgeo.config import TrainConfig
from latentgeo.records import WANDB_IDENTITY, RunDir

log = logging.getLogger(__name__)


def wandb_run_id(stored: str | None) -> str:
    """The run's wandb id: the one its status.json stores (a resumed, requeued or moved run
    continues the same wandb run), else a new random one — never a path, which two users or
    a moved outputs folder would share or change."""
    return stored or uuid.uuid4().hex[:16]


def short_number(value: float) -> str:
    """2e-4, 1.5e-3, 0.1: learning rates as a person writes them."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


NAMING_GROUPS = ("variant", "corruption", "experiment")  # what tells a sweep's variants apart


def display_name(head: str, lr: float | str, seed: int, overrides: list[str],
                 name: str | None = None) -> str:
    """``bin_enc-lr2e-4-s1``: the readable name (or the head), the variant options chosen on
    the command line (``variant=…``, ``corruption=…``, ``experiment=…``), the LR, the seed."""
    chosen = [value for key, _, value in (o.partition("=") for o in overrides)
              if key.lstrip("+~") in NAMING_GROUPS and value]
    parts = [name or head, *chosen]
    lr_text = short_number(lr) if isinstance(lr, (int, float)) else str(lr)
    return "-".join([*dict.fromkeys(parts), f"lr{lr_text}", f"s{seed}"])


class WandbSink:
    """Logs the same metric names as metrics.jsonl to wandb."""

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def start(
        cls,
        run_dir: Path,
        cfg: TrainConfig,
        config: dict[str, Any],
        job_type: str,
        run_id: str,
        name: str,
        group: str,
        silent: bool = False,
    ) -> WandbSink | None:
        """Start (or resume) wandb run ``run_id`` with ``cfg.logger``'s settings, or warn and
        return None (local records only). Charts use ``epoch`` as their x-axis; the console
        gets no summary footer."""
        os.environ.setdefault("WANDB_START_METHOD", "thread")  # older wandb releases read it
        logger = cfg.logger
        tags = [cfg.dataset.name, cfg.model.name, cfg.head.name, *logger.tags]
        try:
            import wandb

            run = wandb.init(
                project=logger.project,
                entity=logger.entity,
                group=group,
                job_type=job_type,
                tags=list(dict.fromkeys(tags + ([job_type] if job_type != "train" else []))),
                config=config,
                dir=str(run_dir),
                id=run_id,
                name=name,
                resume="allow",
                mode=logger.mode,
                settings=wandb.Settings(init_timeout=logger.init_timeout,
                                        x_service_wait=logger.init_timeout, quiet=True,
                                        silent=silent),
            )
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch")
        except Exception as error:  # noqa: BLE001 - wandb must never stop a run
            warnings.warn(f"wandb could not start ({type(error).__name__}: {error}); "
                          f"continuing with local records in {run_dir}", stacklevel=2)
            return None
        return cls(run)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.run.log(scalars, step=step)

    def log_images(self, paths: dict[str, Path], step: int) -> None:
        """The figures a run wrote (alpha.png, reinit.png, lr_find.png), as wandb images."""
        import wandb

        found = {f"figures/{name}": wandb.Image(str(path)) for name, path in paths.items()
                 if Path(path).is_file()}
        if found:
            self.run.log(found, step=step)

    def log_histograms(self, arrays: dict[str, np.ndarray], step: int) -> None:
        import wandb

        self.run.log({k: wandb.Histogram(v) for k, v in arrays.items()}, step=step)

    def finish(self, exit_code: int) -> None:
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"wandb finish failed: {error}", stacklevel=2)


def start_training_sink(run: RunDir, cfg: TrainConfig, config: dict[str, Any],
                        group: str | None, overrides: list[str]) -> WandbSink | None:
    """The training run's wandb sink, under ``stored_identity`` (a new random id the first
    time), noted in status.json for later (the caller owns the run dir)."""
    stored_id, name, group = stored_identity(run, cfg, overrides, group)
    identity = (wandb_run_id(stored_id), name, group)
    for key, value in zip(WANDB_IDENTITY, identity):
        run.note(key, value)
    return WandbSink.start(run.dir, cfg, config, "train", *identity)


def stored_identity(run: RunDir, cfg: TrainConfig, overrides: list[str] | None = None,
                    sweep: str | None = None) -> tuple[str | None, str, str]:
    """(id, name, group) of the run's wandb run: what status.json keeps, else as training
    first derives them — no id yet, the readable name of the head, LR, seed and overrides
    (default: status.json's), the group ``logger.group``, else ``sweep`` (the sweep id), else
    the sweep a job dir named by its number is in, else the run dir's name. The one place
    they are derived: training, the post-hoc summary updates and evaluate's run agree."""
    if overrides is None:
        overrides = run.recorded("overrides") or []
    name = run.recorded("wandb_name") or display_name(
        cfg.head.name, cfg.optimizer.lr, cfg.trainer.seed, overrides, cfg.name)
    job_dir = run.dir.resolve()
    group = run.recorded("wandb_group") or cfg.logger.group or sweep or (
        job_dir.parent.name if job_dir.name.isdigit() else job_dir.name)
    return run.recorded("wandb_id"), name, group


def scalars(values: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def add_to_summary(run: RunDir, cfg: TrainConfig, values: dict[str, Any]) -> list[str]:
    """Post-hoc results (DIB, re-init, an evaluated checkpoint) into a finished run's summary:
    summary.json, and the summary of its wandb run when it logged to one (resumed by its stored
    id just long enough; ``latentgeo.sync`` uploads it after the run's own log). A run not
    finished ok has no summary yet: nothing is added. The caller owns the run dir. Returns
    where the values went."""
    if run.summary() is None:
        return []
    run.add_to_summary(values)
    where = [str(run.artifact("summary"))]
    run_id, name, group = stored_identity(run, cfg)
    if cfg.logger.name == "wandb" and run_id:
        sink = WandbSink.start(run.dir, cfg, run.config(), "train", run_id, name, group,
                               silent=True)
        if sink is not None:
            sink.run.summary.update(scalars(values))
            sink.finish(exit_code=0)
            where.append(f"wandb run {run_id}")
    return where


def log_evaluation(run: RunDir, cfg: TrainConfig, results: list[dict[str, Any]]) -> str | None:
    """Evaluated checkpoints as their own wandb run: ``job_type=evaluate``, the training run's
    group, its name + ``-eval``, one history row per checkpoint on the epoch axis (so
    ``checkpoint=all`` draws the metrics over training). Returns the new run's id."""
    train_id, name, group = stored_identity(run, cfg)
    config = {**run.config(), "evaluated": {"wandb_id": train_id,
                                            "checkpoints": [r["checkpoint"] for r in results]}}
    run_id = wandb_run_id(None)
    sink = WandbSink.start(run.dir, cfg, config, "evaluate", run_id, f"{name}-eval", group,
                           silent=True)
    if sink is None:
        return None
    for step, values in enumerate(sorted(results, key=lambda r: r["epoch"])):
        sink.log(values, step=step)
    sink.finish(exit_code=0)
    return run_id


def sweep_wandb_settings(configs: list[dict[str, Any]], sweep_dir: str | Path
                         ) -> dict[str, Any] | None:
    """project/entity/group for a sweep-level table (aggregate), from the runs' flat configs;
    None unless every run logged to wandb online."""
    configs = [c for c in configs if c]
    if not configs or any(c.get("logger.mode") != "online" for c in configs):
        return None
    if any(c.get("logger.name", "wandb") != "wandb" for c in configs):
        return None
    first = configs[0]
    return {
        "project": first.get("logger.project") or "latentgeo",
        "entity": first.get("logger.entity"),
        # a training run's default group is the sweep id, i.e. the sweep dir's name
        "group": first.get("logger.group") or Path(sweep_dir).resolve().name,
    }


def log_table(name: str, frame: Any, settings: dict[str, Any], config: dict[str, Any]) -> bool:
    """A DataFrame as a wandb Table in its own run (``job_type=name``) of the sweep's group;
    warn and return False on any failure (no network, no key). Never with WANDB_MODE≠online
    (the tests set offline)."""
    if os.environ.get("WANDB_MODE", "online") != "online":
        return False
    try:
        import wandb

        run = wandb.init(project=settings["project"], entity=settings["entity"],
                         group=settings["group"], job_type=name,
                         name=f"{name}-{settings['group']}", config=config,
                         settings=wandb.Settings(init_timeout=30))
        try:
            run.log({name: wandb.Table(dataframe=frame)})
        finally:
            run.finish()
        return True
    except Exception as error:  # noqa: BLE001 - the local files are the record; wandb is extra
        print(f"warning: could not log the {name} table to wandb: {error}", file=sys.stderr)
        return False
