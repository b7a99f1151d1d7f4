"""latentgeo's train step vs a bare hand-written PyTorch loop: images/s ratio (target ≥ 0.97).

Run: ``python benchmarks/loop_overhead.py [--budget 25] [--threads N]`` (CPU: ≈ 1.5 min).

Same model (one init, two copies), same optimizer (``build_optimizer``: AdamW, two groups),
same loss (CE + γ·mean(x_pen²), bin_enc head, γ = 0.01), same samples, batch 128, shuffled:

- latentgeo: ``loop.train_epoch`` over a ``TensorLoader`` (uint8 on the device, normalised
  per batch) with ``classifier_loss`` and a progress bar (into /dev/null) — i.e. everything
  ``fit`` does per step;
- bare: the textbook loop over the already-normalised float tensor, indexed by a randperm.

So the ratio charges latentgeo for its loader (gather uint8 + normalise), the autocast
context (disabled), the loss closure, the on-device loss/accuracy sums, the progress bar and
its host sync every 20 steps. Epochs alternate A B B A … so that drift of this shared VM
cancels; the ratio is the median of the per-pair ratios, with its min–max over pairs;
"best/best" (the ratio of each side's fastest epoch, the least disturbed one) is a second
estimate for noisy machines.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from _common import start as start_benchmark
from torch import nn
from tqdm.auto import tqdm

from latentgeo.config import compose
from latentgeo.data import TensorLoader, load_synthetic
from latentgeo.data.tensor_loader import normalize
from latentgeo.loop import build_optimizer, classifier_loss, train_epoch
from latentgeo.models import build_model

BATCH = 128
GAMMA = 0.01
MIN_PAIRS, MAX_PAIRS = 4, 20
CASES = [  # name, config overrides, input shape
    ("cnn3", ["model=cnn3", "model.width=null"], (3, 32, 32)),
    ("resnet18_w16", ["model=resnet18", "model.width=16"], (3, 32, 32)),
    ("mlp", ["model=mlp", "model.width=null"], (1, 28, 28)),
]




def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    """The loop one would write by hand, on pre-normalised data."""
    model.train()
    order = torch.randperm(len(y), generator=generator, device=x.device)
    for start in range(0, len(y), BATCH):
        index = order[start:start + BATCH]
        logits, x_pen = model(x[index])
        loss = nn.functional.cross_entropy(logits, y[index]) + GAMMA * x_pen.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def measure(name: str, overrides: list[str], shape: tuple[int, int, int], budget_s: float,
            device: torch.device) -> dict:
    cfg = compose(["dataset=synthetic", "head=bin_enc", *overrides])
    torch.manual_seed(0)
    model_a = build_model(cfg, shape, 10).to(device)
    model_b = copy.deepcopy(model_a)
    opt_a, opt_b = build_optimizer(cfg.optimizer, model_a), build_optimizer(cfg.optimizer, model_b)
    loss_fn = classifier_loss(GAMMA)

    # calibrate on 3 steps, then size the epoch so that ~MAX_PAIRS pairs fit into the budget
    probe = load_synthetic(shape[1], shape[0], 10, 3 * BATCH, 10, seed=0)
    loader = TensorLoader(probe.train, probe.mean, probe.std, BATCH, device, shuffle=True)
    train_epoch(model_a, loader, opt_a, 0, loss_fn)  # warm-up (allocator, thread pool)
    tic = time.perf_counter()
    train_epoch(model_a, loader, opt_a, 0, loss_fn)
    step_s = (time.perf_counter() - tic) / 3
    steps = max(4, min(60, round(budget_s / (2 * MAX_PAIRS) / step_s)))

    data = load_synthetic(shape[1], shape[0], 10, steps * BATCH, 10, seed=0)
    loader = TensorLoader(data.train, data.mean, data.std, BATCH, device, shuffle=True)
    x = normalize(data.train.x.to(device), data.mean.to(device), data.std.to(device))
    y = data.train.y.to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    # fit's progress bar (trainer.progress=true), drawn into /dev/null: its per-step update and
    # the host sync every loop.REFRESH steps are part of latentgeo's step
    bar = tqdm(total=10**9, unit="step", dynamic_ncols=True, leave=False,
               file=open(os.devnull, "w"))  # closed at exit

    def run_latentgeo(epoch: int) -> float:
        sync(device)
        tic = time.perf_counter()
        train_epoch(model_a, loader, opt_a, epoch, loss_fn, bar)
        sync(device)
        return time.perf_counter() - tic

    def run_bare(epoch: int) -> float:
        sync(device)
        tic = time.perf_counter()
        bare_epoch(model_b, x, y, opt_b, generator)
        sync(device)
        return time.perf_counter() - tic

    run_latentgeo(0), run_bare(0)  # warm-up at the measured size
    times_a, times_b = [], []
    deadline = time.perf_counter() + budget_s
    pair = 0
    while pair < MIN_PAIRS or (pair < MAX_PAIRS and time.perf_counter() < deadline):
        if pair % 2 == 0:  # A B, then B A, ...
            times_a.append(run_latentgeo(pair + 1))
            times_b.append(run_bare(pair + 1))
        else:
            times_b.append(run_bare(pair + 1))
            times_a.append(run_latentgeo(pair + 1))
        pair += 1
    images = steps * BATCH
    ratios = [b / a for a, b in zip(times_a, times_b)]  # (images/a) / (images/b)
    return {
        "name": name, "shape": "x".join(map(str, shape)), "steps": steps, "pairs": pair,
        "params": sum(p.numel() for p in model_a.parameters()),
        "latentgeo": images / statistics.median(times_a),
        "bare": images / statistics.median(times_b),
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ratio_best": min(times_b) / min(times_a),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=25.0,
                        help="seconds of timed epochs per model (default 25)")
    args, device = start_benchmark(parser)
    print(f"batch {BATCH}, bin_enc head (γ={GAMMA}), AdamW; images/s = median over pairs; "
          "ratio = median (min–max) of per-pair latentgeo/bare; best/best = ratio of the "
          "fastest epochs")
    print(f"{'model':<14}{'input':>9}{'params':>10}{'steps':>7}{'pairs':>6}"
          f"{'latentgeo img/s':>17}{'bare img/s':>12}{'ratio':>8}{'min–max':>14}"
          f"{'best/best':>11}")
    results = []
    for name, overrides, shape in CASES:
        r = measure(name, overrides, shape, args.budget, device)
        results.append(r)
        print(f"{r['name']:<14}{r['shape']:>9}{r['params']:>10,}{r['steps']:>7}{r['pairs']:>6}"
              f"{r['latentgeo']:>17,.0f}{r['bare']:>12,.0f}{r['ratio']:>8.3f}"
              f"{r['ratio_min']:>7.3f}–{r['ratio_max']:.3f}{r['ratio_best']:>11.3f}", flush=True)
    print("ratio latentgeo/bare images/s: "
          + "  ".join(f"{r['name']} {r['ratio']:.3f}" for r in results) + "  (target >= 0.97)")


if __name__ == "__main__":
    main()
