"""TH (seed 002): neural collapse progresses with depth and with training (per-block NC1 =
tr(Σ_W Σ_B⁺), TH's streaming definition, falls from the first to the last block and over
epochs), and the decodable information bottleneck shows compression by depth: the V-minimality
(what decoders can still read of the base-C digits of each sample's index within its class)
falls block by block while the V-sufficiency stays at H(Y).

Setting: MLP 64-64-64-64 (ReLU) on scikit-learn's digits (8x8, 1437 train / 360 test), no_pen,
AdamW 2e-3 wd 0.01 (TH's optimiser), batch 64, 40 epochs; NC1 every 5 epochs
(``metrics.nc1.when=every``), DIB at the last epoch (``metrics.dib.when=last``: 20 epochs for
V-sufficiency, TH's 50 for V-minimality, train and test). ~35 s on one thread.
Measured: train NC1 at epoch 40 by block 6.50, 5.46, 4.79, 3.64 (test 5.81, 5.37, 4.65, 3.52);
the last block's 6.56 at epoch 5 -> 3.64; train V-minimality stem 2.00, then 0.90, 0.49, 0.26,
0.00 bits; V-sufficiency 3.29-3.32 bits everywhere (H(Y) = 3.32).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.findings.common import TH_BLOCKS, TH_MLP, report, run_experiment

pytestmark = pytest.mark.findings

BLOCKS = TH_BLOCKS
SETTING = [*TH_MLP, "metrics.every=5", "metrics.nc1.when=every", "metrics.dib.when=last"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = run_experiment(tmp_path_factory.mktemp("th"), "mlp", SETTING)
    report("TH", "run time", seconds=round(run.seconds), dib_s=round(run.last["time/dib_s"]))
    return run


@pytest.mark.parametrize("split", ["train", "test"])
def test_nc1_falls_with_depth(run, split):
    nc1 = [run.last[f"{split}/nc1/{block}"] for block in BLOCKS]
    correlation = float(np.corrcoef(np.log(nc1), np.arange(len(nc1)))[0, 1])
    report("TH", f"{split} NC1 by block (epoch 40)", **dict(zip(BLOCKS, nc1)),
           corr_log_nc1_depth=correlation)
    assert all(later < earlier for earlier, later in zip(nc1, nc1[1:]))
    assert nc1[-1] <= 0.7 * nc1[0]
    assert correlation <= -0.9  # TH's plot: Pearson(log NC1, layer index) per epoch


def test_nc1_falls_over_epochs(run):
    series = {block: run.series(f"train/nc1/{block}") for block in BLOCKS}
    epochs = sorted(series["layer4"])
    first, last = epochs[0], epochs[-1]  # the first evaluation (epoch 5) and the last (40)
    report("TH", "train NC1 epoch 5 -> 40",
           **{block: f"{s[first]:.3g}->{s[last]:.3g}" for block, s in series.items()})
    for block, s in series.items():
        assert s[last] < s[first], block
    assert series["layer4"][last] <= 0.7 * series["layer4"][first]


@pytest.mark.parametrize("split", ["train", "test"])
def test_dib_minimality_falls_with_depth_while_sufficiency_stays(run, split):
    names = ("stem", *BLOCKS)
    vmin = [run.last[f"dib/vmin/{block}/{split}"] for block in names]
    vsuff = [run.last[f"dib/vsuff/{block}/{split}"] for block in names]
    report("TH", f"{split} DIB V-minimality by block (bits)", **dict(zip(names, vmin)),
           vsuff_min=min(vsuff), vsuff_max=max(vsuff))
    assert all(later < earlier for earlier, later in zip(vmin, vmin[1:]))
    assert vmin[-1] <= 0.25 * vmin[0]
    assert min(vsuff) >= 0.9 * math.log2(10)  # every block keeps (almost) all of H(Y)
