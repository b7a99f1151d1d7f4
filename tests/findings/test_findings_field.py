"""The field's geometry beyond the seeds, on real data at CPU scale (issue 24): neural collapse
(NC1 and the simplex-ETF error of the class means) falls over training on the train split; the
effective rank of the penultimate features falls over training towards K − 1 as collapse
proceeds (the same layer at two epochs: never a claim that a smaller layer has a smaller rank);
early blocks stay closer to their initialisation than late ones (linear CKA to init).

Setting: TH's MLP 64-64-64-64 (ReLU) on scikit-learn's digits (K = 10), no_pen (x_pen = the
last 64-d block), AdamW 2e-3 wd 0.01, batch 64, 40 epochs; the three families at init and every
10 epochs, CKA on 360 images per split. The numbers are reported whether or not they show the
direction (``make findings`` prints them). ~10 s on one thread.
Measured: train NC1 of x_pen 2.37 (init) -> 0.48 (epoch 10) -> 0.36 (40); ETF error 0.865 ->
0.779; effective rank of x_pen 31.0 -> 17.2 (K - 1 = 9: it falls towards it, not to it, in 40
epochs); test CKA to init at epoch 40 by block 0.842, 0.681, 0.608, 0.571, x_pen 0.571.
"""

from __future__ import annotations

import pytest

from tests.findings.common import TH_BLOCKS, TH_MLP, report, run_experiment

pytestmark = pytest.mark.findings

BLOCKS = TH_BLOCKS
SETTING = [*TH_MLP, "metrics.every=10", "metrics.neural_collapse.when=init+every",
           "metrics.effective_rank.when=init+every", "metrics.effective_rank.samples=null",
           "metrics.cka.when=init+every", "metrics.cka.samples=360"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = run_experiment(tmp_path_factory.mktemp("field"), "mlp", SETTING)
    report("field", "run time", seconds=round(run.seconds))
    return run


@pytest.mark.parametrize("quantity", ["nc1", "nc2_etf_error"])
def test_collapse_falls_over_training_on_the_train_split(run, quantity):
    series = run.series(f"train/neural_collapse/penultimate/{quantity}")
    report("field", f"train {quantity} of x_pen by epoch",
           **{f"epoch {e}": round(v, 4) for e, v in series.items()})
    epochs = sorted(series)
    assert series[epochs[-1]] < 0.95 * series[epochs[0]]  # at least 5 % lower


def test_effective_rank_of_x_pen_falls_over_training_towards_k_minus_1(run):
    series = run.series("train/effective_rank/penultimate/erank")
    report("field", "train effective rank of x_pen by epoch (K - 1 = 9)",
           **{f"epoch {e}": round(v, 2) for e, v in series.items()})
    epochs = sorted(series)
    first, last = series[epochs[0]], series[epochs[-1]]
    assert last < first and abs(last - 9) < abs(first - 9)


def test_early_blocks_stay_closer_to_their_initialisation(run):
    last = run.last
    to_init = {block: last[f"test/cka/{block}/init"] for block in (*BLOCKS, "penultimate")}
    report("field", "test CKA to init at epoch 40", **{k: round(v, 3) for k, v in to_init.items()})
    assert to_init["layer1"] > to_init["layer4"]
    assert to_init["layer1"] >= max(to_init.values()) - 0.02
