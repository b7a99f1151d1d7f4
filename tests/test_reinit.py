"""Layer re-initialisation robustness (HP §3.4) on real tiny runs: the protocol's invariants
(own weights -> zero drop, exact restore, seeds), numbers against a naive re-implementation,
the JSON/PNG outputs and the CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from PIL import Image
from torch import nn

from latentgeo.analysis import reinit
from latentgeo.build import load_run
from latentgeo.figures import axis_label, plot_reinit_heatmap, reinit_drop_matrix
from latentgeo.metrics.reinit import relative_drop
from latentgeo.runtime import load_checkpoint
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg

RUN = TINY + ["trainer.epochs=3", "trainer.snapshot_epochs=[1,3]", "metrics=none"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """resnet18 (width 8) on 8x8 synthetic data, K=10; snapshots after epochs 1 and 3."""
    path = tmp_path_factory.mktemp("reinit") / "run"
    train(compose_cfg(RUN), path)
    return path


@pytest.fixture(scope="module")
def cli_result(run_dir):
    """The default command plus --rand: sources init, epoch_0001 (not epoch_0003 = trained)."""
    last = run_dir / "checkpoints" / "last.pt"
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    assert reinit.main([str(run_dir), "--rand", "--device", "cpu"]) == 0
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before  # never writes weights
    return json.loads((run_dir / "reinit.json").read_text())


def naive_accuracy(model: nn.Module, batches) -> float:
    model.eval()
    hits = total = 0
    with torch.no_grad():
        for x, y in batches:
            hits += (model(x)[0].argmax(1) == y).sum().item()
            total += len(y)
    return hits / total


def test_default_sources_and_layers(run_dir, cli_result):
    run = load_run(run_dir, "last", "cpu")
    assert run.epoch == 3 and run.run.state == "ok"
    assert set(cli_result["sources"]) == {"init", "epoch_0001", "rand"}  # not epoch_0003
    convs = [name for name, m in run.model.named_modules() if isinstance(m, nn.Conv2d)]
    pointwise = [name for name, m in run.model.named_modules()
                 if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert pointwise  # resnet18's shortcut convs: HP skips 1x1 convs
    assert cli_result["layers"] == [name for name in convs if name not in pointwise]
    for values in cli_result["sources"].values():
        assert len(values) == len(cli_result["layers"])
    for source, values in cli_result["top5"].items():  # K=10: top-5 >= top-1 cell by cell
        assert all(t5 >= t1 for t5, t1 in zip(values, cli_result["sources"][source]))
    assert cli_result["baseline"]["top5"] >= cli_result["baseline"]["top1"]


def test_conv_plus_linear_adds_the_head(run_dir):
    run = load_run(run_dir, "last", "cpu")
    conv = reinit.reinit_layer_names(run.model, "conv")
    both = reinit.reinit_layer_names(run.model, "conv+linear")
    assert both == conv + ["head.penultimate.0", "head.output.0"]  # bin_enc head, module order
    with pytest.raises(ValueError, match="conv\\+linear"):
        reinit.reinit_layer_names(run.model, "linear")


def test_own_weights_give_zero_drop(run_dir, cli_result, capsys):
    # CLI: the epoch-3 snapshot is the trained model itself; its row is added to the others
    assert reinit.main([str(run_dir), "--from", "epoch_0003"]) == 0
    result = json.loads((run_dir / "reinit.json").read_text())
    baseline = result["baseline"]
    assert result["sources"]["epoch_0003"] == [baseline["top1"]] * len(result["layers"])
    assert result["top5"]["epoch_0003"] == [baseline["top5"]] * len(result["layers"])
    assert set(result["sources"]) == {*cli_result["sources"], "epoch_0003"}
    assert result["rand_seed"] == cli_result["rand_seed"]  # its rand row is kept
    # other layers cannot be added to the same table: refused, the file left as it was
    assert reinit.main([str(run_dir), "--from", "epoch_0003", "--layers", "conv+linear"]) == 2
    assert "--layers=conv+linear" in capsys.readouterr().err
    assert json.loads((run_dir / "reinit.json").read_text()) == result
    # function level, from a copy of the model's own state_dict
    run = load_run(run_dir, "last", "cpu")
    own = {k: v.clone() for k, v in run.model.state_dict().items()}
    out = reinit.reinit_robustness(run.model, run.loaders.eval["test"].epoch, {"own": own},
                                   reinit.reinit_layer_names(run.model), run.num_classes)
    assert set(out["sources"]["own"]) == {out["baseline"]["top1"]}


def test_init_drops_and_matches_a_naive_reinit(run_dir, cli_result):
    baseline = cli_result["baseline"]["top1"]
    assert baseline > 0.5  # a trained model, far above chance (0.1)
    assert min(cli_result["sources"]["init"]) < baseline
    # recompute two cells by hand: copy the layer from init.pt into a fresh model, evaluate
    run = load_run(run_dir, "last", "cpu")
    init = load_checkpoint(run_dir / "checkpoints" / "init.pt", torch.device("cpu"))["model"]
    for column in (0, len(cli_result["layers"]) - 1):  # the stem conv (it has a bias) and last
        layer = cli_result["layers"][column]
        model = load_run(run_dir, "last", "cpu").model
        state = model.state_dict()
        for key in (f"{layer}.weight", f"{layer}.bias"):
            if key in state:
                state[key] = init[key]
        model.load_state_dict(state)
        accuracy = naive_accuracy(model, run.loaders.eval["test"].epoch())
        assert accuracy == cli_result["sources"]["init"][column]
    assert "backbone.stem.0.bias" in init  # the first cell exercised the bias too


def test_model_is_restored_exactly(run_dir):
    run = load_run(run_dir, "last", "cpu")
    model = run.model.train()  # mode must come back too; BN stats must not move in eval
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parameters = [id(p) for p in model.parameters()]
    sources, seed = reinit.gather_sources(run.cfg, run_dir / "checkpoints", run.data.input_shape,
                                          run.num_classes, run.device, rand=True)
    layers = reinit.reinit_layer_names(model, "conv+linear")
    result = reinit.reinit_robustness(model, run.loaders.eval["test"].epoch, sources, layers,
                                      run.num_classes, seed)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert any("running_var" in k for k in after) and any("num_batches" in k for k in after)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert [id(p) for p in model.parameters()] == parameters
    assert model.training
    assert min(result["sources"]["rand"]) < result["baseline"]["top1"]  # it did reinitialise


def test_restore_after_an_error(run_dir):
    run = load_run(run_dir, "last", "cpu")
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    layer = reinit.reinit_layer_names(run.model)[0]
    zeros = {k: torch.zeros_like(v) for k, v in before.items()}
    with pytest.raises(RuntimeError, match="boom"), reinit.reinitialised(run.model, layer, zeros):
        assert torch.count_nonzero(run.model.get_submodule(layer).weight) == 0
        raise RuntimeError("boom")
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_rand_uses_another_seed_than_the_run(run_dir, cli_result):
    run = load_run(run_dir, "last", "cpu")
    assert run.cfg.trainer.seed == 0
    assert cli_result["rand_seed"] == reinit.default_rand_seed(0) != 0
    init = load_checkpoint(run_dir / "checkpoints" / "init.pt", torch.device("cpu"))["model"]
    fresh = reinit.random_init_state(run.cfg, run.data.input_shape, run.num_classes,
                                     cli_result["rand_seed"])
    for layer in cli_result["layers"]:
        assert not torch.equal(fresh[f"{layer}.weight"], init[f"{layer}.weight"]), layer
    # why the run's own seed is refused: it reproduces init.pt exactly
    same = reinit.random_init_state(run.cfg, run.data.input_shape, run.num_classes, 0)
    assert all(torch.equal(same[k], init[k]) for k in init)
    rng = torch.get_rng_state()
    reinit.random_init_state(run.cfg, run.data.input_shape, run.num_classes, 5)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone


def test_seed_option(run_dir, capsys):
    assert reinit.main([str(run_dir), "--rand", "--seed", "0", "--from", "init"]) == 2
    assert "trainer.seed" in capsys.readouterr().err
    assert reinit.main([str(run_dir), "--rand", "--seed", "7", "--from", "init"]) == 0
    assert "x 2 sources (init, rand)" in capsys.readouterr().out
    result = json.loads((run_dir / "reinit.json").read_text())
    assert result["rand_seed"] == 7 and {"init", "rand"} <= set(result["sources"])


def test_errors(run_dir, tmp_path, capsys):
    assert reinit.main([str(run_dir), "--from", "epoch_0002"]) == 2
    err = capsys.readouterr().err
    assert "epoch_0002" in err and "epoch_0001" in err  # names the bad and the available
    assert reinit.main([str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert reinit.main([str(run_dir), "--device", "cuda"]) == 2
        assert "--device cpu" in capsys.readouterr().err


def test_top5_absent_below_five_classes(tmp_path):
    path = tmp_path / "k4"
    train(compose_cfg(TINY + ["dataset.num_classes=4", "trainer.epochs=1", "metrics=none"]),
          path)
    assert reinit.main([str(path), "--rand"]) == 0
    result = json.loads((path / "reinit.json").read_text())
    assert "top5" not in result and result["baseline"]["top5"] is None
    assert set(result["sources"]) == {"init", "rand"}


def test_events_flatten_every_cell(cli_result):
    events = reinit.reinit_events(cli_result)
    assert len(events) == len(cli_result["sources"]) * len(cli_result["layers"])
    layer = cli_result["layers"][2]
    assert events[f"reinit/init/{layer}"] == cli_result["sources"]["init"][2]


def test_heatmap_png_and_data(run_dir, cli_result, tmp_path):
    png = run_dir / "reinit.png"
    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 400 <= width <= 4000 and 250 <= height <= 2000
    sources, layers, drop = reinit_drop_matrix(cli_result)
    assert sources == ["init", "epoch_0001", "rand"]  # training order, not the JSON's sorted keys
    assert layers == cli_result["layers"] and drop.shape == (3, len(layers))
    baseline = cli_result["baseline"]["top1"]
    for row, source in enumerate(sources):
        for column, accuracy in enumerate(cli_result["sources"][source]):
            assert drop[row, column] == pytest.approx((baseline - accuracy) / baseline)
    fig = plot_reinit_heatmap(cli_result, tmp_path / "again.png")
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (3, len(layers))  # one row per source
    assert [t.get_text() for t in ax.get_yticklabels()] == sources
    assert [t.get_text() for t in ax.get_xticklabels()] == [axis_label(n) for n in layers]
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    assert relative_drop(0.0, 0.5) != relative_drop(0.0, 0.5)  # NaN, no division by zero
