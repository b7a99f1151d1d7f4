"""Mahalanobis metrics against sklearn/scipy, a literal port of BE's function, and closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial import distance
from sklearn.covariance import EmpiricalCovariance
from sklearn.metrics import roc_curve
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from latentgeo.metrics.mahalanobis import (
    fit_class_gaussian,
    mahalanobis_distances,
    misclassification_auroc,
    misclassification_distances,
    ood_auroc,
    quantile_auroc,
    tied_gaussian,
)


def be_quantile_auroc(score_classified_test, score_misclassified_test):
    """Literal port of the AUROC loop of BE@9465647:binary_encoding/metrics.py."""
    dx = 0.01
    x_axis = np.arange(0, 1 + dx, dx)
    auroc = 0
    for x in x_axis:
        q = np.quantile(score_misclassified_test, x)
        y = np.mean(score_classified_test < q)
        auroc += y * dx
    return auroc


def be_mahalanobis_score(x_train, y_pred_train, y_train, x_test, y_pred_test, y_test):
    """Literal port of BE's get_mahalanobis_score (test part), sklearn GMM + scipy distances."""
    classified, misclassified = np.array([]), np.array([])
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    for c in np.unique(y_train):
        sel_train = np.logical_and(y_pred_train == c, y_train == y_pred_train)
        sel_ok = np.logical_and(y_pred_test == c, y_test == y_pred_test)
        sel_bad = np.logical_and(y_pred_test == c, y_test != y_pred_test)
        if np.sum(sel_train) > 2:
            gmm = GaussianMixture(n_components=1).fit(x_train[sel_train])
            inv_cov = np.linalg.inv(gmm.covariances_[0])
            mean = gmm.means_[0]
            if np.sum(sel_ok) > 2:
                d = [distance.mahalanobis(p, mean, inv_cov) for p in x_test[sel_ok]]
                classified = np.concatenate([classified, np.stack(d)])
            if np.sum(sel_bad) > 2:
                d = [distance.mahalanobis(p, mean, inv_cov) for p in x_test[sel_bad]]
                misclassified = np.concatenate([misclassified, np.stack(d)])
    return classified, misclassified, be_quantile_auroc(classified, misclassified)


def noisy_classifier_data(seed, num_train=300, num_test=200, dim=4, classes=3, flip=0.25):
    """Gaussian classes; predictions = labels with a fraction replaced by random classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, dim))
    scales = rng.uniform(0.5, 2.0, size=(classes, dim))

    def draw(n):
        labels = rng.integers(0, classes, size=n)
        features = centres[labels] + scales[labels] * rng.normal(size=(n, dim))
        preds = np.where(rng.random(n) < flip, rng.integers(0, classes, size=n), labels)
        features = torch.tensor(features, dtype=torch.float32)
        return features, torch.tensor(labels), torch.tensor(preds)

    return (*draw(num_train), *draw(num_test))


def test_class_gaussian_equals_sklearn_gaussian_mixture():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    mean, covariance = fit_class_gaussian(features)
    gmm = GaussianMixture(n_components=1, covariance_type="full", reg_covar=1e-6).fit(features)
    np.testing.assert_allclose(mean, gmm.means_[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(covariance, gmm.covariances_[0], rtol=1e-10, atol=1e-12)
    # and the closed form is the biased (1/N) covariance plus the 1e-6 ridge
    np.testing.assert_allclose(covariance, np.cov(features.T, bias=True) + 1e-6 * np.eye(5))


def test_distances_equal_scipy_mahalanobis():
    rng = np.random.default_rng(1)
    points, mean = rng.normal(size=(20, 4)), rng.normal(size=4)
    a = rng.normal(size=(4, 4))
    precision = np.linalg.inv(a @ a.T + np.eye(4))
    expected = [distance.mahalanobis(p, mean, precision) for p in points]
    np.testing.assert_allclose(mahalanobis_distances(points, mean, precision), expected, rtol=1e-12)
    np.testing.assert_allclose(
        mahalanobis_distances(points, mean, precision, squared=True),
        np.square(expected),
        rtol=1e-12,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_pipeline_equals_literal_port_of_be(seed):
    data = noisy_classifier_data(seed)
    train_x, train_y, train_p, test_x, test_y, test_p = data
    ours = misclassification_distances(*data)
    classified, misclassified, auroc = be_mahalanobis_score(
        train_x.double().numpy(),
        train_p.numpy(),
        train_y.numpy(),
        test_x.double().numpy(),
        test_p.numpy(),
        test_y.numpy(),
    )
    np.testing.assert_allclose(ours["correct_test"], classified, rtol=1e-8)
    np.testing.assert_allclose(ours["wrong_test"], misclassified, rtol=1e-8)
    result = misclassification_auroc(*data)
    assert result["auroc"] == pytest.approx(auroc, abs=1e-12)
    assert result["num_classes_used"] == 3
    assert result["num_correct_test"] == classified.size
    assert result["num_wrong_test"] == misclassified.size
    assert result["reason"] is None


def test_quantile_auroc_equals_be_loop_on_the_same_distances():
    rng = np.random.default_rng(2)
    for correct_size, wrong_size in [(200, 37), (5, 3), (1000, 1000)]:
        correct = rng.gamma(2.0, size=correct_size)
        wrong = rng.gamma(3.0, size=wrong_size)
        assert quantile_auroc(correct, wrong) == pytest.approx(
            be_quantile_auroc(correct, wrong), abs=1e-12
        )
    # ties: BE counts strictly-below only
    correct, wrong = np.array([1.0, 2.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])
    assert quantile_auroc(correct, wrong) == pytest.approx(0.25 * 1.01)
    assert be_quantile_auroc(correct, wrong) == pytest.approx(0.25 * 1.01)


def two_class_data(wrong_offset, seed=0, dim=3, n_train=400, n_correct=300, n_wrong=300):
    """Train: two well-separated classes, all correct; test: correct near the class means, wrong
    ones (true label flipped) drawn `wrong_offset` further away along every axis."""
    rng = np.random.default_rng(seed)
    centres = np.array([np.zeros(dim), np.full(dim, 50.0)])
    train_y = np.repeat([0, 1], n_train // 2)
    train_x = centres[train_y] + rng.normal(size=(n_train, dim))
    correct_y = rng.integers(0, 2, size=n_correct)
    wrong_pred = rng.integers(0, 2, size=n_wrong)
    correct_x = centres[correct_y] + rng.normal(size=(n_correct, dim))
    wrong_x = centres[wrong_pred] + wrong_offset + rng.normal(size=(n_wrong, dim))
    test_x = np.concatenate([correct_x, wrong_x])
    test_p = np.concatenate([correct_y, wrong_pred])
    test_y = np.concatenate([correct_y, 1 - wrong_pred])
    t = torch.tensor
    return t(train_x), t(train_y), t(train_y), t(test_x), t(test_y), t(test_p)


def test_separated_distances_give_be_maximum_and_exact_one():
    result = misclassification_auroc(*two_class_data(wrong_offset=20.0))
    # every wrong quantile lies above every correct distance: 101 points x 0.01 = 1.01 (BE's bias)
    assert result["auroc"] == pytest.approx(1.01, abs=1e-12)
    assert result["auroc_exact"] == 1.0
    assert result["num_classes_used"] == 2
    assert (result["num_correct_test"], result["num_wrong_test"]) == (300, 300)


def test_identical_distributions_give_one_half():
    data = two_class_data(wrong_offset=0.0, n_correct=2000, n_wrong=2000)
    result = misclassification_auroc(*data)
    assert result["auroc_exact"] == pytest.approx(0.5, abs=0.03)
    # the Riemann sum of x over 101 points is 0.505, not 0.5
    assert result["auroc"] == pytest.approx(0.505, abs=0.03)


def test_auroc_exact_equals_brute_force_pairwise_count():
    data = noisy_classifier_data(3)
    distances = misclassification_distances(*data)
    correct, wrong = distances["correct_test"], distances["wrong_test"]
    pairs = correct[:, None] - wrong[None, :]
    brute_force = (np.sum(pairs < 0) + 0.5 * np.sum(pairs == 0)) / pairs.size
    assert misclassification_auroc(*data)["auroc_exact"] == pytest.approx(brute_force, abs=1e-12)


def test_auroc_exact_counts_ties_as_one_half():
    # duplicated test rows give tied distances between a correct and a wrong sample
    train_x, train_y, train_p, _, _, _ = two_class_data(wrong_offset=0.0)
    point = train_x[:1]
    test_x = torch.cat([point.repeat(4, 1), point.repeat(3, 1) + 5.0, point.repeat(3, 1)])
    test_p = torch.zeros(10, dtype=torch.long)
    test_y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    result = misclassification_auroc(train_x, train_y, train_p, test_x, test_y, test_p)
    # 4 correct at d0, wrong: 3 at d1 > d0 and 3 at d0 -> (4*3 + 0.5*4*3) / 24 = 0.75
    assert result["auroc_exact"] == pytest.approx(0.75)


def test_small_groups_are_dropped_as_in_be():
    train_x, train_y, train_p, test_x, test_y, test_p = two_class_data(wrong_offset=20.0)
    # keep only 2 misclassified samples of predicted class 1: that group must be dropped
    wrong_1 = torch.nonzero((test_y != test_p) & (test_p == 1))[:, 0]
    keep = torch.ones(len(test_y), dtype=torch.bool)
    keep[wrong_1[2:]] = False
    result = misclassification_auroc(
        train_x, train_y, train_p, test_x[keep], test_y[keep], test_p[keep]
    )
    expected_wrong = int(((test_y != test_p) & (test_p == 0)).sum())
    assert result["num_wrong_test"] == expected_wrong


def test_degenerate_inputs_give_nan_and_reason():
    train_x, train_y, train_p, test_x, test_y, test_p = two_class_data(wrong_offset=20.0)
    # no misclassified test sample
    result = misclassification_auroc(train_x, train_y, train_p, test_x, test_p, test_p)
    assert math.isnan(result["auroc"]) and math.isnan(result["auroc_exact"])
    assert "misclassified test" in result["reason"]
    # no class with > 2 correct train samples (all train predictions wrong)
    result = misclassification_auroc(train_x, train_y, 1 - train_p, test_x, test_y, test_p)
    assert math.isnan(result["auroc"]) and result["num_classes_used"] == 0
    assert "train" in result["reason"]
    # only 2 misclassified per class -> every wrong group is too small
    wrong = torch.nonzero(test_y != test_p)[:, 0]
    keep = torch.ones(len(test_y), dtype=torch.bool)
    keep[wrong] = False
    for c in (0, 1):
        keep[wrong[test_p[wrong] == c][:2]] = True
    result = misclassification_auroc(
        train_x, train_y, train_p, test_x[keep], test_y[keep], test_p[keep]
    )
    assert math.isnan(result["auroc"]) and result["num_wrong_test"] == 0
    # every test sample wrong: no correct group
    result = misclassification_auroc(train_x, train_y, train_p, test_x, 1 - test_p, test_p)
    assert math.isnan(result["auroc_exact"]) and "correctly classified test" in result["reason"]
    # empty test set
    result = misclassification_auroc(train_x, train_y, train_p, test_x[:0], test_y[:0], test_p[:0])
    assert math.isnan(result["auroc"]) and result["reason"]


def test_tied_covariance_equals_sklearn_empirical_covariance():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, size=200)
    features = rng.normal(size=(4, 6))[labels] + rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    classes, means, precision = tied_gaussian(features, labels)
    centred = features - np.stack([features[labels == c].mean(0) for c in range(4)])[labels]
    reference = EmpiricalCovariance().fit(centred)
    np.testing.assert_array_equal(classes, np.arange(4))
    np.testing.assert_allclose(means[2], features[labels == 2].mean(0), rtol=1e-12)
    np.testing.assert_allclose(precision, reference.precision_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.linalg.inv(precision), reference.covariance_, rtol=1e-8)


def test_tied_covariance_singular_uses_pseudo_inverse():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=100)
    features = np.concatenate([rng.normal(size=(100, 3)), np.zeros((100, 1))], axis=1)  # dead unit
    _, _, precision = tied_gaussian(features, labels)
    assert np.all(np.isfinite(precision))
    np.testing.assert_allclose(precision[3], 0.0, atol=1e-12)


def gaussian_ood_data(shift, seed=0, n=1000, dim=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, dim))
    labels = rng.integers(0, 3, size=n)
    train = centres[labels] + rng.normal(size=(n, dim))
    inside = centres[rng.integers(0, 3, size=n)] + rng.normal(size=(n, dim))
    outside = centres[rng.integers(0, 3, size=n)] + shift + rng.normal(size=(n, dim))
    t = torch.tensor
    return t(train), t(labels), t(inside), t(outside)


def test_ood_shifted_gaussians_are_detected():
    result = ood_auroc(*gaussian_ood_data(shift=30.0))
    assert result["auroc"] == pytest.approx(1.0, abs=1e-3)
    assert result["aupr"] == pytest.approx(1.0, abs=1e-3)
    assert result["fpr_at_95_tpr"] == pytest.approx(0.0, abs=1e-3)
    assert result["reason"] is None


def test_ood_same_distribution_is_chance():
    result = ood_auroc(*gaussian_ood_data(shift=0.0))
    assert result["auroc"] == pytest.approx(0.5, abs=0.04)
    assert result["aupr"] == pytest.approx(0.5, abs=0.05)
    assert result["fpr_at_95_tpr"] == pytest.approx(0.95, abs=0.03)


def test_ood_fpr_at_95_tpr_hand_made():
    # one class at the origin, identity covariance in 1-D: score = x^2 for train mean 0, var 1
    train = torch.tensor([[-1.0], [1.0]])  # mean 0, MLE variance 1
    labels = torch.tensor([0, 0])
    inside = torch.arange(1, 21, dtype=torch.float64)[:, None].sqrt()  # scores 1, 2, ..., 20
    outside = torch.tensor([0.5, 18.5, 19.0, 19.5, 25.0, 30.0], dtype=torch.float64)[:, None].sqrt()
    result = ood_auroc(train, labels, inside, outside)
    # 95% of 20 in-samples accepted -> tau = 19th smallest = 19; OOD <= 19: 0.5, 18.5, 19 -> 3/6
    assert result["fpr_at_95_tpr"] == pytest.approx(0.5)
    # AUROC = P(M_in < M_out): out 0.5 beats none, 18.5 -> 18, 19 -> 18 + 0.5 tie, 19.5 -> 19,
    # 25 and 30 -> 20 each
    assert result["auroc"] == pytest.approx((0 + 18 + 18.5 + 19 + 20 + 20) / 120)
    assert (result["num_in"], result["num_out"]) == (20, 6)


def test_ood_fpr_matches_roc_curve_definition():
    train, labels, inside, outside = gaussian_ood_data(shift=1.5, seed=6, n=333)
    result = ood_auroc(train, labels, inside, outside)
    _, _, precision = tied_gaussian(train.numpy(), labels.numpy())
    means = np.stack([train.numpy()[labels.numpy() == c].mean(0) for c in range(3)])

    def score(x):
        return np.min([mahalanobis_distances(x.numpy(), m, precision, True) for m in means], axis=0)

    confidence = -np.concatenate([score(inside), score(outside)])
    is_in = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    fpr, tpr, _ = roc_curve(is_in, confidence, drop_intermediate=False)
    assert result["fpr_at_95_tpr"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    assert 0.0 < result["fpr_at_95_tpr"] < 1.0


def test_ood_degenerate_inputs_give_nan_and_reason():
    train, labels, inside, outside = gaussian_ood_data(shift=3.0, n=50)
    result = ood_auroc(train, labels, inside, outside[:0])
    assert math.isnan(result["auroc"]) and math.isnan(result["fpr_at_95_tpr"]) and result["reason"]
