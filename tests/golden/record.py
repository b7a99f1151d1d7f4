"""Record (or compare) the golden metrics of fixed tiny deterministic runs.

    python tests/golden/record.py            # (re)write tests/golden/metrics.json
    python tests/golden/record.py --check    # compare a fresh recording, within the tolerances
    python tests/golden/record.py --check --exact   # bit for bit (the recording machine only)
    python tests/golden/record.py --spread   # record under every kernel choice of this CPU,
                                             # measure the spread, rewrite tolerances.json

Another CPU picks other kernels (ATen's CPU capability, MKL's instruction set), and values
that went through float32 training move with them: by ~1e-7 on well-conditioned quantities,
by far more where training or a metric is discontinuous in its inputs (ties in max-pooling
under augmentation, GMM fits, pinv rank decisions, decoders trained on features). So the check
is per *kind* of value — (run, initial weights or trained, metric family) — against a
tolerance measured here: ``--spread`` records the runs under every kernel choice in
``KERNEL_CHOICES`` and sets each kind's tolerance to ``MARGIN`` times the largest deviation
seen from metrics.json (itself recorded on another, AVX2-only, CPU), never below ``FLOOR``.

Each run exercises metric families (collapse, binarity, same-encoding, Mahalanobis, DeepFool,
OOD, NC1, hyperplanes, init distance, DIB, re-init, ReLU_α statistics), both heads' γ paths,
every schedule, three optimizers and the LR range test. ``time/`` keys are dropped: they are the
only values that may differ between two recordings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TOLERANCES = HERE / "tolerances.json"
MARGIN = 10.0  # tolerance = MARGIN x the largest deviation measured across kernel choices
FLOOR = 1e-12  # kinds that never moved (lr, steps, counts) stay this close to exact
KERNEL_CHOICES = [  # what one x86 machine can imitate of another (the recording: 1 thread)
    {},
    {"ATEN_CPU_CAPABILITY": "default"},
    {"ATEN_CPU_CAPABILITY": "avx2"},
    {"ATEN_CPU_CAPABILITY": "avx512"},
    {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    {"MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
]
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
        # families added to metrics=all after this recording: its keys stay those recorded
        "metrics.cka.when=off", "metrics.weight_spectra.when=off",
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
    # nonlin_pen, hyperplanes with linear layers, augmentation; an MLP, not LeNet: under
    # augmentation LeNet's max-pooling sees ties (zero padding) that each CPU kernel breaks its
    # own way, and its trained values moved by up to 150 % between kernel choices
    "nonlin_pen_augment": BASE + [
        "model=mlp", "model.widths=[64,32]", "head=nonlin_pen", "dataset.image_size=32",
        "dataset.channels=1",
        "dataset.augment=true", "trainer.epochs=3", "optimizer=adamw", "optimizer.lr=1e-3",
        "schedule=constant", "metrics=default", "metrics.hyperplanes.with_linear=true",
        "metrics.hyperplanes.normalize=false"],
}


def record(names: list[str] | None = None) -> dict[str, list[dict]]:
    from latentgeo.config import compose
    from latentgeo.train import train

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or RUNS:
            overrides = RUNS[name]
            run_dir = Path(tmp) / name
            train(compose(overrides), run_dir)
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


SPLITS = ("train", "val", "test")


def kind(run: str, epoch: str, key: str) -> str:
    """``run/init|trained/family``: the family is the key's first name after the split
    (``test/collapse/…`` -> collapse, ``train/loss`` -> loss), else its first name
    (``hyperplanes/…``, ``dib/…``, ``lr``)."""
    parts = key.split("/")
    family = parts[1] if parts[0] in SPLITS and len(parts) > 1 else parts[0]
    return f"{run}/{'init' if epoch == '0' else 'trained'}/{family}"


def scales(golden: dict) -> dict[str, float]:
    """Per kind, the median magnitude of its nonzero values: deviations are relative to
    max(|value|, scale), so a value that happens to be near 0 is not judged on its own size."""
    magnitudes: dict[str, list[float]] = {}
    for run, epochs in golden.items():
        for epoch, event in epochs.items():
            for key, value in event.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and math.isfinite(value) and value != 0:
                    magnitudes.setdefault(kind(run, epoch, key), []).append(abs(value))
    return {k: statistics.median(v) for k, v in magnitudes.items()}


def deviation(expected: float, actual: float, scale: float) -> float:
    if expected == actual or (math.isnan(expected) and math.isnan(actual)):
        return 0.0
    if not (math.isfinite(expected) and math.isfinite(actual)):
        return math.inf
    return abs(actual - expected) / max(abs(expected), scale, sys.float_info.min)


def deviations(golden: dict, recorded: dict) -> tuple[list[str], dict[str, float]]:
    """Structural differences (runs, epochs, keys, non-numbers) and, per kind, the largest
    numeric deviation."""
    problems = [f"runs: golden {sorted(golden)}, now {sorted(recorded)}"] \
        if set(golden) != set(recorded) else []
    scale = scales(golden)
    largest: dict[str, float] = {}
    for run in sorted(set(golden) & set(recorded)):
        if set(golden[run]) != set(recorded[run]):
            problems.append(f"/{run}: epochs golden {sorted(golden[run])}, "
                            f"now {sorted(recorded[run])}")
        for epoch in sorted(set(golden[run]) & set(recorded[run])):
            expected, actual = golden[run][epoch], recorded[run][epoch]
            if set(expected) != set(actual):
                problems.append(f"/{run}/{epoch}: keys only in golden "
                                f"{sorted(set(expected) - set(actual))[:5]}, only now "
                                f"{sorted(set(actual) - set(expected))[:5]}")
            for key in sorted(set(expected) & set(actual)):
                e, a = expected[key], actual[key]
                numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                              for v in (e, a))
                if not numbers:
                    if e != a:
                        problems.append(f"/{run}/{epoch}/{key}: golden {e!r}, now {a!r}")
                    continue
                k = kind(run, epoch, key)
                largest[k] = max(largest.get(k, 0.0), deviation(e, a, scale.get(k, 0.0)))
    return problems, largest


def differences(golden: dict, recorded: dict, tolerances: dict[str, float] | None = None
                ) -> list[str]:
    """What differs beyond ``tolerances`` (kind -> largest allowed deviation; None: exact)."""
    problems, _ = deviations(golden, recorded)
    scale = scales(golden)
    for run in sorted(set(golden) & set(recorded)):
        for epoch in sorted(set(golden[run]) & set(recorded[run])):
            expected, actual = golden[run][epoch], recorded[run][epoch]
            for key in sorted(set(expected) & set(actual)):
                e, a = expected[key], actual[key]
                if isinstance(e, bool) or not isinstance(e, (int, float)) \
                        or isinstance(a, bool) or not isinstance(a, (int, float)):
                    continue
                k = kind(run, epoch, key)
                allowed = 0.0 if tolerances is None else tolerances.get(k, FLOOR)
                found = deviation(e, a, scale.get(k, 0.0))
                if found > allowed:
                    problems.append(f"/{run}/{epoch}/{key}: golden {e!r}, now {a!r} "
                                    f"(deviation {found:.2e} > {allowed:.2e} allowed for {k})")
    return problems


def load_tolerances() -> dict[str, float]:
    return {k: v["tolerance"] for k, v in json.loads(TOLERANCES.read_text()).items()}


def golden() -> dict:
    return by_epoch(json.loads((HERE / "metrics.json").read_text()))


def spread() -> dict[str, dict[str, float]]:
    """Record under every kernel choice (a subprocess each), and per kind the largest deviation
    from metrics.json, the tolerance derived from it and the choice that moved it most."""
    reference = golden()
    measured: dict[str, dict[str, float | str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for choice in KERNEL_CHOICES:
            out = Path(tmp) / "recording.json"
            env = {**os.environ, "OMP_NUM_THREADS": "1", **choice}
            subprocess.run([sys.executable, __file__, "--out", str(out)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            problems, largest = deviations(reference, by_epoch(json.loads(out.read_text())))
            if problems:
                raise SystemExit(f"{choice or 'native'}: " + "\n".join(problems[:10]))
            label = " ".join(f"{k}={v}" for k, v in choice.items()) or "native"
            for k, value in largest.items():
                if value >= measured.get(k, {}).get("spread", -1.0):
                    measured[k] = {"spread": value, "worst": label}
    for entry in measured.values():
        entry["tolerance"] = max(MARGIN * entry["spread"], FLOOR)
    return dict(sorted(measured.items()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--exact", action="store_true", help="with --check: bit for bit")
    parser.add_argument("--spread", action="store_true")
    parser.add_argument("--out", type=Path, help="write the recording here instead")
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS),
                        help="re-record only these runs into metrics.json (a deliberate change)")
    args = parser.parse_args()
    if args.spread:
        measured = spread()
        TOLERANCES.write_text(json.dumps(measured, indent=1) + "\n")
        print(f"wrote {TOLERANCES}: {len(measured)} kinds")
        return 0
    torch.set_num_threads(1)
    if args.runs:
        runs = {**golden(), **by_epoch(record(args.runs))}
        (HERE / "metrics.json").write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
        print(f"re-recorded {', '.join(args.runs)} in {HERE / 'metrics.json'}")
        return 0
    recorded = by_epoch(record())
    if args.check:
        diffs = differences(golden(), recorded, None if args.exact else load_tolerances())
        print("\n".join(diffs[:40]) or ("identical" if args.exact else "within tolerance"))
        return 1 if diffs else 0
    path = args.out or HERE / "metrics.json"
    path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: " + ", ".join(f"{k} {len(v)} epochs" for k, v in recorded.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
