"""CKA and weight spectra against their public references (torch-cka 0.21, Kornblith's
full-batch formula, weightwatcher 0.7.7; the ``parity`` extra), closed forms, and a real run.

Tolerance 1e-9 relative: both sides compute in float64 (torch-cka under a float64 default
dtype; weightwatcher's SVD and fit are float64 on the float32 weights both sides read), so the
only differences are summation orders and LAPACK rounding, ~1e-13 here.
"""

from __future__ import annotations

import importlib
import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from latentgeo import evaluate, families
from latentgeo.build import build_loaders
from latentgeo.checks import validate
from latentgeo.config import ConfigError, to_typed
from latentgeo.data import load_dataset
from latentgeo.data.tensor_loader import normalize
from latentgeo.metrics.cka import (
    centered_gram,
    full_cka_pairs,
    linear_cka,
    minibatch_cka_pairs,
    unbiased_gram,
)
from latentgeo.metrics.features import collect_features
from latentgeo.metrics.weight_spectra import (
    MIN_EIGENVALUES,
    fit_power_law,
    layer_eigenvalues,
    spectral_metrics,
    weight_spectra,
)
from latentgeo.models import build_model
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import TINY, compose_cfg

RELATIVE = 1e-9


def pinned(module: str):
    """The pinned reference, or a failure naming the extra (never a silent skip)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} is missing: the parity tests need pip install -e '.[parity]'")


def close(ours: float, reference: float, tolerance: float = RELATIVE) -> bool:
    return math.isclose(ours, reference, rel_tol=tolerance, abs_tol=1e-300)


# ---------------------------------------------------------------------------- CKA references


def kornblith_gram_linear(x: np.ndarray) -> np.ndarray:
    """google-research/representation_similarity Demo.ipynb ``gram_linear``, transcribed."""
    return x.dot(x.T)


def kornblith_center_gram(gram: np.ndarray) -> np.ndarray:
    """Demo.ipynb ``center_gram(gram, unbiased=False)``, transcribed."""
    gram = gram.copy()
    means = np.mean(gram, 0, dtype=np.float64)
    means -= np.mean(means) / 2
    gram -= means[:, None]
    gram -= means[None, :]
    return gram


def kornblith_cka(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """Demo.ipynb ``cka(gram_x, gram_y, debiased=False)``, transcribed."""
    gram_x, gram_y = kornblith_center_gram(gram_x), kornblith_center_gram(gram_y)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return float(scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def kornblith_feature_space_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Demo.ipynb ``feature_space_linear_cka(x, y, debiased=False)``, transcribed."""
    x = x - np.mean(x, 0, keepdims=True)
    y = y - np.mean(y, 0, keepdims=True)
    dot_product_similarity = np.linalg.norm(x.T.dot(y)) ** 2
    return float(dot_product_similarity
                 / (np.linalg.norm(x.T.dot(x)) * np.linalg.norm(y.T.dot(y))))


def representations(seed: int = 0, n: int = 60) -> dict[str, torch.Tensor]:
    """Correlated float64 representations of the same n inputs, as a network's layers are."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=generator, dtype=torch.float64)
    hidden = torch.tanh(x @ torch.randn(12, 30, generator=generator, dtype=torch.float64))
    conv = torch.relu(hidden @ torch.randn(30, 2 * 3 * 3, generator=generator,
                                           dtype=torch.float64)).view(n, 2, 3, 3)
    return {"x": x, "hidden": hidden, "conv": conv}


def test_full_batch_cka_equals_kornbliths_formulas():
    reps = representations()
    names = list(reps)
    pairs = [(a, b) for a in names for b in names]
    grams = {name: centered_gram(r) for name, r in reps.items()}
    ours = full_cka_pairs(grams, pairs)
    worst = 0.0
    for a, b in pairs:
        xa, xb = reps[a].flatten(1).numpy(), reps[b].flatten(1).numpy()
        gram_form = kornblith_cka(kornblith_gram_linear(xa), kornblith_gram_linear(xb))
        feature_form = kornblith_feature_space_linear_cka(xa, xb)
        assert close(ours[(a, b)], gram_form) and close(ours[(a, b)], feature_form)
        assert close(linear_cka(reps[a], reps[b]), gram_form)
        worst = max(worst, abs(ours[(a, b)] - gram_form) / gram_form)
    assert 0.2 < ours[("x", "conv")] < 0.99  # a non-trivial value was compared
    print(f"full-batch CKA vs Kornblith: largest relative deviation {worst:.1e}")


class Layers(nn.Module):
    """A fixed float64 model whose named modules torch-cka hooks."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(2, 4, 3, padding=1, dtype=torch.float64)
        self.hidden = nn.Linear(4 * 5 * 5, 16, dtype=torch.float64)
        self.out = nn.Linear(16, 6, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.out(torch.tanh(self.hidden(h.flatten(1))))


def per_batch_grams(model: nn.Module, layers: list[str], batches: list[torch.Tensor]
                    ) -> dict[str, list[torch.Tensor]]:
    grams: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: grams[name].append(unbiased_gram(out)))
        for name in layers]
    with torch.no_grad():
        for x in batches:
            model(x)
    for handle in handles:
        handle.remove()
    return grams


def test_minibatch_cka_equals_torch_cka():
    torch_cka = pinned("torch_cka")
    assert torch_cka.__version__ == "0.21"
    layers = ["conv", "hidden", "out"]
    first, second = Layers(seed=1), Layers(seed=2)
    images = torch.randn(70, 2, 5, 5, generator=torch.Generator().manual_seed(3),
                         dtype=torch.float64)
    batch_size = 16  # 70 = 4·16 + 6: torch-cka weighs the short last batch like the others
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images),
                                         batch_size=batch_size)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch-cka builds its buffers in the default dtype
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = torch_cka.CKA(first, second, "first", "second", model1_layers=layers,
                                      model2_layers=layers)
            reference.compare(loader)
        matrix = reference.export()["CKA"]
    finally:
        torch.set_default_dtype(default)
    assert matrix.dtype == torch.float64
    batches = list(images.split(batch_size))
    grams = {**{f"first/{k}": v for k, v in per_batch_grams(first, layers, batches).items()},
             **{f"second/{k}": v for k, v in per_batch_grams(second, layers, batches).items()}}
    pairs = [(f"first/{a}", f"second/{b}") for a in layers for b in layers]
    ours = minibatch_cka_pairs(grams, pairs)
    worst = 0.0
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            value, expected = ours[(f"first/{a}", f"second/{b}")], matrix[i, j].item()
            assert close(value, expected), (a, b, value, expected)
            worst = max(worst, abs(value - expected) / abs(expected))
    print(f"minibatch CKA vs torch-cka: largest relative deviation {worst:.1e}")


@pytest.mark.parametrize("minibatch", [False, True])
def test_cka_closed_forms(minibatch):
    """CKA(X, X) = 1, CKA(X, XQ) = 1 for an orthogonal Q, CKA(X, cY) = CKA(X, Y + c) =
    CKA(X, Y)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=generator, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(10, 7, generator=generator, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator, dtype=torch.float64))
    reps = {"x": x, "xq": x @ q, "y": y, "3y": 3.0 * y, "y+2": y + 2.0}
    pairs = [("x", "x"), ("x", "xq"), ("x", "y"), ("x", "3y"), ("x", "y+2")]
    if minibatch:
        grams = {k: [unbiased_gram(part) for part in v.split(16)] for k, v in reps.items()}
        values = minibatch_cka_pairs(grams, pairs)
    else:
        values = full_cka_pairs({k: centered_gram(v) for k, v in reps.items()}, pairs)
    # sums of 64² float64 products: rounding ~1e-14; 1e-12 leaves room, a wrong formula won't fit
    assert values[("x", "x")] == pytest.approx(1.0, abs=1e-12)
    assert values[("x", "xq")] == pytest.approx(1.0, abs=1e-12)
    assert values[("x", "3y")] == pytest.approx(values[("x", "y")], rel=1e-12)
    # a translation too (the unbiased estimator needs no centring): 2 against |y| < 1 costs
    # about a digit of the sums' 1e-14
    assert values[("x", "y+2")] == pytest.approx(values[("x", "y")], rel=1e-11)
    assert values[("x", "y")] < 0.99  # the invariances are not 1 by accident


def test_unbiased_estimator_needs_four_rows():
    with pytest.raises(ValueError, match="at least 4 rows, got 3"):
        unbiased_gram(torch.ones(3, 2))


# ---------------------------------------------------------------------------- weight spectra


def spectra_model() -> nn.Sequential:
    """Every path of WeightWatcher's layer treatment: convs (3×3, 1×1), a heavy-tailed linear
    layer, a small-N fit (12 eigenvalues) and a layer it skips (3 < 8 eigenvalues)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3),
                          nn.Conv2d(32, 8, 1), nn.Flatten(), nn.Linear(200, 64),
                          nn.Linear(64, 12), nn.Linear(12, 3))
    with torch.no_grad():
        model[5].weight.copy_(torch.distributions.StudentT(2.5).sample((64, 200)) * 0.05)
    return model


WW_KEYS = {"alpha": "alpha", "alpha_weighted": "alpha_weighted",
           "log_alpha_norm": "log_alpha_norm", "spectral_norm": "spectral_norm",
           "log_spectral_norm": "log_spectral_norm", "log_norm": "log_norm",
           "stable_rank": "stable_rank", "num_spikes": "num_pl_spikes", "ks_distance": "D"}


def test_weight_spectra_equal_weightwatcher():
    weightwatcher = pinned("weightwatcher")
    assert weightwatcher.__version__ == "0.7.7"
    model = spectra_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # svd_method=accurate: scipy's float64 SVD, its default unless CUDA is present
        details = weightwatcher.WeightWatcher(model=model).analyze(svd_method="accurate")
    ours = weight_spectra(model)
    assert sorted(ours) == sorted(details["longname"]) == ["0", "2", "3", "5", "6"]
    worst = 0.0
    for _, row in details.iterrows():
        for key, ww_key in WW_KEYS.items():
            value, expected = ours[row["longname"]][key], float(row[ww_key])
            assert close(value, expected), (row["longname"], key, value, expected)
            worst = max(worst, abs(value - expected) / abs(expected))
    print(f"weight spectra vs weightwatcher: largest relative deviation {worst:.1e}")


def test_spectra_of_known_singular_values():
    """A linear weight U·diag(s)·Vᵀ: λ = s²; a conv weight whose 2 slices have singular values
    s and t: λ = (s² ∪ t²)/2 (WeightWatcher's conv scaling)."""
    generator = torch.Generator().manual_seed(0)

    def with_singular_values(values: list[float], rows: int, cols: int) -> torch.Tensor:
        u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=generator, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=generator, dtype=torch.float64))
        return u[:, :len(values)] @ torch.diag(torch.tensor(values, dtype=torch.float64)) \
            @ v[:, :len(values)].T

    s = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.1]
    linear = spectral_metrics(layer_eigenvalues(with_singular_values(s, 12, 10)))
    squares = [value**2 for value in s]
    assert linear["spectral_norm"] == pytest.approx(25.0, rel=1e-12)
    assert linear["log_spectral_norm"] == pytest.approx(math.log10(25.0), rel=1e-12)
    assert linear["stable_rank"] == pytest.approx(sum(squares) / 25.0, rel=1e-12)
    assert linear["log_norm"] == pytest.approx(math.log10(sum(squares)), rel=1e-12)
    t = [3.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    conv = torch.stack([with_singular_values(s[:8], 8, 8), with_singular_values(t, 8, 8)],
                       dim=-1).unsqueeze(-1)  # [out, in, 2, 1]
    eigenvalues = layer_eigenvalues(conv)
    expected = sorted(value**2 / 2 for value in s[:8] + t)
    np.testing.assert_allclose(eigenvalues, expected, rtol=1e-12)
    metrics = spectral_metrics(eigenvalues)
    assert metrics["spectral_norm"] == pytest.approx(12.5, rel=1e-12)
    assert metrics["stable_rank"] == pytest.approx(sum(expected) / 12.5, rel=1e-12)


@pytest.mark.parametrize("alpha", [2.0, 3.5])
def test_power_law_exponent_is_recovered(alpha):
    """Pareto samples x = u^(−1/(α−1)) (density ∝ x^−α on x ≥ 1): the fit's α is within 4
    standard errors (α̂−1)/√n_tail of the truth (the MLE's asymptotic error, Clauset et al.
    2009 Eq. 3.2), for fixed seeds."""
    generator = np.random.default_rng(0)
    samples = (1.0 - generator.random(4000)) ** (-1.0 / (alpha - 1.0))
    fit = fit_power_law(samples)
    assert fit is not None
    tail = int(np.count_nonzero(samples >= fit.xmin))
    standard_error = (fit.alpha - 1) / math.sqrt(tail)
    assert tail > 200  # a tail to speak of, not a few outliers
    assert abs(fit.alpha - alpha) < 4 * standard_error, (fit.alpha, standard_error, tail)


def test_layers_with_too_few_eigenvalues_are_skipped():
    model = nn.Sequential(nn.Linear(10, MIN_EIGENVALUES - 1), nn.Linear(9, MIN_EIGENVALUES))
    assert sorted(weight_spectra(model)) == ["1"]


# ---------------------------------------------------------------------------- the family


@pytest.mark.parametrize("batch_size", [None, 24])
def test_the_family_pairs_the_right_representations(batch_size):
    """The family's values equal a direct computation on the same fixed sample: the trained
    model's block outputs and x_pen from ``collect_features``, the same layers of a model
    holding ``init_state``; the trained model is left as it was."""
    overrides = [*TINY, "model=cnn3", "model.width=4", "metrics.cka.samples=100",
                 f"metrics.cka.batch_size={'null' if batch_size is None else batch_size}"]
    cfg = to_typed(compose_cfg(overrides))
    data = load_dataset(cfg.dataset)
    torch.manual_seed(0)
    model = build_model(cfg, data.input_shape, data.num_classes)
    init_state = {k: v.clone() for k, v in build_model(cfg, data.input_shape,
                                                       data.num_classes).state_dict().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaders = build_loaders(cfg, data, torch.device("cpu"))
    point = families.Point(cfg, model, 1, False, data, loaders, init_state=init_state)
    values = families.FAMILIES["cka"].compute(point)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    initial = build_model(cfg, data.input_shape, data.num_classes)
    initial.load_state_dict(init_state)
    blocks = model.backbone.block_names
    index = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(
        cfg.metrics.seed))[:100].sort().values
    images = normalize(data.test.x[index], data.mean, data.std)
    # the family's batches: a forward pass rounds differently with another batch size
    size = batch_size or cfg.trainer.eval_batch_size
    batches = list(zip(images.split(size), data.test.y[index].split(size), strict=True))
    reps = {}
    for prefix, net in (("", model), ("init:", initial)):
        features = collect_features(net, batches, block_names=blocks)
        reps.update({f"{prefix}{k}": v for k, v in features.blocks.items()})
        reps[f"{prefix}penultimate"] = features.x_pen
    layers = [*blocks, "penultimate"]
    expected = {f"{a}/{b}": (a, b) for i, a in enumerate(layers) for b in layers[i + 1:]}
    expected.update({f"{layer}/init": (layer, f"init:{layer}") for layer in layers})
    assert {k for k in values if k.startswith("test/")} == {f"test/cka/{k}" for k in expected}
    for name, (a, b) in expected.items():
        if batch_size is None:
            direct = linear_cka(reps[a], reps[b])
        else:  # 100 = 4·24 + 4: the last batch of 4 rows is kept
            grams = {k: [unbiased_gram(part) for part in reps[k].split(batch_size)]
                     for k in (a, b)}
            direct = minibatch_cka_pairs(grams, [(a, b)])[(a, b)]
        assert close(values[f"test/cka/{name}"], direct), name
    assert values["test/cka/penultimate/init"] < 0.99  # two different weight draws


# ---------------------------------------------------------------------------- a real run


def test_a_run_records_both_families_and_evaluate_recomputes_them(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_cfg(TINY + ["trainer.epochs=2", "metrics.every=2",
                              "metrics.cka.when=init+every", "metrics.cka.samples=100",
                              "metrics.weight_spectra.when=every", "trainer.deterministic=true",
                              "head.penultimate_nodes=16"])  # head layers of >= 8 eigenvalues
    train(cfg, run_dir)
    events = RunDir(run_dir).events()
    first, last = events[0], events[-1]
    assert first["epoch"] == 0 and last["epoch"] == 2
    layers = ["layer1", "layer2", "layer3", "layer4", "penultimate"]
    pairs = {f"{a}/{b}" for i, a in enumerate(layers) for b in layers[i + 1:]}
    expected = {f"{split}/cka/{name}" for split in ("train", "test")
                for name in pairs | {f"{layer}/init" for layer in layers}}
    assert {k for k in last if "/cka/" in k} == expected
    for layer in layers:  # epoch 0 compares the initial weights with themselves
        assert first[f"test/cka/{layer}/init"] == pytest.approx(1.0, abs=1e-9)
    assert all(0 <= last[k] <= 1 + 1e-9 for k in expected)
    assert last["test/cka/penultimate/init"] < 0.99  # training moved x_pen
    spectra = {k for k in last if k.startswith("weight_spectra/")}
    assert "weight_spectra/backbone.stem.0/alpha" in spectra
    assert "weight_spectra/head.output.0/stable_rank" in spectra
    assert "weight_spectra/head.penultimate.0/alpha" in spectra
    assert not any(k.startswith("weight_spectra/") for k in first)  # not scheduled at init
    # post hoc: the same names and values from the last checkpoint
    assert evaluate.main([str(run_dir), "metrics.cka.when=every",
                          "metrics.weight_spectra.when=every"]) == 0
    values = RunDir(run_dir).evaluations()["last"]
    for key in expected | spectra:
        assert values[key] == pytest.approx(last[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("metrics.cka.samples", 3, "null (the whole split) or >= 4"),
    ("metrics.cka.batch_size", 2, "null (full-batch CKA) or >= 4"),
])
def test_bad_cka_settings_are_refused_naming_the_key(key, value, allowed):
    with pytest.raises(ConfigError, match=re.escape(f"{key}={value} is not allowed: {allowed}")):
        validate(compose_cfg([f"{key}={value}"]))
