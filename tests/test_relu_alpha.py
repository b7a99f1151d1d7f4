"""ReLU_α (docs/definitions.md §4, seed 004): exact end points, gradients, annealing, penalty
training, channel broadcasting, oscillation freezing and folding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentgeo.models.relu_alpha import (
    OscillationTracker,
    ReLUAlpha,
    alpha_l1,
    alpha_stats,
    anneal_step,
    current_alphas,
    fold_linear_alphas,
    relu_alpha_factory,
    relu_alpha_modules,
)


def special_inputs(*shape: int) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(*shape) * 10
    x.view(-1)[:4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])
    return x


def set_alpha(module: ReLUAlpha, value: float | list[float]) -> None:
    with torch.no_grad():
        module.raw_alpha.copy_(torch.as_tensor(value))


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_exact_relu_at_one_and_identity_at_zero(granularity):
    module = ReLUAlpha(3, granularity=granularity)
    for shape in [(5, 3, 4, 4), (7, 3)]:
        x = special_inputs(*shape)
        assert torch.equal(module(x), torch.relu(x))  # init_alpha=1: starts as ReLU
        set_alpha(module, 0.0)
        assert torch.equal(module(x), x)
        set_alpha(module, 1.0)
    x = special_inputs(6, 3).double()
    assert torch.equal(module.double()(x), torch.relu(x))


def test_intermediate_alpha_follows_both_forms():
    module = ReLUAlpha(1, init_alpha=0.3)
    x = special_inputs(100)
    out = module(x)
    assert torch.equal(out, x + 0.3 * torch.relu(-x))
    torch.testing.assert_close(out, torch.relu(x) - 0.7 * torch.relu(-x))
    assert torch.equal(out[x >= 0], x[x >= 0])
    torch.testing.assert_close(out[x < 0], 0.7 * x[x < 0])  # leaky slope 1 − α


@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 3)])
def test_channel_alpha_broadcasts_over_dim_one(shape):
    module = ReLUAlpha(3, granularity="channel")
    alphas = [0.0, 0.25, 1.0]
    set_alpha(module, alphas)
    x = special_inputs(*shape)
    out = module(x)
    for c, a in enumerate(alphas):
        xc = x[:, c]
        assert torch.equal(out[:, c], xc + a * torch.relu(-xc))
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, 2], torch.relu(x[:, 2]))
    with pytest.raises(ValueError, match="3 channels"):
        module(torch.randn(2, 4))


def test_gradcheck_penalty_alpha_and_input():
    for granularity, channels in [("layer", 1), ("channel", 3)]:
        module = ReLUAlpha(3, granularity=granularity, init_alpha=0.4).double()
        set_alpha(module, torch.linspace(0.2, 0.8, channels).reshape(module.raw_alpha.shape))
        x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
        x = (x + 0.1 * x.sign()).requires_grad_()  # keep away from the kink at 0
        assert torch.autograd.gradcheck(lambda a, m=module, x=x: m(x), (module.raw_alpha,))
        assert torch.autograd.gradcheck(module, (x,))
        # hand value: d/dα Σ (x + α relu(-x)) = Σ relu(-x)
        module.zero_grad()
        module(x).sum().backward()
        expected = torch.relu(-x.detach())
        expected = expected.sum() if granularity == "layer" else expected.sum(dim=(0, 2, 3))
        torch.testing.assert_close(module.raw_alpha.grad, expected)


def test_gradcheck_anneal_gamma():
    for granularity in ["layer", "channel"]:
        module = ReLUAlpha(3, granularity=granularity, mode="anneal", init_nu=3.0).double()
        with torch.no_grad():
            module.gamma.copy_(torch.full_like(module.gamma, 0.7))
        x = torch.randn(5, 3, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda g, m=module, x=x: m(x), (module.gamma,))


def test_penalty_alpha_at_relu_end_still_gets_gradient_and_is_projected():
    module = ReLUAlpha(1)  # α = 1 exactly: a plain torch.clamp would give zero gradient here
    x = torch.tensor([-2.0, -1.0, 3.0])
    module(x).sum().backward()
    assert module.raw_alpha.grad.item() == 3.0  # Σ relu(−x)
    with torch.no_grad():
        module.raw_alpha.fill_(1.7)
    assert module.alpha().item() == 1.0 and torch.equal(module(x), torch.relu(x))
    anneal_step(nn.Sequential(module), nu_step=0.5)  # projection onto [0, 1]
    assert module.raw_alpha.item() == 1.0
    with torch.no_grad():
        module.raw_alpha.fill_(-0.2)
    anneal_step(nn.Sequential(module), nu_step=0.5)
    assert module.raw_alpha.item() == 0.0


def test_anneal_gamma_zero_is_half_for_every_nu():
    module = ReLUAlpha(4, granularity="channel", mode="anneal")
    for nu in [0.0, 0.01, 1.0, 100.0, 1e6]:
        module.nu.fill_(nu)
        assert torch.equal(module.alpha(), torch.full((4,), 0.5))


def test_large_nu_drives_alpha_to_sign_of_gamma():
    module = ReLUAlpha(4, granularity="channel", mode="anneal")
    with torch.no_grad():
        module.gamma.copy_(torch.tensor([-2.0, -0.3, 0.3, 2.0]))
    previous = module.alpha().detach()
    for nu in [1.0, 10.0, 100.0, 1e4]:
        module.nu.fill_(nu)
        alpha = module.alpha().detach()
        assert (alpha[:2] <= previous[:2]).all() and (alpha[2:] >= previous[2:]).all()
        assert (alpha[:2] < 0.5).all() and (alpha[2:] > 0.5).all()
        previous = alpha
    assert torch.equal(previous, torch.tensor([0.0, 0.0, 1.0, 1.0]))  # saturated in float32
    x = special_inputs(3, 4)
    torch.testing.assert_close(module(x), torch.cat([x[:, :2], torch.relu(x[:, 2:])], dim=1))
    module.nu.fill_(10.0)  # bounds: α ∈ (σ(−ν/2), σ(ν/2))
    assert module.alpha().min() > torch.sigmoid(torch.tensor(-5.0))


def test_nu_is_a_buffer_saved_stepped_and_restored():
    model = nn.Sequential(nn.Linear(2, 3), ReLUAlpha(3, mode="anneal"), nn.Linear(3, 1))
    assert "1.nu" in model.state_dict() and "1.gamma" in model.state_dict()
    assert "1.nu" not in dict(model.named_parameters())
    for _ in range(7):
        anneal_step(model, nu_step=0.25)
    assert model[1].nu.item() == 1.75
    with torch.no_grad():
        model[1].gamma.fill_(0.4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    restored = nn.Sequential(nn.Linear(2, 3), ReLUAlpha(3, mode="anneal"), nn.Linear(3, 1))
    restored.load_state_dict(state)
    assert restored[1].nu.item() == 1.75
    assert torch.equal(restored[1].alpha(), model[1].alpha())
    x = torch.randn(5, 2)
    assert torch.equal(restored(x), model(x))
    model.eval()
    model(x)  # forwards never move ν
    assert model[1].nu.item() == 1.75


def test_penalty_drives_alpha_to_zero_on_a_linearly_separable_problem():
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    x = x + 0.5 * torch.sign(x[:, :1] + x[:, 1:])  # margin around the line x0 + x1 = 0
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(2, 8), relu_alpha_factory("channel")(8), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    l1 = 1.0
    for _ in range(60):  # full-batch epochs
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + l1 * alpha_l1(model)
        loss.backward()
        optimizer.step()
        anneal_step(model, nu_step=0.0)
    alpha = model[1].alpha().detach()
    assert torch.equal(alpha, torch.zeros(8))  # projected L1 reaches exactly linear
    assert (model(x).argmax(1) == y).float().mean().item() > 0.97
    before = model(x)
    assert fold_linear_alphas(model, threshold=0.0) == ["1"]
    assert torch.equal(model(x), before)


def test_alpha_l1_skip_and_stats():
    model = nn.Sequential(
        ReLUAlpha(1, init_alpha=0.5),
        nn.Sequential(ReLUAlpha(3, granularity="channel")),
        ReLUAlpha(1, mode="anneal"),
    )
    set_alpha(model[1][0], [0.1, 0.2, 0.6])
    names = [name for name, _ in relu_alpha_modules(model)]
    assert names == ["0", "1.0", "2"]
    assert alpha_l1(model).item() == pytest.approx(0.5 + 0.9 + 0.5)
    assert alpha_l1(model, {"0"}).item() == pytest.approx(1.4)
    assert alpha_l1(model, {"1.0[2]", "2"}).item() == pytest.approx(0.8)
    assert alpha_l1(nn.Linear(1, 1)).item() == 0.0
    stats = alpha_stats(model)
    assert stats["0"] == {"mean": 0.5}
    assert stats["1.0"]["mean"] == pytest.approx(0.3)
    assert stats["1.0"]["min"] == pytest.approx(0.1) and stats["1.0"]["max"] == pytest.approx(0.6)
    assert stats["1.0"]["std"] == pytest.approx(math.sqrt(((0.2**2) + 0.1**2 + 0.3**2) / 3))
    assert stats["2"] == {"mean": 0.5}
    alphas = current_alphas(model)
    assert list(alphas) == names and alphas["1.0"].shape == (3,)


def test_factory_builds_independent_sites_and_validates():
    factory = relu_alpha_factory(granularity="channel", mode="penalty", init_alpha=0.8)
    a, b = factory(4), factory(4)
    assert a.raw_alpha is not b.raw_alpha
    assert torch.equal(a.alpha().detach(), torch.full((4,), 0.8))
    with pytest.raises(ValueError, match="activation.granularity='neuron'"):
        relu_alpha_factory(granularity="neuron")
    with pytest.raises(ValueError, match="activation.mode"):
        relu_alpha_factory(mode="clamp")
    with pytest.raises(ValueError, match="activation.init_alpha"):
        relu_alpha_factory(init_alpha=1.5)


def test_oscillation_tracker_freezes_oscillating_not_monotone():
    tracker = OscillationTracker(k=2, window=6)
    frozen_at = {}
    for epoch in range(12):
        alphas = {
            "osc": torch.tensor(0.5 + 0.1 * (-1) ** epoch),
            "mono": torch.tensor(1.0 - 0.05 * epoch),
            "ch": torch.tensor([0.5 + 0.1 * (-1) ** epoch, 0.9, 0.1 * epoch]),
        }
        for name in tracker.update(epoch, alphas):
            frozen_at[name] = epoch
    # changes alternate from epoch 1 on; the 3rd flip (> k=2) happens at epoch 4
    assert frozen_at == {"osc": 4, "ch[0]": 4}
    assert tracker.frozen == {"osc", "ch[0]"}


def test_oscillation_tracker_window_tolerance_and_resume():
    # flips spread out more than the window apart are forgotten
    tracker = OscillationTracker(k=1, window=3)
    sequence = [0.0, 0.5, 1.0, 0.5, 0.0, -0.5, -1.0, -0.5, 0.0]  # flips at 3 and 7
    assert all(not tracker.update(e, {"a": torch.tensor(v)}) for e, v in enumerate(sequence))
    # chatter below the tolerance is not an oscillation
    tracker = OscillationTracker(k=1, window=10, tolerance=1e-3)
    assert all(not tracker.update(e, {"a": torch.tensor(1e-4 * (e % 2))}) for e in range(10))
    # resume: a tracker restored from state_dict continues exactly like the original
    values = [0.5, 0.6, 0.5, 0.6, 0.5, 0.6]
    original = OscillationTracker(k=2, window=5)
    for e, v in enumerate(values[:3]):
        assert original.update(e, {"a": torch.tensor(v)}) == []
    resumed = OscillationTracker(k=2, window=5)
    resumed.load_state_dict(original.state_dict())
    assert resumed.update(2, {"a": torch.tensor(9.0)}) == []  # already-seen epoch: ignored
    for e, v in enumerate(values[3:], start=3):
        assert resumed.update(e, {"a": torch.tensor(v)}) == original.update(
            e, {"a": torch.tensor(v)}
        )
    assert resumed.frozen == original.frozen == {"a"}
    assert resumed.state_dict() == original.state_dict()


def test_fold_linear_alphas_replaces_exactly_the_sub_threshold_sites():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4),
        ReLUAlpha(4, init_alpha=0.0),
        nn.Sequential(nn.Linear(4, 4), ReLUAlpha(4, granularity="channel", init_alpha=0.0)),
        nn.Linear(4, 4),
        ReLUAlpha(4, init_alpha=0.02),
        nn.Linear(4, 4),
        ReLUAlpha(4, granularity="channel"),
        nn.Linear(4, 2),
    )
    set_alpha(model[6], [0.0, 0.0, 0.0, 0.5])  # one non-linear channel keeps the site
    x = torch.randn(10, 3)
    before = model(x)
    assert fold_linear_alphas(model, threshold=0.0) == ["1", "2.1"]
    assert isinstance(model[1], nn.Identity) and isinstance(model[2][1], nn.Identity)
    assert torch.equal(model(x), before)  # α exactly 0: the function is unchanged
    assert fold_linear_alphas(model, threshold=0.05) == ["4"]
    assert [name for name, _ in relu_alpha_modules(model)] == ["6"]
    assert fold_linear_alphas(model, threshold=0.4) == []
