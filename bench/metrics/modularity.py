"""Modularity and Explicitness (Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings
With the F-Statistic Loss", §3).

Definitions as implemented by disentanglement_lib
(``evaluation/metrics/modularity_explicitness.py``; study settings in
``config/unsupervised_study_v1/metric_configs/modularity_explicitness.gin``:
``num_train=10000``, ``num_test=5000``, sampling ``batch_size=16``, 20-bin histogram
discretiser):

* **Modularity** (paper eq. in §3, "Modularity"): with ``m[d, k]`` the discrete mutual
  information between the 20-bin discretised training code ``d`` and factor ``k``, and
  ``theta_d = max_k m[d, k]``, code ``d`` scores
  ``1 - sum_{k != k*} m[d, k]^2 / (theta_d^2 (K - 1))``, i.e.
  ``1 - (sum_k m^2 - theta^2) / (theta^2 (K - 1))``; a code with ``theta_d = 0`` scores 0.
  Modularity is the mean over codes.
* **Explicitness** (§3, "Explicitness"): codes are standardised with the training mean and
  standard deviation (``ddof=0``); for each factor a ``LogisticRegression()`` (scikit-learn
  defaults) is fitted on the training codes, and its class probabilities on the test codes
  are scored by the macro-averaged one-vs-rest ROC AUC over the classes present in the test
  set (the reference's ``MultiLabelBinarizer`` + ``roc_auc_score``). Explicitness is the
  mean over factors; ``explicitness_train`` scores the training codes.

With current scikit-learn the default ``LogisticRegression`` is L2, C=1, lbfgs, multinomial;
the reference run today uses the same (in 2019 the default was liblinear one-vs-rest).

Deviations (edge cases where the reference gives no number, documented):

* a code with zero standard deviation on the training table is left at 0 after centring
  (the reference divides by 0 and fails);
* with a single factor, ``K - 1 = 0``: a code with ``theta_d > 0`` then has modularity 1.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bench.data.base import FactorDataset
from bench.metrics.information import discrete_mutual_info, histogram_discretize
from bench.metrics.sampling import EncodeFn, RandomStateLike, as_random_state, generate_factor_code
from bench.metrics.table import check_splits


def modularity_explicitness(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    num_bins: int = 20,
    n_jobs: int | None = -1,
) -> dict[str, float]:
    """Sample a training and a test table from ``dataset``; compute modularity and explicitness.

    Returns ``{"modularity", "explicitness", "explicitness_train"}``.
    """
    rs = as_random_state(random_state)
    codes_train, factors_train = generate_factor_code(dataset, encode, num_train, rs, batch_size)
    codes_test, factors_test = generate_factor_code(dataset, encode, num_test, rs, batch_size)
    return modularity_explicitness_from_codes(
        codes_train, factors_train, codes_test, factors_test, num_bins=num_bins, n_jobs=n_jobs
    )


def modularity_explicitness_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    num_bins: int = 20,
    n_jobs: int | None = None,
) -> dict[str, float]:
    """Modularity (training table) and explicitness (train -> test) of codes (N, D) vs factors (N, K)."""
    x_train, y_train, x_test, y_test = check_splits(codes_train, factors_train, codes_test, factors_test)
    info = discrete_mutual_info(histogram_discretize(x_train, num_bins), y_train)
    train_auc, test_auc = explicitness_scores(x_train, y_train, x_test, y_test, n_jobs=n_jobs)
    return {
        "modularity": modularity(info),
        "explicitness": float(np.mean(test_auc)),
        "explicitness_train": float(np.mean(train_auc)),
    }


def modularity(mutual_info: np.ndarray) -> float:
    """Mean over codes of ``1 - (sum_k m^2 - theta^2) / (theta^2 (K - 1))`` for a (D, K) MI matrix."""
    squared = np.square(np.asarray(mutual_info, dtype=np.float64))
    theta_sq = squared.max(axis=1)
    others = squared.sum(axis=1) - theta_sq
    num_factors = squared.shape[1]
    per_code = np.zeros(squared.shape[0])
    informative = theta_sq > 0.0
    if num_factors == 1:
        per_code[informative] = 1.0
    else:
        per_code[informative] = 1.0 - others[informative] / (theta_sq[informative] * (num_factors - 1.0))
    return float(np.mean(per_code))


def explicitness_scores(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-factor macro ROC AUC of a logistic regression on standardised codes.

    Returns ``(train_auc (K,), test_auc (K,))``. ``n_jobs`` parallelises over factors.
    """
    mean = codes_train.mean(axis=0)
    std = codes_train.std(axis=0)
    std = np.where(std > 0.0, std, 1.0)
    x_train = (codes_train - mean) / std
    x_test = (codes_test - mean) / std
    pairs = Parallel(n_jobs=n_jobs)(
        delayed(explicitness_per_factor)(x_train, factors_train[:, k], x_test, factors_test[:, k])
        for k in range(factors_train.shape[1])
    )
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def explicitness_per_factor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[float, float]:
    """(train AUC, test AUC) of one factor's ``LogisticRegression()`` on standardised codes."""
    classifier = LogisticRegression().fit(x_train, y_train)
    return (
        _macro_auc(y_train, classifier.predict_proba(x_train), classifier.classes_),
        _macro_auc(y_test, classifier.predict_proba(x_test), classifier.classes_),
    )


def _macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes present in ``y``.

    The reference one-hot encodes ``y`` over the classes it contains and pairs them with
    the classifier's probability columns, which requires both sets of classes to coincide
    (it fails otherwise). Here the probability column of each class present in ``y`` is
    picked by class value: the same number when the sets coincide, and a defined score
    when a rare class is missing from ``y``. A class in ``y`` that the classifier never saw
    is an error.
    """
    present = np.unique(y)
    unseen = np.setdiff1d(present, classes)
    if unseen.size:
        raise ValueError(
            f"explicitness: classes {unseen.tolist()} occur in the evaluated table but not in the training table"
        )
    if len(present) < 2:
        raise ValueError(f"explicitness: the factor takes the single value {present[0]}; ROC AUC is undefined")
    columns = np.searchsorted(classes, present)
    onehot = (y[:, None] == present[None, :]).astype(np.int64)
    return float(roc_auc_score(onehot, proba[:, columns], average="macro"))
