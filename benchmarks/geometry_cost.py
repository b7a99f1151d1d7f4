"""One evaluation of each geometry family (neural_collapse, effective_rank,
intrinsic_dimension) ÷ a bare forward pass over the same images, in the same run: cnn3 (width
64) and resnet18 width 16 on synthetic 3x32x32 data, train + test splits.

Run: ``python benchmarks/geometry_cost.py [--size 1000 --repeats 3]`` (CPU, 1 thread: ≈ 2 min).

Rows per model, each the median of ``--repeats`` (min–max shown):
- bare forward: the model over every eval split in eval mode, nothing kept;
- ``<family>``: the family's compute on a Point whose shared feature pass (logits, x_pen) is
  already done, as in a run where another family asked for it first — x_pen only (the
  default, ``blocks: null``) and ``blocks=all`` (every backbone block; NC streams two extra
  passes, the others one extra pass over their ``samples`` rows).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import bare_forward, print_ratios, repeated
from _common import start as start_benchmark

from latentgeo import families
from latentgeo.build import build_loaders
from latentgeo.config import compose as compose_cfg
from latentgeo.config import to_typed
from latentgeo.data import load_dataset
from latentgeo.models import build_model

FAMILIES = ("neural_collapse", "effective_rank", "intrinsic_dimension")
MODELS = {"cnn3": ["model=cnn3"], "resnet18_w16": ["model=resnet18", "model.width=16"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="images per split (1000)")
    parser.add_argument("--repeats", type=int, default=3)
    args, device = start_benchmark(parser)
    for model_name, model_overrides in MODELS.items():
        overrides = [*model_overrides, "dataset=synthetic", "dataset.image_size=32",
                     f"dataset.train_size={args.size}", f"dataset.test_size={args.size}",
                     "trainer.eval_batch_size=500", "logger=local", "metrics=none"]
        cfg = to_typed(compose_cfg(overrides))
        data = load_dataset(cfg.dataset)
        torch.manual_seed(0)
        model = build_model(cfg, data.input_shape, data.num_classes).to(device)
        loaders = build_loaders(cfg, data, device)

        rows = {"bare forward (train + test)": repeated(
            lambda model=model, loaders=loaders: bare_forward(model, loaders), device,
            args.repeats)}
        for name in FAMILIES:
            for blocks in (None, "all"):
                block_cfg = to_typed(compose_cfg(
                    [*overrides, f"metrics.{name}.blocks={'null' if blocks is None else blocks}"]))
                point = families.Point(block_cfg, model, 1, False, data, loaders)
                point.features  # noqa: B018  (the shared pass, done by the first family)
                rows[f"{name}, {'x_pen' if blocks is None else 'blocks=all'}"] = repeated(
                    lambda point=point, name=name: families.FAMILIES[name].compute(point),
                    device, args.repeats)
        bare = statistics.median(rows["bare forward (train + test)"])
        print(f"{model_name}: synthetic 3x32x32, {args.size} train + {args.size} test, "
              f"eval batch 500; median of {args.repeats} (min–max)")
        print_ratios(rows, bare, "÷ bare", 36)


if __name__ == "__main__":
    main()
