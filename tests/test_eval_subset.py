"""``metrics.train_subset``: train-side metrics on a fixed stratified sample — the error it
introduces, measured against the whole train split on the same checkpoint."""

from __future__ import annotations

import torch

from latentgeo import evaluate
from latentgeo.data import Split
from latentgeo.data.loaders import stratified_sample
from latentgeo.records import RunDir
from latentgeo.train import train
from tests.conftest import compose_cfg

DIGITS = ["model=mlp", "model.widths=[64]", "dataset=digits", "dataset.image_size=8",
          "dataset.channels=1", "head=bin_enc", "head.penultimate_nodes=4", "trainer.epochs=8",
          "trainer.batch_size=64", "optimizer.lr=3e-3", "schedule=constant", "logger=local",
          "trainer.progress=false", "metrics.every=8", "metrics.perturbation.when=off",
          "trainer.deterministic=true"]


def test_a_stratified_sample_has_per_class_images_of_every_class_in_dataset_order():
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 0, 1, 2, 2])
    split = Split(torch.arange(10).view(10, 1, 1, 1).to(torch.uint8), labels)
    sample = stratified_sample(split, 2, seed=0)
    assert torch.bincount(sample.y).tolist() == [2, 2, 2]
    index = sample.x.flatten().long()
    assert torch.equal(index, index.sort().values) and torch.equal(labels[index], sample.y)
    assert torch.equal(stratified_sample(split, 2, seed=0).x, sample.x)  # fixed
    assert torch.bincount(stratified_sample(split, 5, seed=0).y).tolist() == [2, 3, 5]


def test_the_error_of_train_metrics_on_a_subset_is_small_and_test_metrics_are_unchanged(
        tmp_path):
    train(compose_cfg(DIGITS), tmp_path)
    full = RunDir(tmp_path).events()[-1]
    assert evaluate.main([str(tmp_path), "metrics.train_subset=50"]) == 0  # 500 of 1437
    sampled = RunDir(tmp_path).evaluations()["last"]
    errors = {key: abs(sampled[key] - full[key]) for key in (
        "train/accuracy", "train/loss", "train/same_encoding_fraction",
        "train/collapse/within_class_variation", "train/binarity/peaks_distance_mean",
        "test/mahalanobis/auroc_exact")}
    print("metrics.train_subset=50 of ~144 per class, absolute error:", errors)
    assert errors["train/accuracy"] <= 0.03 and errors["train/same_encoding_fraction"] <= 0.05
    assert errors["test/mahalanobis/auroc_exact"] <= 0.05  # its Gaussians fit on the sample
    assert errors["train/collapse/within_class_variation"] <= 0.15 * abs(
        full["train/collapse/within_class_variation"])
    assert any(value > 0 for value in errors.values())  # the sample was really used
    for key in ("test/accuracy", "test/loss", "test/same_encoding_fraction"):
        assert sampled[key] == full[key]  # the test split is never sampled
