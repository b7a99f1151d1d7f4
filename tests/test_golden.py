"""Every number of four fixed tiny deterministic runs equals the golden record, bit for bit.

``tests/golden/metrics.json`` was recorded before the second-wave refactor (layers, metric
families as plug-ins, typed configs), which left every number equal; it covers every metric
family, every head, schedule and optimizer, ReLU_α in both modes and the LR range test. One
deliberate change since: ReLU_α's anneal mode now uses ν = 0.01·t at step t as UN's notebook
(issue 18), which re-recorded the ``relu_alpha_anneal_lr_auto`` run only. A change that moves a
number fails here. Re-record only for a deliberate change: ``python tests/golden/record.py``.
"""

from __future__ import annotations

import json

import torch

from tests.golden import record


def test_tiny_runs_reproduce_the_golden_metrics_exactly():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recording's reductions
    try:
        recorded = record.by_epoch(record.record())
    finally:
        torch.set_num_threads(threads)
    golden = record.by_epoch(json.loads((record.HERE / "metrics.json").read_text()))
    assert sorted(recorded) == sorted(record.RUNS)
    differences = record.differences(golden, recorded)
    assert not differences, "\n".join(differences[:20])
    # the record really covers the families it claims to
    keys = {key for run in recorded.values() for event in run.values() for key in event}
    for family_key in ("test/collapse/within_class_variation", "test/binarity/score",
                       "test/same_encoding_fraction", "test/mahalanobis/auroc_exact",
                       "test/perturbation/score", "test/ood/auroc", "test/nc1/penultimate",
                       "hyperplanes/net/mean",
                       "init_distance/backbone.blocks.layer1.0.residual.0/l2",
                       "dib/vsuff/stem/test", "reinit/init/backbone.blocks.layer1.0.residual.0",
                       "lr_find/suggestion", "val/accuracy"):
        assert family_key in keys, family_key
    assert any(key.startswith("alpha/") for key in keys)
