"""Mahalanobis-distance scores on a latent layer (usually the penultimate one, ``x_pen``).

Two different metrics live here; do not confuse them (docs/definitions.md §5 note 2):

* :func:`misclassification_auroc` — BE's ``get_mahalanobis_score``
  (BE@9465647:binary_encoding/metrics.py). No OOD data: it asks whether misclassified test
  samples lie further from the Gaussian of their *predicted* class than correctly classified
  ones. Class-specific full covariances, sqrt-form distance, BE's 101-point quantile AUROC.
* :func:`ood_auroc` — Lee, Lee, Lee & Shin 2018, "A Simple Unified Framework for Detecting
  Out-of-Distribution Samples and Adversarial Attacks": class means + one shared (tied)
  covariance, score = min over classes of the squared Mahalanobis distance. A new metric, not in
  any predecessor.

Everything is computed in float64 numpy; inputs are torch tensors (any device, any float dtype).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

# sklearn GaussianMixture's default, added to the covariance diagonal (BE uses the default).
GMM_REG_COVAR = 1e-6
# BE's quantile grid: np.arange(0, 1 + dx, dx) with dx = 0.01 -> 101 points, 0.00 ... 1.00.
QUANTILE_STEP = 0.01


def _to_numpy(tensor: torch.Tensor, dtype: type = np.float64) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(dtype, copy=False)


def _as_matrix(features: torch.Tensor) -> torch.Tensor:
    """[N, ...] -> [N, D] ([N] -> [N, 1]); flatten(1) also works for N = 0."""
    return features[:, None] if features.dim() == 1 else features.flatten(1)


def fit_class_gaussian(
    features: np.ndarray, reg_covar: float = GMM_REG_COVAR
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a one-component full-covariance Gaussian fitted to ``features``.

    Closed form of ``sklearn.mixture.GaussianMixture(n_components=1, covariance_type="full",
    reg_covar=reg_covar).fit(features)`` (what BE calls per class): with a single component
    every responsibility is exactly 1, so EM stops at the maximum-likelihood estimate

        μ = (1/N) Σ_i x_i,    Σ = (1/N) Σ_i (x_i − μ)(x_i − μ)ᵀ + reg_covar · I.

    (The MLE divides by N, not N − 1.) ``features`` is [N, D]; float64 is used throughout.
    """
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    centred = features - mean
    covariance = centred.T @ centred / features.shape[0]
    covariance.flat[:: covariance.shape[0] + 1] += reg_covar
    return mean, covariance


def mahalanobis_distances(
    points: np.ndarray, mean: np.ndarray, precision: np.ndarray, squared: bool = False
) -> np.ndarray:
    """Row-wise Mahalanobis distance of ``points`` [N, D] to ``mean`` [D], vectorised.

    d(x) = sqrt((x − μ)ᵀ P (x − μ)) with P = ``precision`` (the inverse covariance), exactly what
    ``scipy.spatial.distance.mahalanobis(x, μ, P)`` returns for one point; ``squared=True``
    returns (x − μ)ᵀ P (x − μ). Tiny negative round-off values are clipped to 0 before the sqrt.
    """
    centred = np.asarray(points, dtype=np.float64) - mean
    squared_distances = np.einsum("ij,jk,ik->i", centred, precision, centred)
    squared_distances = np.maximum(squared_distances, 0.0)
    return squared_distances if squared else np.sqrt(squared_distances)


def quantile_auroc(correct_distances: np.ndarray, wrong_distances: np.ndarray) -> float:
    """BE's 101-point quantile estimate of P(d_correct < d_wrong).

        AUROC_BE = Σ_{x ∈ {0, 0.01, …, 1.00}} 0.01 · mean(d_correct < Q_wrong(x))

    with Q_wrong the ``np.quantile`` (linear interpolation) of the misclassified distances
    (BE@9465647:binary_encoding/metrics.py ``get_mahalanobis_score``). It is a left-and-right
    Riemann sum with 101 points of width 0.01, i.e. the area under the curve plus half its two end
    points times 0.01: it is biased upwards by between 0 and 0.01 and its maximum is 1.01 (reached
    when the two distance sets are separated), and ≈ 0.505 when they are identically distributed.
    Kept as is, for comparability with BE; ``auroc_exact`` is the unbiased number.
    """
    quantile_points = np.arange(0, 1 + QUANTILE_STEP, QUANTILE_STEP)
    thresholds = np.quantile(np.asarray(wrong_distances, dtype=np.float64), quantile_points)
    sorted_correct = np.sort(np.asarray(correct_distances, dtype=np.float64))
    # number of correct distances strictly below each threshold, as BE's `correct < q`
    fraction_below = np.searchsorted(sorted_correct, thresholds, side="left") / sorted_correct.size
    return float(np.sum(fraction_below * QUANTILE_STEP))


def misclassification_distances(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    train_preds: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    test_preds: torch.Tensor,
) -> dict[str, np.ndarray | int]:
    """The distance arrays behind :func:`misclassification_auroc` (BE's procedure, see there).

    Returns ``correct_test`` and ``wrong_test`` (float64 arrays, pooled over classes in
    increasing class order, samples in input order within a class, exactly as BE concatenates
    them), ``num_classes_used`` and ``num_train_fit`` (correct train samples used for the fits).
    """
    train_x = _to_numpy(_as_matrix(train_features))
    test_x = _to_numpy(_as_matrix(test_features))
    train_y, train_p = _to_numpy(train_labels, np.int64), _to_numpy(train_preds, np.int64)
    test_y, test_p = _to_numpy(test_labels, np.int64), _to_numpy(test_preds, np.int64)

    empty = {"correct_test": np.zeros(0), "wrong_test": np.zeros(0)}
    if train_x.shape[0] == 0:
        return {**empty, "num_classes_used": 0, "num_train_fit": 0}
    from sklearn.preprocessing import StandardScaler  # scikit-learn: imported when first fit

    scaler = StandardScaler().fit(train_x)
    train_x = scaler.transform(train_x)
    test_x = scaler.transform(test_x) if test_x.shape[0] else test_x
    train_correct, test_correct = train_y == train_p, test_y == test_p

    correct_test, wrong_test = [], []
    num_classes_used = num_train_fit = 0
    # BE iterates over the true train labels; a fit needs pred == label == c, so this is the
    # same as iterating over predicted classes.
    for class_label in np.unique(train_y):
        fit_selection = (train_p == class_label) & train_correct
        if fit_selection.sum() <= 2:
            continue
        mean, covariance = fit_class_gaussian(train_x[fit_selection])
        precision = np.linalg.inv(covariance)  # BE: np.linalg.inv, then scipy mahalanobis
        num_classes_used += 1
        num_train_fit += int(fit_selection.sum())
        for selection, pool in (
            ((test_p == class_label) & test_correct, correct_test),
            ((test_p == class_label) & ~test_correct, wrong_test),
        ):
            if selection.sum() > 2:  # BE's "> 2 members" rule, per class and per group
                pool.append(mahalanobis_distances(test_x[selection], mean, precision))

    def pooled(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    return {
        "correct_test": pooled(correct_test),
        "wrong_test": pooled(wrong_test),
        "num_classes_used": num_classes_used,
        "num_train_fit": num_train_fit,
    }


def misclassification_auroc(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    train_preds: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    test_preds: torch.Tensor,
) -> dict[str, float | int | str | None]:
    """BE's Mahalanobis misclassification-detection AUROC (BE@9465647:binary_encoding/metrics.py).

    Procedure (docs/definitions.md §1.5, checked against the source):

    1. z-score every feature with a StandardScaler fitted on *all* train features; apply it to
       train and test.
    2. For each class c: fit one Gaussian N(μ_c, Σ_c) (GaussianMixture n_components=1, full,
       class-specific covariance, reg_covar 1e-6; :func:`fit_class_gaussian`) to the train samples
       with pred = c **and** label = c, if there are more than 2 of them.
    3. Distances d(x) = sqrt((x − μ_c)ᵀ Σ_c⁻¹ (x − μ_c)) (sqrt form, scipy ``mahalanobis``) of the
       test samples predicted c, split into correct and wrong; each group of a class is only used
       if it has more than 2 members.
    4. The distances are **pooled over classes** (concatenated) into one correct-test and one
       wrong-test array *before* the AUROC, as BE does: classes with larger covariance scales
       shift all their distances together, which this pooled AUROC does not correct for.
    5. ``auroc`` = BE's 101-point quantile estimate (:func:`quantile_auroc`; biased up by ≤ 0.01,
       maximum 1.01). ``auroc_exact`` = P(d_correct < d_wrong) + ½ P(tie) via
       ``sklearn.metrics.roc_auc_score`` (wrong = positive class, scored by distance).

    Differences from BE: float64 throughout (BE computes in the features' dtype, float32), and
    degenerate inputs give NaN + ``reason`` instead of an exception. With fewer correct train
    samples of a class than feature dimensions, Σ_c is singular except for the 1e-6 ridge and the
    distances become huge; that is BE's behaviour and is kept.

    Args: features [N, D] (or [N, ...], flattened), labels and preds [N] integer class ids.
    Returns: ``auroc``, ``auroc_exact``, ``num_classes_used``, ``num_train_fit``,
    ``num_correct_test``, ``num_wrong_test`` (sizes of the pooled arrays) and ``reason``
    (None, or why the AUROCs are NaN).
    """
    distances = misclassification_distances(
        train_features, train_labels, train_preds, test_features, test_labels, test_preds
    )
    correct, wrong = distances["correct_test"], distances["wrong_test"]
    result: dict[str, float | int | str | None] = {
        "auroc": math.nan,
        "auroc_exact": math.nan,
        "num_classes_used": distances["num_classes_used"],
        "num_train_fit": distances["num_train_fit"],
        "num_correct_test": int(correct.size),
        "num_wrong_test": int(wrong.size),
        "reason": None,
    }
    if distances["num_classes_used"] == 0:
        result["reason"] = "no class has more than 2 correctly classified train samples"
    elif wrong.size == 0:
        result["reason"] = "no class has more than 2 misclassified test samples"
    elif correct.size == 0:
        result["reason"] = "no class has more than 2 correctly classified test samples"
    else:
        is_wrong = np.concatenate([np.zeros(correct.size), np.ones(wrong.size)])
        result["auroc"] = quantile_auroc(correct, wrong)
        from sklearn.metrics import roc_auc_score

        result["auroc_exact"] = float(roc_auc_score(is_wrong, np.concatenate([correct, wrong])))
    return result


def tied_gaussian(
    features: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class means, shared covariance and its pseudo-inverse (Lee et al. 2018, §2).

        μ_c = mean of the samples of class c,
        Σ = (1/N) Σ_c Σ_{i: y_i = c} (x_i − μ_c)(x_i − μ_c)ᵀ,   P = Σ⁺.

    Σ is the MLE on the class-centred features, as ``sklearn.covariance.EmpiricalCovariance``
    (which Lee et al.'s code uses) fitted on them; P is ``scipy.linalg.pinvh(Σ)``, exactly
    EmpiricalCovariance's ``precision_``, so a singular Σ (dead units, D > N − C) is handled by
    the Moore–Penrose pseudo-inverse: directions of zero variance are ignored, not penalised.
    Returns (classes [C], means [C, D], precision [D, D]).
    """
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    # EmpiricalCovariance(assume_centered=False) subtracts the (≈ 0) mean of the centred data.
    centred = centred - centred.mean(axis=0)
    covariance = centred.T @ centred / features.shape[0]
    return classes, means, scipy.linalg.pinvh(covariance)


def ood_auroc(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    in_features: torch.Tensor,
    out_features: torch.Tensor,
) -> dict[str, float | int | str | None]:
    """Out-of-distribution detection with a tied-covariance Gaussian (Lee et al. 2018).

    Fit class means μ_c (by true train label) and one shared covariance Σ (:func:`tied_gaussian`,
    pseudo-inverse P = Σ⁺). Score each sample by

        M(x) = min_c (x − μ_c)ᵀ P (x − μ_c)      (squared Mahalanobis distance),

    small = in-distribution. This is Lee et al.'s confidence score (−M) on one layer, without
    their input pre-processing or layer ensemble. In-distribution is the positive class, scored
    by −M:

    * ``auroc``: ``roc_auc_score`` = P(M_in < M_out) + ½ P(tie);
    * ``aupr``: ``average_precision_score`` with in-distribution positive;
    * ``fpr_at_95_tpr``: accept x when M(x) ≤ τ, with τ the smallest in-distribution score
      such that at least 95% of in-distribution samples are accepted (τ = the ⌈0.95·N_in⌉-th
      smallest M_in); FPR = fraction of OOD samples with M ≤ τ. This is the first point of the
      ROC curve with TPR ≥ 0.95.

    Args: train features [N, D] with true labels [N]; in/out features [N_in, D], [N_out, D].
    Returns those three, ``num_in``, ``num_out`` and ``reason`` (None, or why they are NaN).
    """
    train_x = _to_numpy(_as_matrix(train_features))
    in_x = _to_numpy(_as_matrix(in_features))
    out_x = _to_numpy(_as_matrix(out_features))
    result: dict[str, float | int | str | None] = {
        "auroc": math.nan,
        "aupr": math.nan,
        "fpr_at_95_tpr": math.nan,
        "num_in": int(in_x.shape[0]),
        "num_out": int(out_x.shape[0]),
        "reason": None,
    }
    if train_x.shape[0] == 0:
        result["reason"] = "no train samples to fit the class Gaussians"
        return result
    if in_x.shape[0] == 0 or out_x.shape[0] == 0:
        result["reason"] = "need at least one in-distribution and one out-of-distribution sample"
        return result

    _, means, precision = tied_gaussian(train_x, _to_numpy(train_labels, np.int64))

    def min_distance(points: np.ndarray) -> np.ndarray:
        return np.min(
            np.stack([mahalanobis_distances(points, m, precision, squared=True) for m in means]),
            axis=0,
        )

    in_scores, out_scores = min_distance(in_x), min_distance(out_x)
    is_in = np.concatenate([np.ones(in_scores.size), np.zeros(out_scores.size)])
    confidence = -np.concatenate([in_scores, out_scores])
    from sklearn.metrics import average_precision_score, roc_auc_score

    result["auroc"] = float(roc_auc_score(is_in, confidence))
    result["aupr"] = float(average_precision_score(is_in, confidence))
    accepted_needed = (95 * in_scores.size + 99) // 100  # ⌈0.95·N_in⌉ in integer arithmetic
    threshold = np.sort(in_scores)[accepted_needed - 1]
    result["fpr_at_95_tpr"] = float(np.mean(out_scores <= threshold))
    return result
