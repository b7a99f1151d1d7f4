"""One evaluation with the default metric suite (no DeepFool) ÷ a bare forward pass over the same
images in the same run (target ≤ 1.10: the metrics themselves nearly free; a forward pass over
train + test is the floor of exact full-split metrics), and ÷ one training epoch: resnet18 on
Fashion-MNIST-shaped data (1x28x28).

Run: ``python benchmarks/metrics_overhead.py [--train-size 6000 --test-size 1000 --width 8]``
(CPU: ≈ 1.5 min).

Full Fashion-MNIST (60000/10000) with resnet18 takes minutes per epoch on 2 CPU cores, so the
default is synthetic 1x28x28 data at 1/10 of its size with the same 6:1 train/test ratio and a
narrow width: every cost here (train steps, the eval feature passes over train + test, the
per-sample metric work) grows linearly with the sample count, so the ratio carries over; only
fixed per-call costs (GMM set-up, hooks) weigh a little more at the smaller size.

Rows, all on the same model after one warm-up epoch (that epoch also trains the model, so the
features are not those of an untrained net):
- train epoch: ``loop.train_epoch`` (TensorLoader, classifier_loss, bin_enc head);
- weight metrics: the ``hyperplanes`` / ``alpha`` families (data-free; default: every epoch);
- eval: the due metric families (``families.measure``) with metrics=default and perturbation
  off — collapse, binarity, same-encoding on train and test (what runs every
  ``metrics.every`` = 50 epochs);
- of which feature passes: ``collect_features`` over every eval split (train, test), the
  model part of an evaluation; the rest is metric arithmetic on the CPU;
- eval, last epoch: the same with ``last=True`` (adds the Mahalanobis AUROC; DeepFool off).
Epoch and evaluations alternate; each value is the median of ``--repeats`` (min–max shown).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import bare_forward, evaluate, print_ratios, timed, weight_metrics
from _common import start as start_benchmark

from latentgeo import loop
from latentgeo.build import build_loaders
from latentgeo.config import compose
from latentgeo.data import load_dataset
from latentgeo.metrics.features import collect_features
from latentgeo.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--width", type=int, default=8, help="resnet18 base width (8)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed repeats (2; fewer when one takes over budget/2)")
    parser.add_argument("--budget", type=float, default=100.0,
                        help="seconds for warm-up + repeats (100)")
    args, device = start_benchmark(parser)
    overrides = [
        "model=resnet18", f"model.width={args.width}", "head=bin_enc", "metrics=default",
        "metrics.perturbation.when=off", "dataset=synthetic", "dataset.image_size=28",
        "dataset.channels=1", f"dataset.train_size={args.train_size}",
        f"dataset.test_size={args.test_size}", "trainer.batch_size=128",
        "trainer.eval_batch_size=1000", "logger=local", "trainer.progress=false",
    ]
    cfg = compose(overrides)
    data = load_dataset(cfg.dataset)
    torch.manual_seed(0)
    model = build_model(cfg, data.input_shape, data.num_classes).to(device)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = loop.build_optimizer(cfg.optimizer, model)
    loaders = build_loaders(cfg, data, device)
    loss_fn = loop.classifier_loss(cfg.head.gamma_start)

    def train(epoch: int) -> None:
        loop.train_epoch(model, loaders.train, optimizer, epoch, loss_fn)

    subset_cfg = compose([*overrides, "metrics.train_subset=100"])
    subset_loaders = build_loaders(subset_cfg, data, device)
    rows = {
        "train epoch": lambda epoch: train(epoch),
        "bare forward (train + test)": lambda epoch: bare_forward(model, loaders),
        "weight metrics (every epoch)": lambda epoch: weight_metrics(cfg, model, data, loaders,
                                                                     init_state),
        f"eval (every {cfg.metrics.every} epochs)":
            lambda epoch: evaluate(cfg, model, data, loaders, cfg.metrics.every, last=False),
        "  of which: feature passes": lambda epoch: [
            collect_features(model, loader.epoch(0)) for loader in loaders.eval.values()],
        "eval, last epoch (no DeepFool)":
            lambda epoch: evaluate(cfg, model, data, loaders, cfg.metrics.every, last=True),
        "eval, metrics.train_subset=100": lambda epoch: evaluate(
            subset_cfg, model, data, subset_loaders, cfg.metrics.every, last=False),
    }
    start = time.perf_counter()
    timed(lambda: train(1), device)  # warm-up; also trains the model a little
    for fn in list(rows.values())[1:]:
        timed(lambda fn=fn: fn(1), device)  # warm-up: sklearn imports, first GMM fits
    per_repeat = time.perf_counter() - start
    repeats = max(1, min(args.repeats, int(args.budget / per_repeat) - 1))  # a busy machine
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    for repeat in range(repeats):
        for name, fn in rows.items():
            seconds[name].append(timed(lambda fn=fn, e=repeat + 2: fn(e), device))

    epoch_s = statistics.median(seconds["train epoch"])
    print(f"resnet18 width {args.width}, bin_enc head, synthetic 1x28x28: "
          f"{args.train_size} train / {args.test_size} test (Fashion-MNIST: 60000 / 10000), "
          f"batch 128, eval batch 1000; median of {repeats} (min–max)")
    print_ratios(seconds, epoch_s, "÷ epoch", 34, digits=2, ratio_width=10, ratio_digits=3)
    eval_name = f"eval (every {cfg.metrics.every} epochs)"
    ratio = statistics.median(seconds[eval_name]) / epoch_s
    last = statistics.median(seconds["eval, last epoch (no DeepFool)"]) / epoch_s
    weights = statistics.median(seconds["weight metrics (every epoch)"]) / epoch_s
    bare = statistics.median(seconds["bare forward (train + test)"])
    subset = statistics.median(seconds["eval, metrics.train_subset=100"])
    print(f"ratio eval/bare forward: {statistics.median(seconds[eval_name]) / bare:.3f} "
          f"(target <= 1.10)  with metrics.train_subset=100: {subset / bare:.3f}  "
          f"eval/epoch: {ratio:.3f}  last-epoch eval/epoch: {last:.3f}  weight-metrics/epoch: "
          f"{weights:.3f}  amortised over metrics.every={cfg.metrics.every}: "
          f"{ratio / cfg.metrics.every + weights:.4f}")


if __name__ == "__main__":
    main()
