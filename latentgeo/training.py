"""One training run end to end: refuse a conflicting rerun, own the run dir, read its checkpoint,
validate, build, ``engine.fit``, check the events, record the summary — and record whatever
stops it (a failure, a signal) in status.json. ``python -m latentgeo.train`` calls
``train_and_record``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from latentgeo import provenance
from latentgeo.analysis.lr_find import suggest_lr, write_lr_find
from latentgeo.build import build_loaders, check_data, load_data, resolve_device
from latentgeo.checks import validate
from latentgeo.config import (
    ConfigError,
    TrainConfig,
    comparable,
    to_container,
    to_typed,
    with_changes,
)
from latentgeo.data import DataBundle
from latentgeo.engine import event_problem, fit
from latentgeo.metrics.chance import learning_summary
from latentgeo.models import build_model
from latentgeo.records import (
    ARTIFACTS,
    DISK_FULL,
    RunDamaged,
    RunDir,
    RunFailed,
    write_problem,
)
from latentgeo.runtime import CheckpointDamaged, load_checkpoint, seed_everything, set_threads
from latentgeo.signals import Interrupted, signals_interrupt
from latentgeo.summaries import never_learned, summarize
from latentgeo.tracking import start_training_sink


def resolve_auto_lr(cfg: TrainConfig, data: DataBundle, device, run: RunDir,
                    resumed_epoch: int) -> TrainConfig:
    """optimizer.lr=auto: run the LR range test (once: a rerun reads lr_find.json) and
    train with its suggestion — TH's tuned LR never reached training; ours does."""
    stored = run.read_artifact("lr_find")
    result = stored if stored is not None else suggest_lr(cfg, data, device)
    if result["suggestion"] is None:
        raise ConfigError("optimizer.lr=auto: the LR range test gave no suggestion; raise "
                          "optimizer.lr_find.steps or optimizer.lr_find.max_lr")
    if stored is None:
        write_lr_find(run, result)
    if not resumed_epoch:  # a fresh start records it (a resumed run's events already hold it)
        run.log({"epoch": 0, "step": 0, "lr_find/suggestion": result["suggestion"]})
    print(f"optimizer.lr=auto: LR range test suggests {result['suggestion']:.3g}")
    return with_changes(cfg, optimizer={"lr": result["suggestion"]})


def same_run(previous: dict, config: dict) -> bool:
    """Does a run dir's config.yaml describe this run (bookkeeping keys aside)? An older
    config.yaml is read in today's keys first."""
    try:
        previous = to_container(to_typed(previous))
    except Exception:  # noqa: BLE001 - a config.yaml the schema cannot read is not this run
        return False
    return comparable(previous) == comparable(config)


def resume_epoch(run: RunDir) -> int:
    """The epoch of ``last.pt`` (0 without one); RunDamaged with the recovery when damaged."""
    if not run.last_checkpoint.is_file():
        return 0
    try:
        return int(load_checkpoint(run.last_checkpoint)["epoch"])
    except CheckpointDamaged as error:
        raise RunDamaged(f"cannot resume: {error}; rerun with trainer.resume=false to archive "
                         "this record and start afresh") from None


def train_and_record(cfg: DictConfig | TrainConfig, run_dir: Path, group: str | None = None,
          overrides: list[str] | None = None, values_checked: bool = False) -> dict:
    """Run (or resume) one training run into ``run_dir``; returns its summary. The run dir is
    owned by this process throughout (a second writer is refused); whatever fails after the
    checks is recorded in status.json as failed (or interrupted, for a signal).
    ``values_checked``: the caller ran ``config.check_values`` (the command line does)."""
    cfg = to_typed(cfg)
    run = RunDir(run_dir)
    config = provenance.scrub_secrets(to_container(cfg))
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(config))
    if (run.exists() and cfg.trainer.resume and run.artifact("config").is_file()
            and not same_run(run.config(), config)):  # refused before anything is written
        raise ConfigError(
            f"run dir {run_dir} holds a run with a different config; pass "
            f"trainer.resume=false to archive it and start fresh, or choose another name=")
    with run.owned("train"), signals_interrupt():
        if run.exists() and not cfg.trainer.resume:
            print(f"trainer.resume=false: previous record moved to {run.archive()}")
        if run.state == "ok":
            print(f"run already complete: {run_dir} (trainer.resume=false starts it afresh)")
            return summarize(run.events())
        return record_run(cfg, run, config, config_yaml, group, overrides, values_checked)


def record_run(cfg: TrainConfig, run: RunDir, config: dict, config_yaml: str,
               group: str | None, overrides: list[str] | None,
               values_checked: bool = False) -> dict:
    """Everything from reading the checkpoint to the summary, inside the recorded region."""
    sink = None
    made_with = provenance.record()  # git_sha and versions, for status.json
    try:
        resumed_epoch = resume_epoch(run)
        run.start(config_yaml, resumed_epoch, overrides, made_with)
        validate(cfg, values_checked)
        data, ood = load_data(cfg)
        check_data(cfg, data.num_classes)
        set_threads(cfg.trainer.num_threads)
        seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
        device = resolve_device(cfg.trainer.device)
        if cfg.optimizer.lr == "auto":
            cfg = resolve_auto_lr(cfg, data, device, run, resumed_epoch)
        model = build_model(cfg, data.input_shape, data.num_classes).to(device)
        loaders = build_loaders(cfg, data, device, ood)
        if cfg.logger.name == "wandb":
            sink = start_training_sink(run, cfg, config, group, overrides or [])
        if resumed_epoch:
            print(f"resuming {run.dir} from epoch {resumed_epoch}")
        events = fit(cfg, run, model, data, loaders, device, sink)
        problem = event_problem(run.events(), events)
        if problem is not None:  # metrics.jsonl was damaged while the run went on
            run.rewrite_events(events)
            run.note("repaired", f"metrics.jsonl {problem}; rewritten from the events the "
                                 "training process recorded")
        summary = summarize(events)
        summary.update(learning_summary(summary.get("test/accuracy"), evaluated_test_labels(
            cfg, data)))
        run.finish_ok(summary)
    except BaseException as error:
        state, reason = outcome(error, run)
        disk_full = isinstance(error, OSError) and error.errno in DISK_FULL
        try:
            run.fail(reason, state, made_with)
        except OSError as unrecorded:  # a disk so full that not even status.json's block is left
            reason += f"; not recorded: {write_problem(unrecorded, run.dir)}"
            if not disk_full:
                print(f"error: {reason}", file=sys.stderr)
        if sink is not None:
            sink.finish(exit_code=1)
        if isinstance(error, Interrupted):
            print(f"interrupted by {error}: {reason}", file=sys.stderr)
        if disk_full:  # the reason says it all: the command line prints it in one line
            raise RunFailed(reason) from error
        raise
    if sink is not None:
        figures = [run.artifact(name) for name, file in ARTIFACTS.items() if file.endswith(".png")]
        sink.log_images({path.stem: path for path in figures},
                        step=events[-1]["step"] if events else 0)
        sink.run.summary.update({k: v for k, v in summary.items() if v is not None})
        sink.finish(exit_code=0)
    if never_learned(summary):
        print(f"warning: {never_learned(summary)}; the run is ok but did not learn")
    print(f"run ok: {run.dir}  test accuracy {summary.get('test/accuracy', float('nan')):.4f}")
    return summary


def evaluated_test_labels(cfg: TrainConfig, data: DataBundle) -> Tensor:
    """The labels of the test images the run's test accuracy is measured on (the first
    ``trainer.limit_eval_batches`` batches when set: the evaluation loader keeps order)."""
    limit = cfg.trainer.limit_eval_batches
    return data.test.y if limit is None else data.test.y[:limit * cfg.trainer.eval_batch_size]


def outcome(error: BaseException, run: RunDir) -> tuple[str, str]:
    """(state, reason) for status.json when the run stops on ``error``."""
    if isinstance(error, Interrupted):
        epoch = run.epoch or 0
        return "interrupted", (f"interrupted by {error} after epoch {epoch}, the last complete "
                               "epoch, which is kept; rerun the same command to resume")
    # submitit requeues a timed-out or preempted job by raising SystemExit: that run is
    # not failed, it resumes from last.pt when the job starts again
    if isinstance(error, SystemExit):
        return "interrupted", f"SystemExit: {error} (requeued: resumes from last.pt)"
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return "failed", (f"{write_problem(error, run.dir)}; free space and rerun the same "
                          "command to resume from the last complete epoch")
    return "failed", f"{type(error).__name__}: {error}"
