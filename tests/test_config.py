"""Compose every option of every config group and build what it describes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from latentgeo import families
from latentgeo.build import check_data, resolve_device
from latentgeo.checks import validate
from latentgeo.config import ConfigError, comparable, to_container, to_typed, upgrade
from latentgeo.data import DATASETS, load_dataset
from latentgeo.loop import build_optimizer, lr_factor
from latentgeo.models import MODELS, build_model
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_registered_model_and_dataset_has_a_yaml_and_vice_versa():
    assert set(options("model")) == set(MODELS)
    assert set(options("dataset")) == set(DATASETS)


# small input shapes per model family so that building + one forward stays cheap
def _input_shape(model: str) -> tuple[int, int, int]:
    return (3, 32, 32) if model.startswith(("vgg", "convnext", "resnet18_tv")) else (1, 28, 28)


@pytest.mark.parametrize("model", options("model"))
def test_every_model_option_composes_and_runs_forward(model):
    width = {"mlp": "null", "lenet": "null"}.get(model, "8")
    cfg = compose_cfg([f"model={model}", f"model.width={width}", "head=bin_enc"])
    validate(cfg)
    net = build_model(cfg, _input_shape(model), 10).eval()
    logits, x_pen = net(torch.randn(2, *_input_shape(model)))
    assert logits.shape == (2, 10) and x_pen.shape == (2, 6)


OFFLINE_DATA = ("digits", "synthetic", "szt_synthetic")
# when each metrics option runs each family, at the last epoch (data families) — the yaml's
# `when`s seen through the registry
DUE_AT_LAST = {
    "none": {"accuracy", "alpha"},
    "default": {"accuracy", "collapse", "binarity", "same_encoding", "mahalanobis",
                "perturbation", "ood", "hyperplanes", "alpha"},
    "binenc": {"accuracy", "collapse", "binarity", "same_encoding", "mahalanobis",
               "perturbation", "ood", "alpha", "penultimate"},
    "all": {"accuracy", "collapse", "binarity", "same_encoding", "mahalanobis", "perturbation",
            "ood", "nc1", "hyperplanes", "alpha", "penultimate", "cka", "weight_spectra",
            "neural_collapse", "effective_rank", "intrinsic_dimension"},
}


def built_model(cfg) -> torch.nn.Module:
    channels = cfg.dataset.channels if cfg.dataset.name in OFFLINE_DATA else 3
    shape = (channels, 32, 32)
    net = build_model(to_typed(cfg), shape, 10).eval()
    logits, _ = net(torch.randn(2, *shape))
    assert logits.shape == (2, 10)
    return net


@pytest.mark.parametrize("option", options("head"))
def test_every_head_composes_and_builds(option):
    cfg = compose_cfg([f"head={option}", "model=mlp", "model.widths=[8]"])
    validate(cfg)
    net = built_model(cfg)
    assert cfg.head.name == option == net.head.name
    _, x_pen = net(torch.randn(3, 3, 32, 32))
    assert x_pen.shape == (3, 8 if option == "no_pen" else cfg.head.penultimate_nodes)


@pytest.mark.parametrize("option", options("dataset"))
def test_every_dataset_composes_and_the_offline_ones_load(option):
    cfg = compose_cfg([f"dataset={option}", "dataset.train_size=64", "dataset.test_size=32"])
    validate(cfg)
    assert cfg.dataset.name == option
    if option in OFFLINE_DATA:
        data = load_dataset(cfg.dataset)
        assert data.name == option and len(data.test) > 0
        assert int(data.train.y.max()) < data.num_classes <= 10
        assert data.train.x.dtype == torch.uint8 and data.train.x.shape[1] == data.mean.numel()


@pytest.mark.parametrize("option", options("optimizer"))
def test_every_optimizer_composes_and_builds_with_its_settings(option):
    cfg = to_typed(compose_cfg([f"optimizer={option}", "model=mlp", "model.widths=[8]"]))
    optimizer = build_optimizer(cfg.optimizer, built_model(cfg))
    assert type(optimizer).__name__.lower() == option
    assert [g["name"] for g in optimizer.param_groups] == ["body", "output"]
    assert optimizer.defaults["weight_decay"] == cfg.optimizer.weight_decay
    assert optimizer.defaults["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize("option", options("schedule"))
def test_every_schedule_composes_and_starts_at_the_base_lr(option):
    cfg = to_typed(compose_cfg([f"schedule={option}"]))
    assert cfg.schedule.name == option
    assert lr_factor(1, cfg.schedule, cfg.trainer.epochs) == 1.0
    assert 0 <= lr_factor(cfg.trainer.epochs, cfg.schedule, cfg.trainer.epochs) <= 1.0


@pytest.mark.parametrize("option", options("metrics"))
def test_every_metrics_option_schedules_the_families_it_says(option):
    cfg = to_typed(compose_cfg([f"metrics={option}", "metrics.ood.dataset=digits"]))
    validate(cfg)
    last = {f.name for f in families.due(cfg, cfg.trainer.epochs, last=True)}
    assert last == DUE_AT_LAST[option]
    init = {f.name for f in families.due(cfg, 0, last=False)}
    assert init == ({"hyperplanes"} if "hyperplanes" in last else set())


@pytest.mark.parametrize("option", options("logger") + options("trainer"))
def test_every_logger_and_trainer_option_composes(option):
    group = "logger" if option in options("logger") else "trainer"
    cfg = to_typed(compose_cfg([f"{group}={option}"]))
    validate(cfg)
    if group == "logger":
        assert cfg.logger.name == option
    elif cfg.trainer.device == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.device='cuda'.*CUDA is not available"):
            resolve_device(cfg.trainer.device)
    else:
        assert resolve_device(cfg.trainer.device).type in ("cpu", "cuda")


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_composes_validates_and_builds(option):
    cfg = compose_cfg([f"experiment={option}"])
    validate(cfg)
    built_model(cfg)


TOY_SHAPES = {"cifar10": (3, 32), "cifar100": (3, 32), "fashion_mnist": (1, 28), "mnist": (1, 28)}


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_runs_at_toy_scale(option, tmp_path):
    """The preset's model, head, activation, optimizer, schedule and metrics for two epochs on
    128 synthetic images of its data set's shape (its own data sets are not offline)."""
    preset = compose_cfg([f"experiment={option}"])
    name = preset.dataset.name
    channels, size = ((preset.dataset.channels, preset.dataset.image_size) if name == "digits"
                      else TOY_SHAPES[name])
    cfg = compose_cfg([f"experiment={option}", "dataset=synthetic", f"dataset.channels={channels}",
                       f"dataset.image_size={size}", "dataset.train_size=128",
                       "dataset.test_size=64", "dataset.train_subset.size_per_class=null",
                       "trainer.epochs=2", "metrics.every=1", "metrics.perturbation.samples=8",
                       "logger=local", "trainer.progress=false"])
    summary = train(cfg, tmp_path)
    run = RunDir(tmp_path)
    assert run.state == "ok" and [e["epoch"] for e in run.events()][-2:] == [1, 2]
    assert 0 <= summary["test/accuracy"] <= 1 and summary["epochs"] == 2
    recorded = run.flat_config()
    for key in ("model.name", "model.activation", "head.name", "optimizer.name", "optimizer.lr",
                "schedule.name", "trainer.batch_size"):
        assert recorded[key] == OmegaConf.select(preset, key), key
    if preset.model.activation == "relu_alpha":
        assert run.artifact("alpha").is_file()


@pytest.mark.parametrize("option", options("corruption"))
def test_every_corruption_sets_what_its_name_says_and_applies(option):
    data_args = ["dataset=synthetic", "dataset.train_size=400", "dataset.test_size=50"]
    cfg = compose_cfg([f"+corruption={option}", *data_args])
    clean = load_dataset(compose_cfg(data_args).dataset)
    data = load_dataset(cfg.dataset)
    changed = (data.train.y != clean.train.y).double().mean().item()
    if option.startswith("label_noise_"):
        noise = int(option.rsplit("_", 1)[1]) / 100
        assert cfg.dataset.label_noise == noise and abs(changed - noise) < 0.08
    else:
        assert changed == 0 and cfg.dataset.pixel_shuffle == (option == "pixel_shuffle")
        assert torch.equal(data.train.x, clean.train.x) == (option == "none")


@pytest.mark.parametrize("option", options("variant"))
def test_every_variant_is_the_head_its_name_says(option):
    cfg = compose_cfg([f"+variant={option}", "model=mlp", "model.widths=[8]"])
    validate(cfg)
    head = cfg.head
    assert option.startswith(head.name)
    assert head.dropout_penultimate == option.endswith("_dropout")
    assert (head.penultimate_nodes == 512) == option.endswith("_p512")
    built_model(cfg)


def test_validation_names_key_value_and_allowed():
    cfg = compose_cfg(["head=bin_enc", "head.penultimate_nodes=3"])
    validate(cfg)
    with pytest.raises(ConfigError, match=r"head.penultimate_nodes=3 .*number of classes \(10\)"):
        check_data(to_typed(cfg), 10)
    check_data(to_typed(cfg), 8)  # 2^3 >= 8 is fine
    cfg = compose_cfg(["metrics.perturbation.when=sometimes"])
    with pytest.raises(ConfigError, match=r"metrics.perturbation.when='sometimes'.*every:N, last"):
        validate(cfg)
    cfg = compose_cfg(["dataset.label_noise=1.5"])
    with pytest.raises(ConfigError, match=r"dataset.label_noise=1.5.*\[0, 1\]"):
        validate(cfg)
    cfg = compose_cfg(["model.activation=swish"])
    with pytest.raises(ConfigError, match=r"model.activation='swish'.*relu_alpha"):
        validate(cfg)


def test_a_composed_config_holds_only_the_keys_its_options_use():
    """vgg11 on fashion_mnist: no MLP widths and no generated-data sizes in its config.yaml;
    mlp and synthetic get theirs from their yaml; an old config.yaml that carried the
    schema's defaults for them reads as today's (so its run dir still resumes)."""
    cfg = to_typed(compose_cfg(["model=vgg11", "dataset=fashion_mnist"]))
    assert cfg.model.widths is None
    assert [getattr(cfg.dataset, k) for k in ("image_size", "channels", "num_classes",
                                              "train_size", "test_size")] == [None] * 5
    used = to_typed(compose_cfg(["model=mlp", "dataset=synthetic"]))
    assert used.model.widths == [512, 256]
    assert (used.dataset.image_size, used.dataset.train_size) == (16, 2000)
    old = to_container(cfg)
    old["model"]["widths"] = [512, 256]
    old["dataset"].update(image_size=32, channels=3, num_classes=10, train_size=2000,
                          test_size=500)
    assert comparable(to_container(to_typed(upgrade(old)))) == comparable(to_container(cfg))
