"""Parity with the predecessors, found in review (issue 18): ReLU_α's ν schedule as seed 004,
the ReLU_α presets, DIB's V-minimality epochs and ConvNeXt's b = 0, the removed
``lr_find.slope=lr``, and BE-dev's alternative compression penalties (``head.penalty``)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from latentgeo import loop
from latentgeo.analysis import dib
from latentgeo.analysis import lr_find as lf
from latentgeo.checks import validate
from latentgeo.config import (
    ActivationConfig,
    ConfigError,
    LRFindConfig,
    to_typed,
)
from latentgeo.models import build_model
from latentgeo.models.relu_alpha import ReLUAlpha
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg
from tests.test_lr_find import linear_model, regression_problem, sgd, squared_error

# ---------------------------------------------------------------------------- ReLU_α, seed 004


class NotebookNonLinearity(nn.Module):
    """Seed 004's ``CustomNonLinearity`` verbatim in substance: every training forward first
    raises ν by 0.01, then α = σ((σ(γ) − ½)·ν), output x + α·ReLU(−x)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("nu", torch.tensor(0.0))

    def forward(self, x):
        if self.training:
            self.nu += 0.01
        alpha = torch.sigmoid((torch.sigmoid(self.gamma) - 0.5) * self.nu)
        return x + alpha * nn.functional.relu(-x)


def two_sites(site: type) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), site(), nn.Linear(5, 5), site(), nn.Linear(5, 3))
    return model


def test_anneal_steps_use_the_notebooks_nu_bit_for_bit():
    """Step t trains with ν = 0.01·t (the notebook raises ν before computing α), so γ gets a
    gradient from the first step, and γ, ν and the outputs follow the notebook exactly."""
    notebook = two_sites(NotebookNonLinearity)
    ours = two_sites(lambda: ReLUAlpha(1, granularity="layer", mode="anneal"))
    ours.load_state_dict(notebook.state_dict())
    hooks = loop.ReluAlphaHooks(ActivationConfig(mode="anneal", nu_step=0.01), ours)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (notebook, ours)]
    generator = torch.Generator().manual_seed(1)
    for step in range(1, 31):
        x, y = torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,),
                                                                      generator=generator)
        for model, optimizer in zip((notebook, ours), optimizers):
            model.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if step == 1:  # ν = 0 would leave γ without a gradient (the old behaviour)
                assert model[1].gamma.grad.abs().item() > 0
            optimizer.step()
        hooks.after_step()
        for a, b in zip(notebook.state_dict().values(), ours.state_dict().values()):
            assert torch.equal(a, b), step
    assert ours[1].nu.item() == pytest.approx(0.3, abs=1e-6)
    # an evaluation sees the ν of the last step; it never moves ν
    probe = torch.randn(4, 6, generator=generator)
    notebook.eval(), ours.eval()
    assert torch.equal(notebook(probe), ours(probe))
    assert torch.equal(ours[1].nu, notebook[1].nu)


def test_step_increment_only_affects_training_forwards():
    site = ReLUAlpha(3, granularity="channel", mode="anneal", init_nu=2.0)
    with torch.no_grad():
        site.gamma.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    model = nn.Sequential(site)
    loop.ReluAlphaHooks(ActivationConfig(mode="anneal", nu_step=0.5), model)
    x = -torch.ones(2, 3)
    expected = torch.sigmoid((torch.sigmoid(site.gamma) - 0.5) * 2.5)
    torch.testing.assert_close(model.train()(x), x + expected)  # ν + the step's increment
    torch.testing.assert_close(site.alpha(), torch.sigmoid((torch.sigmoid(site.gamma) - 0.5) * 2))
    eval_alpha = torch.sigmoid((torch.sigmoid(site.gamma) - 0.5) * 2.0)
    torch.testing.assert_close(model.eval()(x), x + eval_alpha)
    assert site.nu.item() == 2.0 and "0.step_nu" not in model.state_dict()
    # penalty sites are untouched
    penalty = ReLUAlpha(1)
    loop.ReluAlphaHooks(ActivationConfig(mode="penalty"), nn.Sequential(penalty))
    assert penalty.step_nu == 0.0
    # a DIB decoder (a reset copy of the trained model) trains with plain ν
    cfg = to_typed(compose_cfg(["model=cnn3", "model.width=4", "model.activation=relu_alpha",
                                "activation.mode=anneal", "head=no_pen"]))
    classifier = build_model(cfg, (1, 8, 8), 3)
    loop.ReluAlphaHooks(cfg.activation, classifier)
    sites = [m for m in classifier.modules() if isinstance(m, ReLUAlpha)]
    assert sites and all(m.step_nu == 0.01 for m in sites)
    decoder = dib.reset_decoder(classifier, 1)
    assert all(m.step_nu == 0.0 for m in decoder.modules() if isinstance(m, ReLUAlpha))


def test_relu_alpha_presets_are_the_notebook_and_its_offline_variant():
    faithful = to_typed(compose_cfg(["experiment=relu_alpha"]))
    offline = to_typed(compose_cfg(["experiment=relu_alpha_fashion_mnist"]))
    for cfg in (faithful, offline):
        assert (cfg.model.name, cfg.model.activation, cfg.head.name) == ("cnn3", "relu_alpha",
                                                                          "no_pen")
        assert (cfg.activation.granularity, cfg.activation.mode) == ("layer", "anneal")
        assert cfg.activation.nu_step == 0.01
        assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("adam",
                                                                                      1e-3, 0)
        assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (10, 64)
        # the notebook: random_split(fullset, [0.8, 0.2]), ToTensor only
        assert (cfg.dataset.val_split, cfg.dataset.stratified) == (0.2, False)
        assert cfg.dataset.augment is False
    assert faithful.dataset.name == "cifar10" and offline.dataset.name == "fashion_mnist"
    penalty = to_typed(compose_cfg(["experiment=relu_alpha_penalty"]))
    assert (penalty.activation.mode, penalty.dataset.name) == ("penalty", "fashion_mnist")


# ---------------------------------------------------------------------------- DIB (TH)


def test_vminimality_decoders_train_for_the_theses_50_epochs_by_default():
    assert to_typed(compose_cfg([])).metrics.dib.minimality_epochs == 50
    assert dib.build_parser().parse_args(["run"]).minimality_epochs == 50
    assert dib.build_parser().parse_args(["run"]).epochs == 20  # TH --epochs (vsuff)


def tiny_convnext():
    cfg = compose_cfg(["model=convnext_t", "model.width=8", "model.activation=gelu",
                       "head=no_pen"])
    torch.manual_seed(0)
    return build_model(cfg, (1, 32, 32), 4)


def test_convnext_block0_is_the_raw_input_and_its_decoder_holds_the_stem():
    """TH's ConvNeXt encoder is features[:2b]: empty at b = 0, so the patchify stem belongs to
    the b = 0 decoder; ResNets keep their stem in the b = 0 encoder (TH's stem + layer1..b)."""
    model = tiny_convnext().eval()
    assert dib.input_is_block0(model) and dib.static_blocks(model) == ["stem"]
    x = torch.randn(3, 1, 32, 32)
    encoder = dib.FrozenEncoder(model.backbone, input_stem=True)
    assert encoder(x, 0) is x
    assert torch.equal(encoder(x, 1), model.backbone.encode(x, 1))  # b >= 1 unchanged
    decoder = dib.reset_decoder(model, 0, keep_stem=True)
    stem = decoder.backbone.stem
    assert not isinstance(stem, nn.Identity)
    assert not torch.equal(stem[0].weight, model.backbone.stem[0].weight)  # reset
    decoders = dib.DecoderSet([decoder], 0).eval()
    torch.testing.assert_close(decoders(x)[..., 0], decoder(x)[0])  # the whole network
    # without keep_stem (every other block) the stem stays out of the decoder
    assert isinstance(dib.reset_decoder(model, 1).backbone.stem, nn.Identity)
    resnet = build_model(compose_cfg(["model=resnet18_tv", "model.width=8",
                                      "model.activation=relu"]), (1, 32, 32), 4)
    assert not dib.input_is_block0(resnet) and dib.static_blocks(resnet) == []


def test_convnext_dib_at_block0_trains_decoders_on_the_input():
    from latentgeo.data.datasets import Split

    model = tiny_convnext()
    generator = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8,
                                generator=generator), torch.arange(16) % 4)
    optimizer = copy.deepcopy(to_typed(compose_cfg(["optimizer=adam"])).optimizer)
    values = dib.dib_metrics(model, {"train": split}, torch.zeros(1), torch.ones(1), 4,
                             optimizer, ["stem"], 1, 0, minimality_epochs=1, batch_size=8)
    assert set(values) == {"dib/vsuff/stem/train", "dib/vmin/stem/train"}
    assert all(math.isfinite(v) for v in values.values())


# ---------------------------------------------------------------------------- LR range test


def test_lr_find_slope_lr_is_removed_with_a_clear_message():
    assert LRFindConfig().slope == "log_lr"
    with pytest.raises(ConfigError, match=r"optimizer.lr_find.slope='lr' is not allowed: "
                                          r"log_lr \(slope=lr was removed"):
        validate(compose_cfg(["optimizer.lr_find.slope=lr"]))
    with pytest.raises(TypeError):
        lf.lr_find(linear_model(), regression_problem()[0], sgd, squared_error, slope="lr")


def test_why_slope_lr_was_removed_it_lands_on_the_smallest_candidates():
    """d S / d lr on an exponential ramp (what the option computed) divides each slope by its
    lr: on the range test of a quadratic it picks among the first candidates, three decades
    below the steepest descent in log lr, which lies below GD's divergence threshold."""
    for batch_size in (256, 32):
        loader, lambda_max = regression_problem(batch_size)
        result = lf.lr_find(linear_model(), loader, sgd, squared_error, min_lr=1e-6,
                            max_lr=1e2, steps=100)
        lrs, smoothed = result["lrs"], result["smoothed"]
        candidates = list(range(lf.SKIP_BEGIN, len(smoothed) - lf.SKIP_END))
        by_lr = candidates[int(np.argmin(np.gradient(np.array(smoothed)[candidates],
                                                     np.array(lrs)[candidates])))]
        assert by_lr <= lf.SKIP_BEGIN + 5
        assert lrs[by_lr] < 1e-3 * result["suggestion"] < 1e-3 * 2 / lambda_max


# ---------------------------------------------------------------------------- head.penalty


def test_head_penalties_match_their_closed_forms():
    assert tuple(loop.PENALTIES) == ("mse", "exp", "l1")
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    y = torch.tensor([0, 2])
    x_pen = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    ce = -(torch.log_softmax(logits, 1)[0, 0] + torch.log_softmax(logits, 1)[1, 2]) / 2
    gamma = 0.3
    mean_square = (1 + 4 + 0.25 + 9) / 4  # 3.5625
    closed = {"mse": mean_square, "exp": math.exp(mean_square), "l1": (1 + 2 + 0.5 + 3) / 4}
    for name, value in closed.items():
        got = loop.loss_terms(logits, x_pen, y, gamma, name)
        assert got.item() == pytest.approx(ce.item() + gamma * value, rel=1e-6), name
        assert loop.loss_terms(logits, x_pen, y, None, name).item() == pytest.approx(ce.item())
    assert torch.equal(loop.loss_terms(logits, x_pen, y, gamma),
                       loop.loss_terms(logits, x_pen, y, gamma, "mse"))  # BE's default
    # gradients w.r.t. x_pen: 2x/n, exp(m)·2x/n, sign(x)/n (n = 4 entries)
    for name, grad in {"mse": 2 * x_pen / 4, "exp": math.exp(mean_square) * 2 * x_pen / 4,
                       "l1": torch.sign(x_pen) / 4}.items():
        leaf = x_pen.clone().requires_grad_(True)
        (loop.loss_terms(logits, leaf, y, 1.0, name)
         - nn.functional.cross_entropy(logits, y)).backward()
        torch.testing.assert_close(leaf.grad, grad)


def test_classifier_loss_uses_the_head_penalty():
    class Fixed(nn.Module):
        def forward(self, x):
            return x[:, :3], x[:, 3:]

    x = torch.tensor([[2.0, -1.0, 0.5, 1.0, -2.0], [0.0, 1.0, -2.0, 0.5, 3.0]])
    y = torch.tensor([0, 2])
    for name in loop.PENALTIES:
        loss, correct = loop.classifier_loss(0.3, None, name)(Fixed(), x, y)
        assert torch.equal(loss, loop.loss_terms(x[:, :3], x[:, 3:], y, 0.3, name))
        assert correct.item() == 1


def test_head_penalty_is_validated_with_key_value_and_allowed():
    assert to_typed(compose_cfg([])).head.penalty == "mse"
    validate(compose_cfg(["head.penalty=exp"]))
    with pytest.raises(ConfigError, match=r"head.penalty='huber' is not allowed: "
                                          r"one of \['mse', 'exp', 'l1'\]"):
        validate(compose_cfg(["head.penalty=huber"]))


def test_a_training_run_uses_the_configured_head_penalty(tmp_path):
    base = TINY + ["model=mlp", "model.width=null", "model.widths=[16]", "head=bin_enc",
                   "head.penultimate_nodes=4", "head.gamma_start=1.0", "trainer.epochs=1",
                   "metrics=none", "trainer.deterministic=true"]
    losses = {name: train(compose_cfg(base + [f"head.penalty={name}"]), tmp_path / name)
              ["train/running_loss"] for name in ("mse", "l1")}
    assert losses["mse"] != losses["l1"]
