"""Folding linear ReLU_α sites (docs/definitions.md §4.2): the folded list and the accuracies
against a
hand-folded reference, the CLI on a real tiny run with hand-set α, and the α-trajectory plot."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from PIL import Image
from torch import nn

from latentgeo.analysis import linearize as lin
from latentgeo.build import load_run
from latentgeo.config import TrainConfig
from latentgeo.figures import plot_alpha_trajectories
from latentgeo.models import build_model
from latentgeo.models.relu_alpha import ReLUAlpha, relu_alpha_modules
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg

HAS_ACTIVATION_NODE = "activation" in {f.name for f in dataclasses.fields(TrainConfig)}
RELU_ALPHA = TINY + ["model=cnn3", "model.width=8", "model.activation=relu_alpha",
                     "activation.granularity=channel", "head=no_pen", "metrics=none"]
SITES = ["backbone.blocks.block1.2", "backbone.blocks.block2.2", "backbone.blocks.block3.2"]


def set_alphas(model: nn.Module, values: dict[str, list[float]]) -> None:
    """Hand-set α per site (penalty mode: α = raw_alpha in [0, 1])."""
    with torch.no_grad():
        for name, module in relu_alpha_modules(model):
            module.raw_alpha.copy_(torch.tensor(values[name]))


def hand_set(width: int = 8) -> dict[str, list[float]]:
    """block1: exactly linear; block2: nearly linear (0.03); block3: one channel keeps ReLU."""
    return {SITES[0]: [0.0] * width, SITES[1]: [0.03] * width,
            SITES[2]: [0.0] * (width - 1) + [0.5]}


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 32):
    return lambda: [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def hand_fold(model: nn.Module, names: list[str]) -> nn.Module:
    """The reference: a copy with the named sites swapped for nn.Identity by hand."""
    folded = copy.deepcopy(model)
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(folded.get_submodule(parent), child, nn.Identity())
    return folded


def accuracy_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x)[0].argmax(1) == y).double().mean().item()


@pytest.fixture
def model_and_data():
    torch.manual_seed(0)
    model = build_model(compose_cfg(RELU_ALPHA), (3, 8, 8), 4).eval()
    for module in model.modules():  # non-trivial BN statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
    set_alphas(model, hand_set())
    x = torch.randn(96, 3, 8, 8)
    with torch.no_grad():
        y = model(x)[0].argmax(1)
    y[::3] = torch.randint(0, 4, (32,))  # accuracy before is neither 0 nor 1
    return model, x, y


def test_folds_sites_below_threshold_on_every_channel(model_and_data):
    model, x, y = model_and_data
    reference = copy.deepcopy(model)
    result = lin.linearize(model, batches(x, y), threshold=0.05)
    assert result["folded"] == SITES[:2]  # block3 has one channel at 0.5
    assert result["threshold"] == 0.05
    assert result["alphas"] == pytest.approx({SITES[0]: 0.0, SITES[1]: 0.03,
                                              SITES[2]: 0.5 / 8})
    assert result["alpha_max"] == pytest.approx({SITES[0]: 0.0, SITES[1]: 0.03, SITES[2]: 0.5})
    assert result["accuracy_before"] == accuracy_of(reference, x, y)
    assert 0 < result["accuracy_before"] < 1
    expected = hand_fold(reference, SITES[:2])
    assert result["accuracy_after"] == accuracy_of(expected, x, y)
    assert [type(model.get_submodule(s)) for s in SITES] == [nn.Identity, nn.Identity, ReLUAlpha]
    with torch.no_grad():
        assert torch.equal(model(x)[0], expected(x)[0])


def test_threshold_decides_and_alpha_zero_is_exact(model_and_data):
    model, x, y = model_and_data
    with torch.no_grad():
        logits = model(x)[0]
    result = lin.linearize(model, batches(x, y), threshold=0.0)
    assert result["folded"] == SITES[:1]  # only the exact identity; 0.03 > 0
    assert result["accuracy_after"] == result["accuracy_before"]
    with torch.no_grad():
        assert torch.equal(model(x)[0], logits)  # α = 0 folds bit for bit
    assert lin.linearize(model, batches(x, y), threshold=0.6)["folded"] == SITES[1:]


def test_rejects_models_without_relu_alpha_and_bad_thresholds(model_and_data):
    model, x, y = model_and_data
    plain = build_model(compose_cfg(TINY + ["model=cnn3", "model.width=8", "head=no_pen"]),
                        (3, 8, 8), 4)
    with pytest.raises(ValueError, match="no ReLU_α"):
        lin.linearize(plain, batches(x, y))
    with pytest.raises(ValueError, match="threshold"):
        lin.linearize(model, batches(x, y), threshold=1.5)


@pytest.mark.skipif(not HAS_ACTIVATION_NODE,
                    reason="latentgeo.config.TrainConfig has no `activation` node yet")
def test_cli_on_a_tiny_relu_alpha_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(compose_cfg(RELU_ALPHA + ["dataset.num_classes=4"]), run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    checkpoint = torch.load(last, weights_only=True)
    for site, values in hand_set().items():
        checkpoint["model"][f"{site}.raw_alpha"] = torch.tensor(values)
    torch.save(checkpoint, last)

    assert lin.main([str(run_dir), "--threshold", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "2/3 sites folded" in out and SITES[2] in out
    result = json.loads((run_dir / "linearize.json").read_text())
    assert result["folded"] == SITES[:2] and result["threshold"] == 0.05
    assert result["alphas"][SITES[1]] == pytest.approx(0.03)
    # the same accuracies from a plain forward over the run's test split

    run = load_run(run_dir, "last", "cpu")
    x, y = (torch.cat(parts) for parts in zip(*run.loaders.eval["test"].epoch()))
    assert result["accuracy_before"] == pytest.approx(accuracy_of(run.model, x, y), abs=1e-12)
    folded = hand_fold(run.model, SITES[:2])
    assert result["accuracy_after"] == pytest.approx(accuracy_of(folded, x, y), abs=1e-12)
    assert torch.load(last, weights_only=True)["model"].keys() == checkpoint["model"].keys()


def test_cli_refuses_a_run_without_relu_alpha(tmp_path, capsys):
    run_dir = tmp_path / "relu"
    train(compose_cfg(TINY + ["model=cnn3", "model.width=8", "trainer.epochs=1",
                              "metrics=none"]), run_dir)
    assert lin.main([str(run_dir)]) == 2
    assert "no ReLU_α" in capsys.readouterr().err
    assert not (run_dir / "linearize.json").exists()


def test_alpha_trajectory_plot(tmp_path):
    alpha_json = {
        "layer_site": {"epochs": [1, 2, 3], "mean": [1.0, 0.6, 0.2]},
        "channel_site": {"epochs": [1, 2, 3], "mean": [0.9, 0.5, 0.4], "min": [0.8, 0.3, 0.1],
                         "max": [1.0, 0.7, 0.6], "std": [0.1, 0.2, 0.2]},
    }
    fig = plot_alpha_trajectories(alpha_json, tmp_path / "alpha.png")
    with Image.open(tmp_path / "alpha.png") as image:
        assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 200
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["layer_site", "channel_site"]
    assert list(ax.lines[1].get_ydata()) == [0.9, 0.5, 0.4]
    assert len(ax.collections) == 1  # one min–max band: the channel site's
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.1) and band.max() == pytest.approx(1.0)
    assert plot_alpha_trajectories({}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(ValueError, match="layer_site"):
        plot_alpha_trajectories({"layer_site": {"epochs": [1, 2], "mean": [1.0]}},
                                tmp_path / "bad.png")
