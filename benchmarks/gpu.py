"""GPU training throughput of BE's main run and its projected wall time: resnet18 (width 64),
CIFAR-10-shaped data (50000 uint8 images resident on the GPU), batch 512, flip + crop.
Target on an H100: ≥ 25k images/s with bf16 + channels_last (+ compile).

Run: ``python benchmarks/gpu.py [--epochs 3] [--no-compile]`` (H100: ≈ 3 min). Without a CUDA
device it prints "skipped: no CUDA" and exits 0 (so ``make bench`` works on CPU);
``--device cpu --images 1024 --width 8 --batch 128 --epochs 1 --no-compile`` is a smoke run
of the same code on a CPU.

Variants, each from the same initial weights, trained by ``loop.train_epoch`` over the
``build_loaders`` train loader (TensorLoader, augment on, as for cifar10):
- fp32: no switches (cuDNN's default TF32 convolutions);
- bf16 + channels_last: ``autocast_dtype=torch.bfloat16``, model and batches NHWC;
- bf16 + channels_last + compile: the same through ``torch.compile`` (mode default).
One warm-up epoch per variant (compiling, cuDNN/allocator warm-up; for compile also the
recompile for the last, partial batch), then ``--epochs`` timed epochs: images/s = median.
Compile time = warm-up epoch − a steady epoch, reported apart.

Projection of BE's run (800 epochs, evaluation every 50 epochs = 16 evaluations, hyperplane
statistics every epoch): 800 × epoch time of the fastest variant + 16 × one evaluation
(``families.measure``, metrics=default, DeepFool off, fp32 eager model as the engine
evaluates) + 800 × weight
metrics, scaled to 50000 images when ``--images`` differs; compared with BE's budget of
10 A100-hours (an H100 is roughly 2-3× an A100 for this work).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import torch
from _common import default_threads, evaluate, timed, weight_metrics

from latentgeo import loop
from latentgeo.build import build_loaders
from latentgeo.config import compose
from latentgeo.data import Split, load_dataset
from latentgeo.models import build_model

BE_EPOCHS = 800
BE_IMAGES = 50000
BE_BUDGET_H = 10.0  # A100-hours


def print_header(device: torch.device | None) -> None:
    if device is None:
        name = "no CUDA device"
    elif device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    print(f"# {Path(__file__).name}  device {device or 'none'} ({name})  "
          f"torch {torch.__version__}  threads {torch.get_num_threads()}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) | cuda:N | cpu")
    parser.add_argument("--images", type=int, default=BE_IMAGES)
    parser.add_argument("--width", type=int, default=64, help="resnet18 base width (64)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant (3)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="torch.backends.cudnn.benchmark = True (the engine leaves it off)")
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print_header(None)
        print("skipped: no CUDA")
        return
    device = torch.device(args.device)
    print_header(device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    cfg = compose([
        "model=resnet18", f"model.width={args.width}", "head=bin_enc", "metrics=default",
        "metrics.perturbation.when=off", "dataset=synthetic", "dataset.image_size=32",
        "dataset.channels=3", "dataset.augment=true", f"dataset.train_size={args.images}",
        f"dataset.test_size={args.images // 5}", f"trainer.batch_size={args.batch}",
        "trainer.eval_batch_size=1000", "logger=local", "trainer.progress=false",
    ])
    tic = time.perf_counter()
    data = load_dataset(cfg.dataset)
    for name in ("train", "test"):  # resident on the device once; the loaders share it
        split = getattr(data, name)
        setattr(data, name, Split(split.x.to(device), split.y.to(device)))
    loaders = build_loaders(cfg, data, device)
    print(f"data: {args.images} train + {args.images // 5} test uint8 3x32x32 on {device} "
          f"({time.perf_counter() - tic:.1f} s to make)")
    torch.manual_seed(0)
    base = build_model(cfg, data.input_shape, data.num_classes).to(device)
    init_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    loss_fn = loop.classifier_loss(cfg.head.gamma_start)
    variants = [("fp32", False, False)]
    variants.append(("bf16 + channels_last", True, False))
    if not args.no_compile:
        variants.append(("bf16 + channels_last + compile", True, True))

    rows = []
    for name, fast, compiled in variants:
        model = copy.deepcopy(base)
        memory_format = torch.channels_last if fast else torch.contiguous_format
        model.to(memory_format=memory_format)
        optimizer = loop.build_optimizer(cfg.optimizer, model)
        train_model = torch.compile(model) if compiled else model
        autocast_dtype = torch.bfloat16 if fast else None

        def closure(m, x, y, memory_format=memory_format):
            return loss_fn(m, x.contiguous(memory_format=memory_format), y)

        def epoch(e: int, train_model=train_model, optimizer=optimizer, closure=closure,
                  autocast_dtype=autocast_dtype) -> None:
            loop.train_epoch(train_model, loaders.train, optimizer, e, closure,
                               autocast_dtype=autocast_dtype)

        warm_up = timed(lambda epoch=epoch: epoch(0), device)
        seconds = [timed(lambda e=e, epoch=epoch: epoch(e), device)
                   for e in range(1, args.epochs + 1)]
        epoch_s = statistics.median(seconds)
        rows.append({"name": name, "rate": args.images / epoch_s, "epoch_s": epoch_s,
                     "low": args.images / max(seconds), "high": args.images / min(seconds),
                     "compile_s": warm_up - epoch_s if compiled else None, "model": model})
        print(f"  {name}: {args.images / epoch_s:,.0f} images/s "
              f"(warm-up epoch {warm_up:.1f} s)", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # one evaluation as the engine runs it: the eager model, fp32, NHWC weights when switched
    evaluated = rows[-1]["model"]
    every = cfg.metrics.every
    evaluate(cfg, evaluated, data, loaders, every, last=False)  # warm-up
    eval_s = timed(lambda: evaluate(cfg, evaluated, data, loaders, every, last=False), device)
    weights_s = timed(lambda: weight_metrics(cfg, evaluated, data, loaders, init_state), device)

    print(f"resnet18 width {args.width}, bin_enc head, batch {args.batch}, AdamW, flip + crop; "
          f"median of {args.epochs} epochs (min–max); cudnn.benchmark={args.cudnn_benchmark}")
    print(f"{'variant':<34}{'images/s':>10}{'min–max':>20}{'epoch s':>9}{'× fp32':>8}")
    for r in rows:
        print(f"{r['name']:<34}{r['rate']:>10,.0f}{r['low']:>10,.0f}–{r['high']:<9,.0f}"
              f"{r['epoch_s']:>9.2f}{r['rate'] / rows[0]['rate']:>8.2f}")
    for r in rows:
        if r["compile_s"] is not None:
            print(f"compile time ≈ {r['compile_s']:.0f} s (warm-up epoch − steady epoch), "
                  "excluded from images/s")
    best = max(rows, key=lambda r: r["rate"])
    scale = BE_IMAGES / args.images
    train_h = BE_EPOCHS * best["epoch_s"] * scale / 3600
    evals = BE_EPOCHS // cfg.metrics.every
    eval_h = evals * eval_s * scale / 3600
    weights_h = BE_EPOCHS * weights_s / 3600
    total_h = train_h + eval_h + weights_h
    print(f"one evaluation (metrics=default, no DeepFool, train + test): {eval_s:.1f} s; "
          f"weight metrics: {weights_s * 1e3:.0f} ms")
    print(f"projected BE run ({BE_EPOCHS} epochs × {BE_IMAGES} images, {best['name']}): "
          f"train {train_h:.2f} h + {evals} evaluations {eval_h:.2f} h + weight metrics "
          f"{weights_h:.2f} h = {total_h:.2f} h")
    print("ratio images/s vs fp32: "
          + "  ".join(f"{r['name']} {r['rate'] / rows[0]['rate']:.2f}" for r in rows[1:])
          + f"; best {best['rate']:,.0f} images/s (target >= 25000 on H100); projected "
          f"{total_h:.2f} h = {total_h / BE_BUDGET_H:.3f} × BE's {BE_BUDGET_H:.0f} A100-h")


if __name__ == "__main__":
    main()
