"""HP (seed 003): trained conv filters are biased away from the all-ones direction: their mean
normalised projection cos∠(w, 1) (``hyperplanes/<layer>/mean``, epoch 0 = init) drifts negative
with training; the bias "emerges from training and correlates with learning" (label noise and
pixel shuffle are HP's controls); re-initialisation robustness (Zhang, Bengio & Singer 2019):
the first layers are critical, later ones robust (``metrics.reinit.when=last``).

Setting: HP's LeNet (6 conv layers: 6, 6 | 16, 16 | 64, 64 filters, no BN) on 500 Fashion-MNIST
images per class, SGD 5e-2 (momentum 0.9, wd 1e-4), batch 128, 15 epochs, no_pen; the same with
``dataset.label_noise=1.0`` and with ``dataset.pixel_shuffle=true``; re-init from init.pt /
epoch 1 / a fresh draw on the clean run. Measured (trainer.seed 0): net mean +0.022 -> -0.198
(clean, running train accuracy 0.81), -0.097 (label noise 1.0, 0.11), -0.155 (pixel shuffle,
0.23); every layer ends negative. What does NOT show at this scale: "more so in deeper
layers" (seed 0: the first stage drifts most, -0.38 vs -0.24, from an init of +0.39 / +0.17
over its 6 filters; seed 1: the deeper stages drift most, -0.21 vs -0.14, but end no lower,
-0.19 vs -0.20), and "later layers robust": reset to init, the last conv layer drops test
accuracy 0.796 -> 0.340, about as much as the first (-> 0.242).
"""

from __future__ import annotations

import pytest

from tests.findings.common import (
    report,
    require_fashion_mnist,
    run_experiment,
    shown_at_this_scale,
)

pytestmark = pytest.mark.findings

LAYERS = ["backbone.blocks.stage1.0", "backbone.blocks.stage1.2", "backbone.blocks.stage2.0",
          "backbone.blocks.stage2.2", "backbone.blocks.stage3.0", "backbone.blocks.stage3.2"]
SETTING = ["model=lenet", "dataset=fashion_mnist", "dataset.train_subset.size_per_class=500",
           "head=no_pen", "optimizer=sgd", "optimizer.lr=5e-2", "schedule=constant",
           "trainer.batch_size=128", "trainer.epochs=15", "metrics=none", "metrics.every=15",
           "metrics.hyperplanes.when=init+every:1"]
VARIANTS = {"clean": ["metrics.reinit.when=last", "trainer.snapshot_epochs=[1]"],
            "label_noise": ["dataset.label_noise=1.0"],
            "pixel_shuffle": ["dataset.pixel_shuffle=true"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require_fashion_mnist()
    root = tmp_path_factory.mktemp("hp")
    runs = {name: run_experiment(root, name, SETTING + extra) for name, extra in VARIANTS.items()}
    report("HP", "run time", **{f"{name}_s": round(run.seconds) for name, run in runs.items()})
    return runs


def mean(run, layer: str, epoch: int) -> float:
    return run.at(epoch)[f"hyperplanes/{layer}/mean"]


def test_filters_drift_away_from_the_all_ones_direction(runs):
    clean = runs["clean"]
    drift = {layer: mean(clean, layer, 15) - mean(clean, layer, 0) for layer in LAYERS}
    report("HP", "clean: mean cos(w, 1) init -> epoch 15",
           net=f"{mean(clean, 'net', 0):+.3f}->{mean(clean, 'net', 15):+.3f}",
           **{layer.split(".", 2)[2]: round(d, 3) for layer, d in drift.items()})
    assert mean(clean, "net", 15) <= mean(clean, "net", 0) - 0.1
    assert all(d < 0 for d in drift.values()), drift
    assert clean.at(15)["hyperplanes/net/mass"] >= 0.9  # most filters project negatively
    final = {layer: round(mean(clean, layer, 15), 3) for layer in LAYERS}
    shown_at_this_scale(all(v < 0 for v in final.values()), f"mean cos at epoch 15 {final}")


def test_the_bias_is_weaker_without_learnable_labels_or_images(runs):
    drift = {name: mean(run, "net", 15) - mean(run, "net", 0) for name, run in runs.items()}
    accuracy = {name: run.last["train/running_accuracy"] for name, run in runs.items()}
    report("HP", "net drift by corruption", **{k: round(v, 3) for k, v in drift.items()},
           **{f"train_acc_{k}": round(v, 3) for k, v in accuracy.items()})
    assert drift["label_noise"] < 0 and drift["pixel_shuffle"] < 0  # the optimiser alone drifts
    assert abs(drift["label_noise"]) <= 0.7 * abs(drift["clean"])
    shown_at_this_scale(abs(drift["pixel_shuffle"]) <= 0.9 * abs(drift["clean"]),
                        f"pixel-shuffle drift {drift['pixel_shuffle']:.3f} vs clean "
                        f"{drift['clean']:.3f}")


@pytest.mark.xfail(strict=False, reason="does not show at CPU scale (module docstring): the "
                   "depth trend of the drift depends on the seed (6 filters in the first stage)")
def test_the_drift_is_larger_in_deeper_layers(runs):
    clean = runs["clean"]
    drift = [mean(clean, layer, 15) - mean(clean, layer, 0) for layer in LAYERS]
    first, deeper = sum(drift[:2]) / 2, sum(drift[2:]) / 4
    report("HP", "clean drift: first stage vs stages 2-3", first=round(first, 3),
           deeper=round(deeper, 3))
    assert deeper <= first - 0.02


def reinit(run, source: str) -> dict[str, float]:
    return {layer: run.last[f"reinit/{source}/{layer}"] for layer in LAYERS}


def test_the_first_layer_is_critical(runs):
    clean = runs["clean"]
    baseline, init = clean.last["test/accuracy"], reinit(clean, "init")
    report("HP", "re-init to init: test accuracy", baseline=baseline,
           **{layer.split(".", 2)[2]: a for layer, a in init.items()},
           epoch1_first=reinit(clean, "epoch_0001")[LAYERS[0]],
           epoch1_last=reinit(clean, "epoch_0001")[LAYERS[-1]])
    assert init[LAYERS[0]] <= baseline - 0.2


@pytest.mark.xfail(strict=False, reason="does not show at CPU scale (module docstring): every "
                   "conv layer of the narrow LeNet is critical when reset to init")
def test_later_layers_are_robust_to_reinitialisation(runs):
    clean = runs["clean"]
    baseline, init = clean.last["test/accuracy"], reinit(clean, "init")
    assert baseline - init[LAYERS[-1]] <= 0.5 * (baseline - init[LAYERS[0]])
