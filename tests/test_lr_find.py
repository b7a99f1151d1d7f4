"""LR range test (latentgeo.analysis.lr_find): ramp, smoothing, stop rule, suggestion, CLI."""

from __future__ import annotations

import copy
import json
import math
import sys

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch import nn

from latentgeo.analysis import lr_find as lf
from latentgeo.build import build_loaders
from latentgeo.data import load_dataset
from latentgeo.data.datasets import Split
from latentgeo.data.tensor_loader import TensorLoader, normalize
from latentgeo.loop import classifier_loss, gamma_at
from latentgeo.models import build_model
from tests.conftest import TINY, compose_cfg

CPU = torch.device("cpu")
SAMPLES, FEATURES = 256, 8


def regression_problem(batch_size: int = SAMPLES) -> tuple[TensorLoader, float]:
    """Least squares on normalised random uint8 'images' [N, D, 1, 1]; returns the loader and
    λ_max of the Hessian XᵀX/N of ½·mean (x·w − y)²: (full-batch) gradient descent converges
    exactly when lr < 2/λ_max."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (SAMPLES, FEATURES, 1, 1), generator=generator,
                           dtype=torch.uint8)
    mean, std = torch.full((FEATURES,), 0.5), torch.full((FEATURES,), 0.29)
    x = normalize(images.clone(), mean, std).flatten(1)
    targets = x @ torch.randn(FEATURES, generator=generator)
    targets += 0.1 * torch.randn(SAMPLES, generator=generator)
    hessian = x.T @ x / SAMPLES
    loader = TensorLoader(Split(images, targets), mean, std, batch_size=batch_size, device=CPU,
                          shuffle=True)
    return loader, torch.linalg.eigvalsh(hessian).max().item()


def squared_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    return 0.5 * (model(x).squeeze(1) - y).pow(2).mean(), torch.zeros((), dtype=torch.long)


def linear_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(FEATURES, 1, bias=False))
    nn.init.zeros_(model[1].weight)
    return model


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1.0)


def naive_smoothing(losses: list[float], beta: float = 0.98) -> list[float]:
    out, average = [], 0.0
    for i, loss in enumerate(losses, 1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def test_ramp_is_geometric_with_both_ends():
    lrs = lf.lr_ramp(1e-8, 1.0, 100)
    assert len(lrs) == 100 and lrs[0] == pytest.approx(1e-8) and lrs[-1] == pytest.approx(1.0)
    ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
    assert np.allclose(ratios, 10 ** (8 / 99))
    with pytest.raises(ValueError, match="min_lr"):
        lf.lr_ramp(1.0, 1e-3, 10)


def test_smoothing_is_the_bias_corrected_ema():
    losses = [3.0, 1.0, 4.0, 1.0, 5.0]
    assert lf.smooth_losses(losses) == pytest.approx(naive_smoothing(losses), rel=1e-12)
    assert lf.smooth_losses([2.5])[0] == pytest.approx(2.5)  # bias correction: S_0 = L_0
    assert lf.smooth_losses([7.0] * 30) == pytest.approx([7.0] * 30)


def test_suggestion_is_the_steepest_descent_in_log_lr():
    lrs = list(np.geomspace(1e-4, 1.0, 41))  # 10 points per decade, 1e-2 at index 20
    curve = [1 - math.tanh(3 * (math.log10(lr) + 2)) for lr in lrs]
    assert lf.suggestion_index(lrs, curve) == 20
    # the first 10 and the last point are never chosen (Lightning's skip_begin / skip_end)
    steep_start = [0.0] * 5 + [-100.0] + [1.0] * 35
    assert lf.suggestion_index(lrs, steep_start) not in range(10)
    assert lf.suggestion_index(lrs[:12], curve[:12]) is None  # 1 point left after skipping
    with_nan = curve[:25] + [math.nan] + curve[26:]
    assert lf.suggestion_index(lrs, with_nan) == 20


def test_suggestion_lies_below_the_divergence_threshold_of_gradient_descent():
    for batch_size in (SAMPLES, 32):
        loader, lambda_max = regression_problem(batch_size)
        result = lf.lr_find(linear_model(), loader, sgd, squared_error, min_lr=1e-6,
                            max_lr=1e2, steps=100)
        # GD on this quadratic diverges above 2/λ_max ≈ 1.8; it barely moves below ~1e-2/λ_max
        assert 0.05 / lambda_max < result["suggestion"] < 2 / lambda_max, batch_size
        assert result["stopped_early"] and result["lrs"][-1] > 2 / lambda_max
        # (d loss / d lr on the exponential ramp, the removed slope=lr: tests/test_parity.py)


def test_stop_rule_stops_when_the_smoothed_loss_exceeds_four_times_its_best():
    loader, _ = regression_problem()
    result = lf.lr_find(linear_model(), loader, sgd, squared_error, min_lr=1e-6, max_lr=1e2,
                        steps=100)
    losses, smoothed = result["losses"], result["smoothed"]
    assert len(losses) == len(smoothed) == len(result["lrs"]) < 100
    assert result["lrs"] == pytest.approx(lf.lr_ramp(1e-6, 1e2, 100)[:len(losses)])
    assert smoothed == pytest.approx(naive_smoothing(losses), rel=1e-9)
    exceeded = [i for i in range(1, len(smoothed)) if smoothed[i] > 4 * min(smoothed[:i])]
    assert exceeded == [len(smoothed) - 1]  # the first exceedance is the last step run
    # without the threshold it runs until the loss overflows, then stops at once
    unbounded = lf.lr_find(linear_model(), loader, sgd, squared_error, min_lr=1e-6,
                           max_lr=1e6, steps=200, early_stop_threshold=None)
    assert not math.isfinite(unbounded["losses"][-1])
    assert all(math.isfinite(v) for v in unbounded["losses"][:-1])
    assert len(unbounded["losses"]) > len(losses)
    # a gentle ramp does all its steps
    gentle = lf.lr_find(linear_model(), loader, sgd, squared_error, min_lr=1e-6, max_lr=0.5,
                        steps=40)
    assert len(gentle["losses"]) == 40 and not gentle["stopped_early"]


def test_weights_buffers_and_mode_are_restored_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(FEATURES, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4, 1))
    model.eval()
    before = copy.deepcopy(model.state_dict())
    parameters = list(model.parameters())
    rng = torch.get_rng_state()
    loader, _ = regression_problem(32)
    result = lf.lr_find(model, loader, lambda m: torch.optim.Adam(m.parameters()),
                        squared_error, min_lr=1e-5, max_lr=1e3, steps=60)
    assert len(result["losses"]) > 11  # it trained (BN running stats moved meanwhile)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [id(p) for p in model.parameters()] == [id(p) for p in parameters]
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_suggest_lr_ramps_the_runs_own_model_loss_and_batches():
    cfg = compose_cfg(TINY + ["dataset.num_classes=4", "optimizer.lr_find.steps=12",
                              "optimizer.lr_find.min_lr=1e-6", "head=bin_enc"])
    data = load_dataset(cfg.dataset)
    rng = torch.get_rng_state()
    result = lf.suggest_lr(cfg, data, CPU)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(result["losses"]) == 12 and result["lrs"][0] == pytest.approx(1e-6)
    # step 0 = the loss train() would compute on its first batch with the same initialisation
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg, data.input_shape, data.num_classes)
    x, y = next(iter(build_loaders(cfg, data, CPU).train.epoch(1)))
    gamma = gamma_at(1, cfg.head.gamma_start, cfg.head.gamma_factor, cfg.head.gamma_step,
                     cfg.head.gamma_max)
    model.train()
    loss, _ = classifier_loss(gamma)(model, x, y)
    assert result["losses"][0] == pytest.approx(loss.item(), rel=1e-5)
    # the schema rejects a misspelt range-test key at composition
    with pytest.raises(ConfigCompositionException, match="optimizer.lr_find.step"):
        compose_cfg(TINY + ["optimizer.lr_find.step=3"])


def test_cli_writes_lr_find_json_and_png(tmp_path, monkeypatch, capsys):
    """``python -m latentgeo.analysis.lr_find OVERRIDES``, run in-process (the @hydra.main entry
    parses sys.argv) to spare the interpreter start-up."""
    run_dir = tmp_path / "lr_find_run"
    monkeypatch.setattr(sys, "argv", [
        "lr_find", *TINY, "dataset.num_classes=4", "optimizer.lr_find.steps=30",
        "optimizer.lr_find.min_lr=1e-5", f"hydra.run.dir={run_dir}"])
    lf.main()
    result = json.loads((run_dir / "lr_find.json").read_text())
    assert {"lrs", "losses", "smoothed", "suggestion"} <= result.keys()
    count = len(result["losses"])
    assert 12 <= count <= 30 and len(result["lrs"]) == len(result["smoothed"]) == count
    assert result["lrs"] == pytest.approx(lf.lr_ramp(1e-5, 1.0, 30)[:count])
    assert result["smoothed"] == pytest.approx(naive_smoothing(result["losses"]), rel=1e-9)
    index = lf.suggestion_index(result["lrs"], result["smoothed"])
    assert result["suggestion"] == pytest.approx(result["lrs"][index])
    assert f"suggested lr: {result['suggestion']:.6g}" in capsys.readouterr().out
    assert (run_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
