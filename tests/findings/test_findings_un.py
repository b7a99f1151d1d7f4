"""UN (seed 004 and the assignment, docs/definitions.md §4.2): with trainable ReLU_α(x) = x +
α·ReLU(−x) and the L1 penalty λ·Σ|α|, a layer that does not need its non-linearity becomes linear
(α → 0) while the others stay ReLU-like, and ``python -m latentgeo.analysis.linearize`` folds
the linear sites into identities with (almost) no loss of test accuracy.

Setting: cnn3 (UN's CNN) width 16 on 500 Fashion-MNIST images per class, one α per layer
(``activation.granularity=layer``, ``mode=penalty``, λ = 1e-2, α starts at 1 = ReLU), Adam 1e-3,
batch 64, 30 epochs, no_pen head. Measured: α = 0.997 / 0.883 / 0.000 (block1 / 2 / 3; block 3
reaches exactly 0 at epoch 24), test accuracy 0.8526 before and after folding block 3.
(λ = 1e-1 drives every α down at Adam's full speed, ~0.07 per epoch: not selective.)
"""

from __future__ import annotations

import json

import pytest

from latentgeo.analysis import linearize
from tests.findings.common import report, require_fashion_mnist, run_experiment

pytestmark = pytest.mark.findings

SITES = ("backbone.blocks.block1.2", "backbone.blocks.block2.2", "backbone.blocks.block3.2")
SETTING = ["model=cnn3", "model.width=16", "model.activation=relu_alpha",
           "activation.granularity=layer", "activation.mode=penalty", "activation.l1=1e-2",
           "dataset=fashion_mnist", "dataset.train_subset.size_per_class=500", "head=no_pen",
           "optimizer=adam", "optimizer.lr=1e-3", "optimizer.weight_decay=0",
           "schedule=constant", "trainer.batch_size=64", "trainer.epochs=30", "metrics=none",
           "metrics.every=30"]


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    require_fashion_mnist()
    run = run_experiment(tmp_path_factory.mktemp("un"), "cnn3", SETTING)
    assert linearize.main([str(run.dir)]) == 0  # default threshold 0.05
    result = json.loads((run.dir / "linearize.json").read_text())
    report("UN", "run time", seconds=round(run.seconds))
    return run, result


def test_l1_penalty_makes_some_sites_linear_and_leaves_others_nonlinear(folded):
    run, _ = folded
    alphas = {site: run.last[f"alpha/{site}"] for site in SITES}
    report("UN", "final alpha per site", **{s.split(".")[2]: a for s, a in alphas.items()})
    linear = [site for site, alpha in alphas.items() if alpha <= 0.05]
    assert linear, alphas  # at least one site became (nearly) the identity
    assert max(alphas.values()) >= 0.5, alphas  # ... not all of them: the penalty selects


def test_linearize_folds_them_with_little_loss_of_accuracy(folded):
    _, result = folded
    report("UN", "linearize (threshold 0.05)", folded=len(result["folded"]),
           accuracy_before=result["accuracy_before"], accuracy_after=result["accuracy_after"])
    assert result["folded"]
    assert result["accuracy_after"] >= result["accuracy_before"] - 0.01
    assert result["accuracy_before"] >= 0.8  # a working classifier, not a collapsed one
