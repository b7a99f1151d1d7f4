"""The fit loop: LR and γ for the epoch -> one training epoch -> the metric families that are
due -> one event to the record and the sink -> checkpoint.

Reads top to bottom: ``fit`` builds the optimizer and the switches, restores ``last.pt`` (or
writes ``init.pt`` and measures the initial weights), then loops over epochs. Which metrics run
when is the families registry's business (``latentgeo.families``), never the loop's.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from latentgeo import families
from latentgeo.config import TrainConfig
from latentgeo.data import DataBundle, Loaders
from latentgeo.loop import (
    ReluAlphaHooks,
    apply_switches,
    build_optimizer,
    classifier_loss,
    head_gamma,
    lr_factor,
    set_learning_rate,
    train_epoch,
)
from latentgeo.models import Classifier
from latentgeo.models.relu_alpha import relu_alpha_modules
from latentgeo.records import RunDamaged, RunDir
from latentgeo.runtime import (
    load_checkpoint,
    pause_point,
    pausing,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Sink(Protocol):
    """Where events go besides the run record (``tracking.WandbSink``)."""

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_histograms(self, arrays: dict[str, np.ndarray], step: int) -> None: ...


def fit(cfg: TrainConfig, run: RunDir, model: Classifier, data: DataBundle, loaders: Loaders,
        device: torch.device, sink: Sink | None = None) -> list[dict[str, Any]]:
    """Train ``model`` for ``trainer.epochs`` epochs, resuming from ``last.pt`` if present.
    Returns the run's events as recorded; every checkpoint carries them too, so events lost
    from metrics.jsonl are restored on resume (``reconcile_events``)."""
    trainer = cfg.trainer
    optimizer = build_optimizer(cfg.optimizer, model)
    alphas = ReluAlphaHooks(cfg.activation, model) if relu_alpha_modules(model) else None
    train_model, compile_s = apply_switches(trainer, model, loaders)
    autocast = torch.bfloat16 if trainer.precision == "bf16" else None
    steps_per_epoch = len(loaders.train)

    def point(epoch: int, event: dict[str, Any]) -> families.Point:
        return families.Point(cfg, model, epoch, epoch == trainer.epochs, data, loaders,
                              init_state=init_state, run=run, event=event)

    if run.last_checkpoint.is_file():
        start_epoch, carried = restore(run, device, model, optimizer, alphas)
        events = reconcile_events(run, start_epoch, carried)
        init_state = load_checkpoint(run.checkpoint("init"), device)["model"]
    else:
        start_epoch = 0
        events = run.events()  # what train logged first (the LR range test's suggestion)
        init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_checkpoint(run.checkpoint("init"), {"epoch": 0, "model": init_state})
        record(run, sink, point(0, {"epoch": 0, "step": 0}), cfg, events)  # initial weights
        pause_point("epoch0.event")
    # a live bar only on a terminal: a Slurm log would fill with its \r frames
    bar = tqdm(total=trainer.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               disable=not (trainer.progress and sys.stderr.isatty()), unit="step",
               dynamic_ncols=True, leave=False)
    try:
        for epoch in range(start_epoch + 1, trainer.epochs + 1):
            tic = time.perf_counter()
            lr = set_learning_rate(optimizer, cfg.optimizer.lr,
                                   lr_factor(epoch, cfg.schedule, trainer.epochs), cfg.schedule)
            gamma = head_gamma(cfg.head, epoch)
            event: dict[str, Any] = {"epoch": epoch, "step": epoch * steps_per_epoch, "lr": lr}
            if gamma is not None:
                event["gamma"] = gamma
            loss_fn = classifier_loss(gamma, alphas.penalty if alphas else None,
                                      cfg.head.penalty)
            with profiling(run, trainer.profile_steps if epoch == start_epoch + 1 else 0,
                           pausing_steps(alphas.after_step if alphas else None,
                                         (epoch - 1) * steps_per_epoch)) as after_step:
                event.update(train_epoch(train_model, loaders.train, optimizer, epoch, loss_fn,
                                         bar, after_step=after_step, autocast_dtype=autocast))
            event["time/epoch_s"] = time.perf_counter() - tic
            if compile_s is not None and epoch == start_epoch + 1:
                event["time/compile_s"] = compile_s  # excluded from time/epoch_s
            if alphas is not None:
                event.update(alphas.epoch_end(epoch))
            record(run, sink, point(epoch, event), cfg, events)
            pause_point(f"epoch{epoch}.event")
            checkpoint(run, epoch, model, optimizer, alphas, trainer.snapshot_epochs, events)
            line = progress_line(event, trainer.epochs)
            bar.write(line)  # the console, above the bar
            run.append_log(line)  # the run's train.log: the same line
            pause_point(f"epoch{epoch}.checkpoint")
    finally:
        bar.close()
    return events


def pausing_steps(after_step: Callable[[], None] | None, steps_before: int
                  ) -> Callable[[], None] | None:
    """``after_step``, plus the pause points ``step<N>`` (global step N) when a test holds the
    run (``runtime.pause_point``); unchanged otherwise."""
    if not pausing():
        return after_step
    steps = itertools.count(steps_before + 1)

    def step() -> None:
        if after_step is not None:
            after_step()
        pause_point(f"step{next(steps)}")

    return step


@contextlib.contextmanager
def profiling(run: RunDir, steps: int, after_step: Callable[[], None] | None
              ) -> Iterator[Callable[[], None] | None]:
    """``trainer.profile_steps``: the torch profiler over the first ``steps`` optimizer steps,
    its trace written to ``profile/trace.json`` (open in Perfetto or chrome://tracing).
    Yields the after-step hook to use (the run's own, plus the profiler's step)."""
    if not steps:
        yield after_step
        return
    path = run.artifact("profile") / "trace.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    schedule = torch.profiler.schedule(wait=0, warmup=0, active=steps, repeat=1)
    with torch.profiler.profile(schedule=schedule, record_shapes=True,
                                on_trace_ready=lambda p: p.export_chrome_trace(str(path))
                                ) as profiler:
        def step() -> None:
            if after_step is not None:
                after_step()
            profiler.step()

        yield step


def record(run: RunDir, sink: Sink | None, point: families.Point, cfg: TrainConfig,
           events: list[dict[str, Any]]) -> None:
    """Measure the families due at ``point``, then one event to metrics.jsonl, ``events``
    and the sink."""
    families.measure(point, families.due(cfg, point.epoch, point.last))
    if point.epoch == 0 and set(point.event) <= {"epoch", "step"}:
        return  # nothing is measured on the initial weights
    events.append(run.log(point.event))
    if sink is not None:
        if point.histograms and cfg.logger.histograms:
            sink.log_histograms(point.histograms, step=point.event["step"])
        sink.log(point.event, step=point.event["step"])


def checkpoint(run: RunDir, epoch: int, model: Classifier, optimizer: torch.optim.Optimizer,
               alphas: ReluAlphaHooks | None, snapshot_epochs: list[int],
               events: list[dict[str, Any]]) -> None:
    """``last.pt`` (everything a resume needs, the events so far included), an
    ``epoch_XXXX.pt`` snapshot when asked, and the epoch in status.json."""
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": rng_state(), "events": events}
    if alphas is not None and alphas.tracker is not None:
        state["oscillation"] = alphas.tracker.state_dict()
    if epoch in snapshot_epochs:
        save_checkpoint(run.checkpoint(f"epoch_{epoch:04d}"), {"epoch": epoch,
                                                               "model": state["model"]})
    save_checkpoint(run.last_checkpoint, state)
    run.set_epoch(epoch)


def restore(run: RunDir, device: torch.device, model: Classifier,
            optimizer: torch.optim.Optimizer, alphas: ReluAlphaHooks | None
            ) -> tuple[int, list[dict[str, Any]] | None]:
    """Load ``last.pt`` into the model, optimizer, RNGs and ReLU_α tracker; returns its epoch
    and the events it carries (None for a checkpoint written before they were carried)."""
    state = load_checkpoint(run.last_checkpoint, device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    if alphas is not None and alphas.tracker is not None:
        alphas.tracker.load_state_dict(state["oscillation"])
    return int(state["epoch"]), state.get("events")


def event_problem(recorded: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str | None:
    """How metrics.jsonl's events differ from those the run carries, or None when equal."""
    if recorded == expected:
        return None
    have = [e.get("epoch") for e in recorded]
    want = [e.get("epoch") for e in expected]
    missing = sorted(set(want) - set(have))
    twice = sorted({epoch for epoch in have if have.count(epoch) > want.count(epoch)})
    if missing:
        return f"lacked epochs {missing}"
    if twice:
        return f"held epochs {twice} more than once"
    return "differed from the events the run carries"


def reconcile_events(run: RunDir, epoch: int, carried: list[dict[str, Any]] | None
                     ) -> list[dict[str, Any]]:
    """metrics.jsonl against the checkpoint it resumes from: the events ``last.pt`` carries
    win (a lost or duplicated line is rewritten, and status.json says so). An older
    checkpoint without events must at least find epochs 1..epoch once each."""
    recorded = run.events()
    if carried is None:
        epochs = [e.get("epoch") for e in recorded if e.get("epoch")]
        if epochs != list(range(1, epoch + 1)):
            raise RunDamaged(f"{run.artifact('metrics')} holds epochs {epochs}, but "
                             f"{run.last_checkpoint} is at epoch {epoch} and carries no events "
                             "to restore them from; rerun with trainer.resume=false to archive "
                             "this record and start afresh")
        return recorded
    problem = event_problem(recorded, carried)
    if problem is not None:
        run.rewrite_events(carried)
        run.note("repaired", f"metrics.jsonl {problem}; restored from {run.last_checkpoint}")
    return list(carried)


def progress_line(event: dict[str, Any], epochs: int) -> str:
    """One line per epoch: training loss and accuracy, evaluation accuracies when measured,
    lr, γ and the epoch's time."""
    parts = [f"epoch {event['epoch']}/{epochs}",
             f"loss {event['train/running_loss']:.4f}",
             f"acc {event['train/running_accuracy']:.4f}"]
    for split in ("train", "val", "test"):
        if f"{split}/accuracy" in event:
            parts.append(f"{split} acc {event[f'{split}/accuracy']:.4f}")
    parts.append(f"lr {event['lr']:.3g}")
    if "gamma" in event:
        parts.append(f"gamma {event['gamma']:.4g}")
    parts.append(f"{event['time/epoch_s']:.1f} s")
    return "  ".join(parts)
