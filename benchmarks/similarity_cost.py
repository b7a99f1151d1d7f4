"""One evaluation of the ``cka`` and ``weight_spectra`` families ÷ a bare forward pass over the
same splits in the same run, on cnn3 and resnet18 (width 16): what scheduling them costs.

Run: ``python benchmarks/similarity_cost.py [--images 1000 --repeats 3]`` (CPU, 1 thread:
≈ 2 min).

Synthetic 3x32x32 data, ``--images`` train and as many test images (both splits evaluated).
Rows, on the same freshly initialised model with its init state as init.pt would hold it:
- bare forward: the model in eval mode over train + test (the floor of any data metric);
- cka: the family with its defaults (full-batch, ``metrics.cka.samples`` = 1000 per split,
  block × block and every block to init: two hooked passes per split plus the Grams);
- cka minibatch: the same with ``metrics.cka.batch_size=250`` (Nguyen et al.'s estimator);
- weight_spectra: data-free, every Linear/Conv2d (SVDs and the power-law fits).
Each value is the median of ``--repeats`` after one warm-up.
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

MODELS = {"cnn3": ["model=cnn3"], "resnet18 w16": ["model=resnet18", "model.width=16"]}


def measure(label: str, model_overrides: list[str], images: int, repeats: int,
            device: torch.device) -> None:
    """Time the rows of the module docstring on one model and print them."""
    overrides = [*model_overrides, "dataset=synthetic", "dataset.image_size=32",
                 "dataset.channels=3", f"dataset.train_size={images}",
                 f"dataset.test_size={images}", "trainer.eval_batch_size=500",
                 "logger=local", "trainer.progress=false", "head=lin_pen",
                 "head.penultimate_nodes=16"]
    cfg = compose_cfg(overrides)
    data = load_dataset(cfg.dataset)
    torch.manual_seed(0)
    model = build_model(cfg, data.input_shape, data.num_classes).to(device)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loaders = build_loaders(cfg, data, device)

    def family(name: str, *extra: str):
        typed = to_typed(compose_cfg([*overrides, *extra]))
        point = families.Point(typed, model, 1, False, data, loaders, init_state=init_state)
        return lambda: families.FAMILIES[name].compute(point)

    rows = {"bare forward (train + test)": lambda: bare_forward(model, loaders),
            "cka (full batch)": family("cka"),
            "cka minibatch (batch 250)": family("cka", "metrics.cka.batch_size=250"),
            "weight_spectra": family("weight_spectra")}
    seconds = {name: repeated(fn, device, repeats) for name, fn in rows.items()}
    bare = statistics.median(seconds["bare forward (train + test)"])
    print(f"\n{label}: {sum(p.numel() for p in model.parameters())} parameters")
    print_ratios(seconds, bare, "ratio", 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args, device = start_benchmark(parser)
    print(f"synthetic 3x32x32, {args.images} train + {args.images} test images, "
          f"eval batch 500; median of {args.repeats} (min–max); ratio = ÷ bare forward")
    for label, model_overrides in MODELS.items():
        measure(label, model_overrides, args.images, args.repeats, device)


if __name__ == "__main__":
    main()
