"""Schedules, the bin_enc loss, and short real training runs of every head."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentgeo.data import Split, TensorLoader
from latentgeo.loop import gamma_at, loss_terms, lr_factor, train_epoch
from latentgeo.models import HEADS, build_model
from latentgeo.records import read_json, read_metrics
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg


def test_gamma_follows_start_times_factor_power_until_the_cap():
    start, factor, cap = 0.01, 1.05, 1e6
    assert gamma_at(1, start, factor, 1, cap) == start
    assert gamma_at(11, start, factor, 1, cap) == pytest.approx(start * factor**10, rel=1e-12)
    # BE: growth stops after 378 epochs at ≈1.022e6 (the last product overshoots the cap once)
    last = start * factor**378
    assert last > cap > start * factor**377
    assert gamma_at(379, start, factor, 1, cap) == pytest.approx(last, rel=1e-9)
    assert gamma_at(800, start, factor, 1, cap) == pytest.approx(last, rel=1e-9)
    # step 3: one update after epochs 3, 6, 9 -> epoch 10 trains with start·factor^3
    assert gamma_at(10, start, 2.0, 3, cap) == pytest.approx(start * 8)


class Schedule:
    def __init__(self, **kw):
        self.__dict__.update(dict(name="step", step_size=50, factor=0.5, start_epoch=250,
                                  keep_output_lr=True, min_lr=0.0) | kw)


def test_be_delayed_step_schedule_halves_from_epoch_301():
    s = Schedule()
    assert lr_factor(1, s, 800) == 1.0
    assert lr_factor(300, s, 800) == 1.0
    assert lr_factor(301, s, 800) == 0.5
    assert lr_factor(351, s, 800) == 0.25
    assert lr_factor(800, s, 800) == 0.5**10  # 549 steps // 50


def test_cosine_schedule_endpoints():
    s = Schedule(name="cosine")
    assert lr_factor(1, s, 10) == pytest.approx(1.0)
    assert lr_factor(6, s, 10) == pytest.approx(0.5)
    assert lr_factor(11, s, 10) == pytest.approx(0.0, abs=1e-12)


def test_bin_enc_loss_is_cross_entropy_plus_gamma_mean_square_by_hand():
    torch.manual_seed(0)
    cfg = compose_cfg(TINY + ["head=bin_enc", "head.penultimate_nodes=5"])
    model = build_model(cfg, (3, 8, 8), 10)
    x, y = torch.randn(7, 3, 8, 8), torch.randint(0, 10, (7,))
    logits, x_pen = model(x)
    gamma = 0.37
    log_probs = logits - logits.exp().sum(1, keepdim=True).log()
    ce = -log_probs[torch.arange(7), y].mean()
    by_hand = ce + gamma * sum(float(v) ** 2 for v in x_pen.detach().flatten()) / x_pen.numel()
    assert loss_terms(logits, x_pen, y, gamma).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert loss_terms(logits, x_pen, y, None).item() == pytest.approx(ce.item(), rel=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_end_to_end(head, tmp_path):
    cfg = compose_cfg(TINY + [f"head={head}", "trainer.epochs=4"])
    summary = train(cfg, tmp_path / head)
    initial, *events = read_metrics(tmp_path / head / "metrics.jsonl")
    assert initial["epoch"] == 0 and "hyperplanes/net/mean" in initial  # data-free, at init
    assert [e["epoch"] for e in events] == [1, 2, 3, 4]
    assert read_json(tmp_path / head / "status.json")["state"] == "ok"
    # learning happened: running loss falls and the final test accuracy beats chance (0.1)
    assert events[-1]["train/running_loss"] < events[0]["train/running_loss"]
    assert summary["test/accuracy"] > 0.3
    assert ("gamma" in events[0]) == (head == "bin_enc")
    if head == "bin_enc":
        assert [e["gamma"] for e in events] == pytest.approx([0.01 * 1.05**k for k in range(4)])
    assert summary["best/test/accuracy"] == max(e["test/accuracy"] for e in events)
    assert (tmp_path / head / "checkpoints" / "init.pt").is_file()
    assert math.isfinite(summary["test/loss"])


def test_non_finite_loss_stops_the_run_and_records_it_failed(tmp_path, monkeypatch):
    import latentgeo.loop as loop

    real = loop.loss_terms
    monkeypatch.setattr(loop, "loss_terms",
                        lambda *args: real(*args) * float("nan"))
    cfg = compose_cfg(TINY + ["trainer.epochs=3"])
    with pytest.raises(loop.TrainingDiverged, match="non-finite training loss"):
        train(cfg, tmp_path)
    status = read_json(tmp_path / "status.json")
    assert status["state"] == "failed" and "non-finite" in status["reason"]
    assert not (tmp_path / "summary.json").exists()


def test_set_learning_rate_number_by_number():
    """cosine ends at min_lr; BE's step schedule keeps the output group at the base LR."""
    from types import SimpleNamespace

    from latentgeo.config import ScheduleConfig
    from latentgeo.loop import set_learning_rate

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    optimizer = torch.optim.SGD([{"params": [params[0]], "name": "body"},
                                 {"params": [params[1]], "name": "output"},
                                 {"params": [params[2]], "name": "alpha"}], lr=1.0)
    lrs = lambda: [g["lr"] for g in optimizer.param_groups]  # noqa: E731
    cosine = ScheduleConfig(name="cosine", min_lr=1e-4)
    # epoch 3 of 4: factor cos(pi/2)/2 + 1/2 = 0.5 -> 1e-4 + (1e-2 - 1e-4) * 0.5
    factor = lr_factor(3, cosine, 4)
    assert factor == pytest.approx(0.5)
    assert set_learning_rate(optimizer, 1e-2, factor, cosine) == pytest.approx(0.00505)
    assert lrs() == pytest.approx([0.00505] * 3)
    assert set_learning_rate(optimizer, 1e-2, lr_factor(1, cosine, 4), cosine) == 1e-2
    # the last epoch of a long run approaches min_lr, never below it
    assert set_learning_rate(optimizer, 1e-2, lr_factor(1000, cosine, 1000), cosine) == \
        pytest.approx(1e-4, rel=1e-3)
    step = ScheduleConfig(name="step", step_size=2, factor=0.5, start_epoch=3,
                          keep_output_lr=True)
    # BE: stepped after each epoch > start_epoch: epoch 8 has had 4 steps -> 0.5^2
    assert [lr_factor(e, step, 10) for e in (1, 4, 5, 6, 7, 8)] == [1, 1, 1, 0.5, 0.5, 0.25]
    assert set_learning_rate(optimizer, 4e-3, lr_factor(8, step, 10), step) == 1e-3
    assert lrs() == [1e-3, 4e-3, 1e-3]  # output kept at the base LR, alpha follows the body
    no_keep = ScheduleConfig(name="step", step_size=2, factor=0.5, start_epoch=3)
    set_learning_rate(optimizer, 4e-3, lr_factor(8, no_keep, 10), no_keep)
    assert lrs() == [1e-3, 1e-3, 1e-3]
    constant = SimpleNamespace(name="constant", keep_output_lr=False, min_lr=0.0)
    assert set_learning_rate(optimizer, 3e-4, lr_factor(9, constant, 10), constant) == 3e-4


def test_train_epoch_stops_after_max_steps_or_when_after_step_says_so():
    """64 samples in batches of 8 = 8 steps per pass; the limit and the hook cut it short, and
    the optimizer took exactly as many steps as the returned mean covers."""
    torch.manual_seed(0)
    split = Split(torch.randint(0, 256, (64, 1, 2, 2), dtype=torch.uint8),
                  torch.randint(0, 2, (64,)))
    loader = TensorLoader(split, torch.zeros(1), torch.ones(1), batch_size=8,
                          device=torch.device("cpu"), shuffle=False)
    model = nn.Linear(4, 2)
    losses: list[float] = []

    def loss_fn(m, x, y):
        loss = nn.functional.cross_entropy(m(x.flatten(1)), y)
        losses.append(float(loss.detach()))
        return loss, torch.zeros((), dtype=torch.long)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the same loss each pass
    full = train_epoch(model, loader, optimizer, 1, loss_fn)
    assert len(losses) == 8
    losses.clear()
    limited = train_epoch(model, loader, optimizer, 1, loss_fn, max_steps=3)
    assert len(losses) == 3
    assert limited["train/running_loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert full["train/running_loss"] != pytest.approx(limited["train/running_loss"], rel=1e-6)
    losses.clear()
    calls = iter(range(1, 100))
    train_epoch(model, loader, optimizer, 1, loss_fn, after_step=lambda: next(calls) == 5)
    assert len(losses) == 5
