"""Data alone (no model): device-resident ``TensorLoader`` vs the torchvision DataLoader path
``TorchLoader`` (per-sample v2 transforms, num_workers 0 and 2). Target: ≥ 5× images/s.

Run: ``python benchmarks/data_pipeline.py [--images 6400] [--rounds 4]`` (CPU: ≈ 1 min).

CIFAR-shaped synthetic uint8 images (3x32x32), batch 128, shuffled, with the same
augmentation on both sides (normalise, flip 1/2, random crop with padding 4). One epoch =
iterate every batch (on CUDA: until the last batch is on the device). The loaders are timed in
rounds (tensor, torch w=0, torch w=2, then the next round ...) so that drift of this shared VM
hits all of them alike; images/s is the median over rounds, with min–max. TorchLoader's epoch
time includes starting its worker processes (a new DataLoader per epoch, as it is used).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import start as start_benchmark

from latentgeo.data import TensorLoader, load_synthetic
from latentgeo.data.torch_loader import TorchLoader

BATCH = 128




def epoch_seconds(loader, epoch: int, device: torch.device) -> float:
    tic = time.perf_counter()
    count = 0
    for x, _ in loader.epoch(epoch):
        count += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    assert count == loader.num_samples
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6400, help="images per epoch (6400)")
    parser.add_argument("--rounds", type=int, default=4, help="timed epochs per loader (4)")
    args, device = start_benchmark(parser)
    data = load_synthetic(32, 3, 10, args.images, 10, seed=0)
    common = dict(mean=data.mean, std=data.std, batch_size=BATCH, device=device, shuffle=True,
                  augment=True, seed=0)
    loaders = {
        "TensorLoader (device-resident)": TensorLoader(data.train, **common),
        "TorchLoader num_workers=0": TorchLoader(data.train, **common, num_workers=0),
        "TorchLoader num_workers=2": TorchLoader(data.train, **common, num_workers=2),
    }
    for loader in loaders.values():  # warm-up: allocator, first fork, transform caches
        epoch_seconds(loader, 0, device)
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for round_ in range(args.rounds):
        for name, loader in loaders.items():
            times[name].append(epoch_seconds(loader, round_ + 1, device))

    print(f"{args.images} images 3x32x32 per epoch, batch {BATCH}, shuffle + flip + crop(pad 4); "
          f"{args.rounds} rounds")
    print(f"{'loader':<32}{'images/s':>12}{'min–max':>22}{'ms/batch':>10}")
    rate = {}
    for name, seconds in times.items():
        rate[name] = args.images / statistics.median(seconds)
        low, high = args.images / max(seconds), args.images / min(seconds)
        batches = len(loaders[name])
        print(f"{name:<32}{rate[name]:>12,.0f}{low:>11,.0f}–{high:<10,.0f}"
              f"{1e3 * statistics.median(seconds) / batches:>10.2f}")
    device_rate = rate["TensorLoader (device-resident)"]
    print(f"ratio device-resident/torch images/s: "
          f"num_workers=0 {device_rate / rate['TorchLoader num_workers=0']:.1f}x  "
          f"num_workers=2 {device_rate / rate['TorchLoader num_workers=2']:.1f}x  "
          "(target >= 5x)")


if __name__ == "__main__":
    main()
