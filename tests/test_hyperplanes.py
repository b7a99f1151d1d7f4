"""Projection statistic and distance from init (HP §3.1–3.2) against hand-worked values and a
naive per-filter loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentgeo.metrics.hyperplanes import (
    distance_from_init,
    filter_projections,
    included_layers,
    projection_stats,
)


def vgg_like() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1),  # pointwise: skipped by default
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 12),
        nn.ReLU(),
        nn.Linear(12, 5),
    )


def naive_projection(weight: torch.Tensor, normalize: bool) -> list[float]:
    """One filter at a time, plain Python sums."""
    out = []
    for filt in weight.detach().to(torch.float64):
        values = filt.flatten().tolist()
        total = sum(values)
        if normalize:
            norm = math.sqrt(sum(v * v for v in values))
            total = total / (norm * math.sqrt(len(values))) if norm > 0 else 0.0
        out.append(total)
    return out


def test_included_layers_order_pointwise_and_linear():
    model = vgg_like()
    assert [n for n, _ in included_layers(model)] == ["0", "2", "5"]
    assert [n for n, _ in included_layers(model, skip_pointwise=False)] == ["0", "2", "5", "8"]
    assert [n for n, _ in included_layers(model, with_linear=True)] == ["0", "2", "5", "11", "13"]
    # a 1×3 kernel is not pointwise; Conv1d/Conv3d are convs too
    other = nn.Sequential(nn.Conv2d(2, 2, (1, 3)), nn.Conv1d(2, 2, 1), nn.Conv3d(2, 2, 2))
    assert [n for n, _ in included_layers(other)] == ["0", "2"]


def test_hand_worked_projections():
    conv = nn.Conv2d(1, 4, 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(
            torch.tensor(
                [
                    [[1.0, 1.0], [1.0, -1.0]],  # sum 2, ‖w‖ 2, n 4 -> cos 2/(2·2) = 0.5
                    [[1.0, -1.0], [0.0, 0.0]],  # sum 0 -> cos 0
                    [[-3.0, -3.0], [-3.0, -3.0]],  # constant negative -> cos -1
                    [[0.0, 3.0], [0.0, 4.0]],  # sum 7, ‖w‖ 5 -> 7/10
                ]
            ).unsqueeze(1)
        )
        conv.bias.fill_(100.0)  # bias is ignored
    model = nn.Sequential(conv)
    normalized = projection_stats(model)["layers"][0]
    assert normalized["projections"] == pytest.approx([0.5, 0.0, -1.0, 0.7], abs=1e-12)
    assert normalized["mean"] == pytest.approx(0.05, abs=1e-12)
    assert normalized["mass"] == 0.5  # 0 counts as <= 0
    raw = projection_stats(model, normalize=False)["layers"][0]
    assert raw["projections"] == [2.0, 0.0, -12.0, 7.0]
    assert raw["mean"] == pytest.approx(-0.75)
    assert raw["mass"] == 0.5


def test_all_positive_filters_give_cosine_one_for_constant_and_mass_zero():
    conv = nn.Conv2d(3, 6, 3)
    with torch.no_grad():
        conv.weight.copy_(
            torch.arange(1, 7, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 3, 3)
        )
    stats = projection_stats(nn.Sequential(conv))
    assert stats["layers"][0]["projections"] == pytest.approx([1.0] * 6, abs=1e-12)
    assert stats["layers"][0]["mass"] == 0.0
    with torch.no_grad():
        conv.weight.uniform_(0.01, 1.0)  # positive but not constant: 0 < cos < 1
    projections = projection_stats(nn.Sequential(conv))["layers"][0]["projections"]
    assert all(0.0 < p < 1.0 for p in projections)
    assert projection_stats(nn.Sequential(conv))["net"]["mass"] == 0.0


def test_raw_projections_are_weight_sums_and_cosines_bounded():
    model = vgg_like()
    for (name, module), layer in zip(
        included_layers(model), projection_stats(model, False)["layers"]
    ):
        assert layer["name"] == name
        expected = module.weight.detach().double().sum(dim=(1, 2, 3)).tolist()
        assert layer["projections"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    with torch.no_grad():
        model[0].weight.normal_()
    projections = projection_stats(model, skip_pointwise=False)["net"]["projections"]
    assert all(-1.0 <= p <= 1.0 for p in projections)
    assert min(projections) < 0 < max(projections)


def test_zero_filter_has_cosine_zero():
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight.abs_()
        conv.weight[1].zero_()
    layer = projection_stats(nn.Sequential(conv))["layers"][0]
    assert layer["projections"][1] == 0.0
    assert layer["mass"] == pytest.approx(1 / 3)


def test_grouped_conv_normal_is_the_per_channel_slice():
    depthwise = nn.Conv2d(4, 8, 3, groups=4, bias=False)
    assert depthwise.weight.shape == (8, 1, 3, 3)
    projections = filter_projections(depthwise).tolist()
    assert projections == pytest.approx(naive_projection(depthwise.weight, True), abs=1e-12)


def test_linear_rows_only_with_linear():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]))
    assert projection_stats(model)["layers"] == []
    stats = projection_stats(model, with_linear=True)
    assert [layer["name"] for layer in stats["layers"]] == ["0", "2"]
    # row [1,2,2]: sum 5, ‖w‖ 3, √3 -> 5/(3√3); row [-1,0,0]: -1/√3
    assert stats["layers"][0]["projections"] == pytest.approx(
        [5 / (3 * math.sqrt(3)), -1 / math.sqrt(3)], abs=1e-12
    )
    assert stats["layers"][0]["mass"] == 0.5


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("with_linear", [True, False])
@pytest.mark.parametrize("skip_pointwise", [True, False])
def test_agrees_with_naive_loop_and_net_pools_all_filters(normalize, with_linear, skip_pointwise):
    model = vgg_like()
    stats = projection_stats(model, normalize, with_linear, skip_pointwise)
    layers = included_layers(model, with_linear, skip_pointwise)
    assert [layer["name"] for layer in stats["layers"]] == [name for name, _ in layers]
    pooled: list[float] = []
    for (_, module), layer in zip(layers, stats["layers"]):
        expected = naive_projection(module.weight, normalize)
        assert layer["projections"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert layer["mean"] == pytest.approx(sum(expected) / len(expected), rel=1e-9, abs=1e-12)
        assert layer["mass"] == sum(p <= 0 for p in layer["projections"]) / len(expected)
        pooled += expected
    total_filters = sum(module.weight.shape[0] for _, module in layers)
    assert len(stats["net"]["projections"]) == total_filters == len(pooled)
    assert stats["net"]["mean"] == pytest.approx(sum(pooled) / len(pooled), rel=1e-9, abs=1e-12)
    assert stats["net"]["mass"] == sum(p <= 0 for p in stats["net"]["projections"]) / len(pooled)


def test_no_included_layer_gives_nan():
    stats = projection_stats(nn.Sequential(nn.Linear(2, 2)))
    assert stats["layers"] == [] and stats["net"]["projections"] == []
    assert math.isnan(stats["net"]["mean"]) and math.isnan(stats["net"]["mass"])


def test_distance_from_init_zero_at_init_and_one_at_double():
    model = vgg_like()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    distances = distance_from_init(model, init)
    assert list(distances) == ["0", "2", "5", "11", "13"]
    assert all(d == {"l2_dist": 0.0, "l_inf_dist": 0.0} for d in distances.values())
    with torch.no_grad():
        for _, module in included_layers(model, with_linear=True):
            module.weight.mul_(2.0)
            module.bias.add_(5.0)  # biases are ignored
    distances = distance_from_init(model, init)
    assert all(d == {"l2_dist": 1.0, "l_inf_dist": 1.0} for d in distances.values())
    assert list(distance_from_init(model, init, with_linear=False)) == ["0", "2", "5"]


def test_distance_from_init_hand_worked_and_errors():
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    init = {"0.weight": torch.tensor([[3.0, 0.0], [0.0, -4.0]])}  # ‖W₀‖ 5, max|W₀| 4
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 1.0], [0.0, -4.0]]))
    assert distance_from_init(model, init) == {"0": {"l2_dist": 0.2, "l_inf_dist": 0.25}}
    with pytest.raises(KeyError, match="0.weight"):
        distance_from_init(model, {})
    with pytest.raises(ValueError, match="shape"):
        distance_from_init(model, {"0.weight": torch.zeros(3, 2)})
    zero = {"0.weight": torch.zeros(2, 2)}
    assert distance_from_init(model, zero)["0"]["l2_dist"] == math.inf
