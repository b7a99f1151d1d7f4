"""Training throughput with each trainer switch on (alone) vs all off, on the current device:
``trainer.channels_last``, ``trainer.precision=bf16`` (autocast), ``trainer.compile=default``.

Run: ``python benchmarks/switches.py [--width 8] [--rounds 3] [--no-compile]``
(CPU: ≈ 1.5 min, most of it compiling once).

A narrow resnet18 (bin_enc head) on CIFAR-shaped synthetic data, batch 128, AdamW, trained by
``loop.train_epoch`` over a ``TensorLoader`` — the path ``fit`` takes. Every variant starts
from the same initial weights. channels_last = model and batches in NHWC; bf16 = the engine's
``autocast_dtype``; compile = ``torch.compile(model)`` (mode default), whose compile time
(first step minus a steady step) is reported on its own line and kept out of the throughput.
Each variant's epoch is sized to take about ``--seconds`` (bf16 is 6–65× slower on CPUs
without native bf16); variants are timed round-robin for ``--rounds`` rounds so drift of this
shared VM hits them alike; images/s = median over rounds (min–max).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _common import start as start_benchmark

from latentgeo.config import compose
from latentgeo.data import Split, TensorLoader, load_synthetic
from latentgeo.loop import build_optimizer, classifier_loss, train_epoch
from latentgeo.models import build_model

BATCH = 128
GAMMA = 0.01




class Variant:
    """One model copy + optimizer + loss closure with a set of switches."""

    def __init__(self, name: str, cfg, base: torch.nn.Module, channels_last: bool = False,
                 bf16: bool = False, compile_mode: str | None = None) -> None:
        self.name = name
        self.model = copy.deepcopy(base)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        self.train_model = (torch.compile(self.model, mode=compile_mode) if compile_mode
                            else self.model)
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        loss_fn = classifier_loss(GAMMA)
        self.loss_fn = lambda m, x, y: loss_fn(m, x.contiguous(memory_format=self.memory_format),
                                               y)
        self.loader: TensorLoader | None = None
        self.seconds: list[float] = []

    def epoch(self, loader: TensorLoader, epoch: int) -> float:
        device = loader.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        train_epoch(self.train_model, loader, self.optimizer, epoch, self.loss_fn,
                    autocast_dtype=self.autocast_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8, help="resnet18 base width (8)")
    parser.add_argument("--seconds", type=float, default=2.5,
                        help="target seconds per timed epoch and variant (2.5)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args, device = start_benchmark(parser)

    cfg = compose(["model=resnet18", f"model.width={args.width}", "head=bin_enc",
                       "dataset=synthetic"])
    data = load_synthetic(32, 3, 10, 64 * BATCH, 10, seed=0)
    torch.manual_seed(0)
    base = build_model(cfg, data.input_shape, data.num_classes).to(device)
    variants = [
        Variant("fp32 (all off)", cfg, base),
        Variant("channels_last", cfg, base, channels_last=True),
        Variant("bf16 autocast", cfg, base, bf16=True),
    ]
    if not args.no_compile:
        variants.append(Variant("torch.compile", cfg, base, compile_mode="default"))

    def loader(steps: int) -> TensorLoader:
        split = Split(data.train.x[:steps * BATCH], data.train.y[:steps * BATCH])
        return TensorLoader(split, data.mean, data.std, BATCH, device, shuffle=True)

    one_step = loader(1)
    first_s: dict[str, float] = {}
    for v in variants:  # first step: warm-up, and compiling for torch.compile
        first_s[v.name] = v.epoch(one_step, 0)
    for v in variants:  # a steady step sizes each variant's epoch (all the same batch shape)
        step_s = min(v.epoch(one_step, 0) for _ in range(2))
        v.loader = loader(max(1, min(64, round(args.seconds / step_s))))
    for round_ in range(args.rounds):
        for v in variants:
            v.seconds.append(v.epoch(v.loader, round_ + 1))

    print(f"resnet18 width {args.width}, bin_enc head, 3x32x32, batch {BATCH}, AdamW, "
          f"train_epoch; median of {args.rounds} rounds (min–max)")
    print(f"{'variant':<18}{'steps':>6}{'images/s':>10}{'min–max':>18}{'× fp32':>8}")
    rate = {}
    for v in variants:
        images = v.loader.num_samples
        rate[v.name] = images / statistics.median(v.seconds)
        print(f"{v.name:<18}{len(v.loader):>6}{rate[v.name]:>10,.1f}"
              f"{images / max(v.seconds):>9,.1f}–{images / min(v.seconds):<8,.1f}"
              f"{rate[v.name] / rate['fp32 (all off)']:>8.2f}")
    compile_note = ""
    if not args.no_compile:
        steady = statistics.median(variants[-1].seconds) / len(variants[-1].loader)
        first = first_s["torch.compile"]
        compile_s = first - steady
        print(f"torch.compile: compile time {compile_s:.1f} s (first step {first:.1f} s - "
              f"steady step {steady:.3f} s), excluded from images/s")
        compile_note = (f"  compile {rate['torch.compile'] / rate['fp32 (all off)']:.2f}"
                        f" (+{compile_s:.0f} s once)")
    fp32 = rate["fp32 (all off)"]
    print(f"ratio images/s vs fp32: channels_last {rate['channels_last'] / fp32:.2f}  "
          f"bf16 {rate['bf16 autocast'] / fp32:.2f}{compile_note}")


if __name__ == "__main__":
    main()
