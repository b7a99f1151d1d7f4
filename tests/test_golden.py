"""Every number of four fixed tiny deterministic runs equals the golden record, within the
spread measured across CPU kernel choices — and the comparison still catches real changes.

``tests/golden/metrics.json`` was recorded before the second-wave refactor on an AVX2-only CPU
(one deliberate re-recording per run since: the ReLU_α anneal fix of issue 18, and the
``nonlin_pen_augment`` run moved from LeNet to an MLP because LeNet's max-pool ties under
augmentation made its trained values CPU-dependent by up to 150 %). Another CPU picks other
kernels, so values are compared per kind — (run, initial weights or trained, metric family) —
against ``tests/golden/tolerances.json``: 10 × the largest deviation measured under every kernel
choice one machine offers (``python tests/golden/record.py --spread``). Kinds that never moved
must stay exact to 1e-12. ``LATENTGEO_GOLDEN_EXACT=1`` compares bit for bit (the machine that
recorded metrics.json only). Re-record only for a deliberate change:
``python tests/golden/record.py [--runs NAME ...]``, then ``--spread``.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import latentgeo.metrics.collapse
from tests.golden import record

GOLDEN_KEYS = ("test/collapse/within_class_variation", "test/binarity/score",
               "test/same_encoding_fraction", "test/mahalanobis/auroc_exact",
               "test/perturbation/score", "test/ood/auroc", "test/nc1/penultimate",
               "hyperplanes/net/mean", "init_distance/backbone.blocks.layer1.0.residual.0/l2",
               "dib/vsuff/stem/test", "reinit/init/backbone.blocks.layer1.0.residual.0",
               "lr_find/suggestion", "val/accuracy")


def recorded(names: list[str] | None = None) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recording's reductions
    try:
        return record.by_epoch(record.record(names))
    finally:
        torch.set_num_threads(threads)


def test_tiny_runs_reproduce_the_golden_metrics_within_the_measured_spread():
    now = recorded()
    assert sorted(now) == sorted(record.RUNS)
    exact = os.environ.get("LATENTGEO_GOLDEN_EXACT") == "1"
    differences = record.differences(record.golden(), now,
                                     None if exact else record.load_tolerances())
    assert not differences, "\n".join(differences[:20])
    # the record really covers the families it claims to
    keys = {key for run in now.values() for event in run.values() for key in event}
    for family_key in GOLDEN_KEYS:
        assert family_key in keys, family_key
    assert any(key.startswith("alpha/") for key in keys)


def test_every_kind_has_a_measured_tolerance():
    golden = record.golden()
    kinds = {record.kind(run, epoch, key) for run, epochs in golden.items()
             for epoch, event in epochs.items() for key, value in event.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)}
    measured = json.loads(record.TOLERANCES.read_text())
    assert kinds <= set(measured), sorted(kinds - set(measured))
    for entry in measured.values():
        assert entry["tolerance"] == max(record.MARGIN * entry["spread"], record.FLOOR)


def test_a_change_of_one_value_by_1e_3_is_caught_in_every_kind_the_spread_allows():
    """Each value of a kind whose tolerance is below 1e-3, moved by 1e-3 of its size (of its
    kind's median size for a value near 0), fails the comparison; most of the record is of
    such kinds (706 of the 886 nonzero values when the tolerances were measured)."""
    golden = record.golden()
    tolerances = record.load_tolerances()
    scales = record.scales(golden)
    guarded = total = 0
    for run, epochs in golden.items():
        for epoch, event in epochs.items():
            for key, value in event.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not math.isfinite(value) or value == 0:
                    continue
                total += 1
                kind = record.kind(run, epoch, key)
                if tolerances[kind] >= 1e-3:
                    continue
                guarded += 1
                changed = json.loads(json.dumps(golden))
                changed[run][epoch][key] = value + 1e-3 * max(abs(value), scales[kind])
                found = record.differences(golden, changed, tolerances)
                assert len(found) == 1 and f"/{run}/{epoch}/{key}:" in found[0], (key, found)
    assert guarded >= 0.75 * total, (guarded, total)


def test_a_changed_definition_is_caught(monkeypatch):
    """The population std of BE's equinorm/equiangular turned into the sample std (N vs N−1):
    5 % on K = 10 class means, a change a refactor could make by accident."""
    def sample_std(values: torch.Tensor) -> float:
        return values.std(unbiased=True).item()

    monkeypatch.setattr(latentgeo.metrics.collapse, "_population_std", sample_std)
    run = "relu_alpha_penalty"
    now = recorded([run])
    found = record.differences({run: record.golden()[run]}, now, record.load_tolerances())
    assert found and all("/collapse" in line for line in found), found[:5]
    assert any("equinorm" in line for line in found)


@pytest.mark.parametrize("expected, actual, scale, deviation", [
    (1.0, 1.0, 0.0, 0.0), (2.0, 2.002, 0.0, 1e-3), (1e-9, 2e-9, 1.0, 1e-9),
    (float("nan"), float("nan"), 1.0, 0.0), (1.0, float("inf"), 1.0, math.inf),
])
def test_deviation_is_relative_to_the_value_or_its_kinds_scale(expected, actual, scale,
                                                                deviation):
    assert record.deviation(expected, actual, scale) == pytest.approx(deviation, rel=1e-9)
