"""DeepFool: closed forms on linear models, batched == per-image LTS4 port, model left untouched."""

import copy

import pytest
import torch
from torch import nn

from latentgeo.metrics.perturbation import deepfool, deepfool_score
from tests.reference_deepfool import deepfool_single

OVERSHOOT = 0.02


def linear_model(in_features, classes, seed):
    torch.manual_seed(seed)
    return nn.Linear(in_features, classes).double()


def small_conv_net(classes=5, seed=0):
    """Conv-BN-ReLU x2 + linear head, random weights and non-trivial BatchNorm running stats."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, classes),
    ).double()
    for module in net:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net


class TupleOutput(nn.Module):
    """Returns (logits, penultimate features) like latentgeo's models."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x):
        x_pen = self.body(x)
        return self.head(x_pen), x_pen


def closed_form_first_step(weight, bias, x, num_candidates):
    """LTS4/BE first step on f(x) = Wx + b, per sample: (|f_k|/‖w_k‖ + 1e-4)·w_k/‖w_k‖ with k the
    candidate (among the top-num_candidates logits) minimising |f_k|/‖w_k‖."""
    steps = []
    for sample in x:
        logits = weight @ sample + bias
        ranked = logits.argsort(descending=True)[:num_candidates]
        best = None
        for k in ranked[1:]:
            w_k = weight[k] - weight[ranked[0]]
            pert = (logits[k] - logits[ranked[0]]).abs() / w_k.norm()
            if best is None or pert < best[0]:
                best = (pert, w_k)
        pert, w_k = best
        steps.append((pert + 1e-4) * w_k / w_k.norm())
    return torch.stack(steps)


def test_binary_linear_perturbation_is_closed_form():
    model = linear_model(7, 2, seed=0)
    torch.manual_seed(1)
    x = torch.randn(16, 7, dtype=torch.float64)
    perturbation, iterations, flipped = deepfool(model, x, overshoot=OVERSHOOT)
    w = model.weight[1] - model.weight[0]
    margin = (x @ w + model.bias[1] - model.bias[0]).abs().detach()
    expected_norm = (1 + OVERSHOOT) * (margin / w.norm() + 1e-4)
    torch.testing.assert_close(perturbation.norm(dim=1), expected_norm.detach(), rtol=1e-12, atol=0)
    # along ±w, towards the other class; one step always crosses a linear boundary
    cosine = (perturbation @ w / (perturbation.norm(dim=1) * w.norm())).detach()
    label_sign = torch.where(model(x).argmax(1) == 0, 1.0, -1.0).double()
    torch.testing.assert_close(cosine, label_sign, rtol=0, atol=1e-12)
    assert iterations.tolist() == [1] * 16 and flipped.all()
    expected_score = (expected_norm / x.norm(dim=1)).mean().detach()
    assert deepfool_score(model, x, overshoot=OVERSHOOT) == pytest.approx(float(expected_score))


@pytest.mark.parametrize("num_candidates", [2, 4, 6])
def test_multiclass_linear_first_step_is_closed_form(num_candidates):
    model = linear_model(9, 6, seed=2)
    torch.manual_seed(3)
    x = torch.randn(12, 9, dtype=torch.float64)
    perturbation, iterations, flipped = deepfool(
        model, x, overshoot=OVERSHOOT, max_iter=1, num_candidates=num_candidates
    )
    with torch.no_grad():
        expected = (1 + OVERSHOOT) * closed_form_first_step(
            model.weight, model.bias, x, num_candidates
        )
    torch.testing.assert_close(perturbation, expected, rtol=1e-10, atol=1e-12)
    assert iterations.tolist() == [1] * 12
    # the step crosses the chosen boundary, so the top class changed
    assert flipped.all()


def test_candidates_restricted_to_top_logits_changes_the_target():
    model = linear_model(9, 6, seed=2)
    torch.manual_seed(3)
    x = torch.randn(64, 9, dtype=torch.float64)
    runner_up_only, _, _ = deepfool(model, x, max_iter=1, num_candidates=2)
    all_classes, _, _ = deepfool(model, x, max_iter=1, num_candidates=6)
    # for some samples the nearest boundary is not the runner-up's: the restriction matters
    differs = (runner_up_only - all_classes).norm(dim=1) > 1e-9
    assert 0 < int(differs.sum()) < 64
    # and the nearest boundary is never further than the runner-up's
    assert (all_classes.norm(dim=1) <= runner_up_only.norm(dim=1) + 1e-12).all()


def test_candidates_capped_at_number_of_classes():
    model = linear_model(5, 3, seed=4)
    torch.manual_seed(5)
    x = torch.randn(10, 5, dtype=torch.float64)
    capped = deepfool(model, x, num_candidates=10)
    exact = deepfool(model, x, num_candidates=3)
    for a, b in zip(capped, exact, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    single, _, _ = deepfool_single(model, x[0], num_candidates=10)
    torch.testing.assert_close(single, capped[0][0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("max_iter", [1, 50])
def test_batched_equals_per_image_reference_on_conv_net_with_batchnorm(max_iter):
    net = small_conv_net(classes=5)
    torch.manual_seed(6)
    images = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    perturbation, iterations, flipped = deepfool(
        net, images, overshoot=OVERSHOOT, max_iter=max_iter, num_candidates=4
    )
    for b in range(len(images)):
        reference, loops, reference_flipped = deepfool_single(
            net, images[b], overshoot=OVERSHOOT, max_iter=max_iter, num_candidates=4
        )
        # float64: only summation-order round-off between the batched and per-image paths
        torch.testing.assert_close(perturbation[b], reference, rtol=1e-9, atol=1e-12)
        assert (int(iterations[b]), bool(flipped[b])) == (loops, reference_flipped)
    if max_iter == 50:
        assert flipped.all()
        assert len(set(iterations.tolist())) > 1  # images stop at different iterations


def test_float32_batched_close_to_reference():
    net = small_conv_net(classes=5, seed=7).float()
    torch.manual_seed(8)
    images = torch.randn(6, 3, 8, 8)
    perturbation, iterations, _ = deepfool(net, images)
    for b in range(len(images)):
        reference, loops, _ = deepfool_single(net, images[b])
        torch.testing.assert_close(perturbation[b], reference, rtol=1e-4, atol=1e-6)
        assert int(iterations[b]) == loops


def test_score_is_mean_norm_ratio_and_tuple_output_is_handled():
    net = small_conv_net(classes=5, seed=9)
    body, head = net[:-1], net[-1]
    wrapped = TupleOutput(body, head)
    torch.manual_seed(10)
    images = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    plain = deepfool(net, images)
    tupled = deepfool(wrapped, images)
    for a, b in zip(plain, tupled, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ratio = plain[0].flatten(1).norm(dim=1) / images.flatten(1).norm(dim=1)
    assert deepfool_score(wrapped, images) == pytest.approx(float(ratio.mean()), rel=1e-12)


def test_model_state_is_left_untouched():
    net = small_conv_net(classes=5, seed=11)
    net.train()
    net[4].eval()  # a submodule with its own flag must get it back
    net[0].bias.requires_grad_(False)
    flags = [m.training for m in net.modules()]
    requires_grad = [p.requires_grad for p in net.parameters()]
    state = copy.deepcopy(net.state_dict())
    torch.manual_seed(12)
    images = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    score = deepfool_score(net, images)
    assert [m.training for m in net.modules()] == flags
    assert [p.requires_grad for p in net.parameters()] == requires_grad
    assert all(p.grad is None for p in net.parameters())
    for name, value in net.state_dict().items():  # includes BN running stats and counters
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)
    # eval mode was used: the same score as for a model that is in eval mode already
    assert deepfool_score(net.eval(), images) == pytest.approx(score, rel=1e-12)


def test_works_under_no_grad_and_refuses_inference_mode():
    model = linear_model(7, 2, seed=0)
    x = torch.randn(4, 7, dtype=torch.float64)
    expected = deepfool_score(model, x)
    with torch.no_grad():
        assert deepfool_score(model, x) == pytest.approx(expected, rel=1e-12)
    float_model, float_x = nn.Linear(7, 4), x.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 would change the steps
        under_autocast = deepfool_score(float_model, float_x)
    assert under_autocast == deepfool_score(float_model, float_x)
    with torch.inference_mode():
        inference_images = x.clone()
        with pytest.raises(RuntimeError, match="inference_mode"):
            deepfool_score(model, inference_images)
    assert deepfool_score(model, inference_images) == pytest.approx(expected, rel=1e-12)


def test_zero_gradient_images_stop_without_nan():
    model = nn.Linear(4, 3).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    perturbation, iterations, flipped = deepfool(model, torch.randn(3, 4, dtype=torch.float64))
    assert perturbation.abs().max() == 0 and iterations.tolist() == [0, 0, 0]
    assert not flipped.any()


def test_argument_errors_name_the_value():
    model = linear_model(4, 3, seed=0)
    with pytest.raises(ValueError, match="num_candidates=1"):
        deepfool(model, torch.randn(2, 4, dtype=torch.float64), num_candidates=1)
    with pytest.raises(ValueError, match="empty"):
        deepfool_score(model, torch.zeros(0, 4, dtype=torch.float64))
