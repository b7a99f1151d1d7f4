"""Record (or compare) the golden metrics of fixed tiny deterministic runs.

    python tests/golden/record.py            # (re)write tests/golden/metrics.json
    python tests/golden/record.py --check    # compare a fresh recording with it, exactly

Each run exercises metric families (collapse, binarity, same-encoding, Mahalanobis, DeepFool,
OOD, NC1, hyperplanes, init distance, DIB, re-init, ReLU_α statistics), both heads' γ paths,
every schedule, three optimizers and the LR range test. ``time/`` keys are dropped: they are the
only values that may differ between two recordings.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and "latentgeo" not in sys.modules:
    try:
        import latentgeo  # noqa: F401  (installed)
    except ImportError:
        sys.path.insert(0, str(HERE.parents[1]))

BASE = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64",
        "trainer.batch_size=32", "trainer.eval_batch_size=128", "metrics.every=1",
        "logger=local", "trainer.progress=false", "trainer.deterministic=true",
        "trainer.num_threads=1"]

RUNS = {
    # BE's suite + NC1 + OOD + DIB + re-init + val split on a narrow ResNet18
    "bin_enc_all": BASE + [
        "model=resnet18", "model.width=4", "head=bin_enc", "dataset.channels=1",
        "dataset.image_size=16", "dataset.val_split=0.25", "trainer.epochs=2",
        "optimizer=adamw", "optimizer.lr=2e-3", "schedule=step", "schedule.start_epoch=0",
        "schedule.step_size=1", "head.gamma_factor=2.0", "metrics=all", "metrics.every=1",
        "metrics.ood.dataset=digits", "metrics.perturbation.samples=8",
        "metrics.dib.when=every:2", "metrics.dib.epochs=1", "metrics.dib.minimality_epochs=1",
        "metrics.dib.blocks=[stem,layer4]",
        "metrics.reinit.when=last", "trainer.snapshot_epochs=[1]",
        # metrics=all as recorded: the geometry families (issue 24) came later
        "metrics.neural_collapse.when=off", "metrics.effective_rank.when=off",
        "metrics.intrinsic_dimension.when=off"],
    # ReLU_α per channel with the L1 penalty and oscillation freezing; lin_pen; cosine; SGD
    "relu_alpha_penalty": BASE + [
        "model=cnn3", "model.width=4", "model.activation=relu_alpha", "head=lin_pen",
        "dataset.image_size=8", "trainer.epochs=3", "optimizer=sgd", "optimizer.lr=5e-2",
        "schedule=cosine", "schedule.min_lr=1e-3", "activation.granularity=channel",
        "activation.mode=penalty", "activation.l1=1e-2", "activation.init_alpha=0.7",
        "activation.freeze_oscillating=true", "activation.oscillation_k=1",
        "activation.oscillation_window=2", "metrics=default"],
    # ReLU_α annealed per layer; no_pen MLP; Adam with optimizer.lr=auto (LR range test)
    "relu_alpha_anneal_lr_auto": BASE + [
        "model=mlp", "model.widths=[32,16]", "model.activation=relu_alpha", "head=no_pen",
        "dataset.image_size=8", "trainer.epochs=2", "optimizer=adam", "optimizer.lr=auto",
        "optimizer.lr_find.steps=16", "schedule=constant", "activation.mode=anneal",
        "metrics=binenc", "metrics.every=1", "metrics.perturbation.samples=8"],
    # nonlin_pen, hyperplanes with linear layers, augmentation
    "nonlin_pen_augment": BASE + [
        "model=lenet", "head=nonlin_pen", "dataset.image_size=32", "dataset.channels=1",
        "dataset.augment=true", "trainer.epochs=3", "optimizer=adamw", "optimizer.lr=1e-3",
        "schedule=constant", "metrics=default", "metrics.hyperplanes.with_linear=true",
        "metrics.hyperplanes.normalize=false"],
}


def record() -> dict[str, list[dict]]:
    from hydra import compose, initialize_config_module

    import latentgeo.train as entry

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in RUNS.items():
            with initialize_config_module("latentgeo.conf", version_base=None):
                cfg = compose("train", overrides=overrides)
            run_dir = Path(tmp) / name
            entry.train(cfg, run_dir)
            events = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
            out[name] = [{k: v for k, v in e.items() if not k.startswith("time/")}
                         for e in events]
    return out


def by_epoch(runs: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """Per run, the values of each epoch merged (the refactor may regroup an epoch's events)."""
    merged: dict[str, dict[str, dict]] = {}
    for name, events in runs.items():
        if isinstance(events, dict):  # already merged
            merged[name] = events
            continue
        for event in events:
            merged.setdefault(name, {}).setdefault(str(event["epoch"]), {}).update(
                {k: v for k, v in event.items() if k != "step" or "step" not in
                 merged[name].get(str(event["epoch"]), {})})
    return merged


def differences(expected, actual, path="") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = [f"{path}: keys only in golden {sorted(set(expected) - set(actual))[:5]}, "
                 f"only now {sorted(set(actual) - set(expected))[:5]}"] \
            if set(expected) != set(actual) else []
        for key in sorted(set(expected) & set(actual)):
            found += differences(expected[key], actual[key], f"{path}/{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items in golden, {len(actual)} now"]
        return [d for i, (e, a) in enumerate(zip(expected, actual))
                for d in differences(e, a, f"{path}[{i}]")]
    same = expected == actual or (isinstance(expected, float) and isinstance(actual, float)
                                  and math.isnan(expected) and math.isnan(actual))
    return [] if same else [f"{path}: golden {expected!r}, now {actual!r}"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recorded = by_epoch(record())
    path = HERE / "metrics.json"
    if args.check:
        diffs = differences(by_epoch(json.loads(path.read_text())), recorded)
        print("\n".join(diffs[:40]) or "identical")
        return 1 if diffs else 0
    path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: " + ", ".join(f"{k} {len(v)} epochs" for k, v in recorded.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
