"""SAP score, Separated Attribute Predictability (Kumar et al. 2018, "Variational Inference of
Disentangled Latent Concepts from Unlabeled Observations", §3).

Definition as implemented by disentanglement_lib (``evaluation/metrics/sap_score.py``; study
settings in ``config/unsupervised_study_v1/metric_configs/sap_score.gin``: ``num_train=10000``,
``num_test=5000``, sampling ``batch_size=16``, ``continuous_factors=False``):

1. score matrix ``S[d, k]``: for discrete factors, the test accuracy of a
   ``LinearSVC(C=0.01, class_weight="balanced")`` predicting factor ``k`` from code ``d``
   alone (one feature), trained on the training table; for continuous factors
   (``continuous_factors=True``), the squared correlation ``cov(z_d, v_k)^2 / (var z_d var v_k)``
   on the training table (0 when ``var z_d <= 1e-12``);
2. SAP = mean over factors of (largest - second largest ``S[:, k]``).

Each ``LinearSVC`` gets ``random_state=seed``; the reference passes none. With the
scikit-learn >= 1.3 default ``dual="auto"`` the one-feature problems are solved in the
primal, which draws no random numbers, so the seed only matters if liblinear's dual solver
is selected. A code that is constant on the training table cannot separate anything; its
row scores the accuracy of the SVC on a constant feature (as in the reference).
"""

from __future__ import annotations

import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from bench.data.base import FactorDataset
from bench.metrics.sampling import EncodeFn, RandomStateLike, as_random_state, generate_factor_code
from bench.metrics.table import check_splits


def sap(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    continuous_factors: bool = False,
    n_jobs: int | None = 1,
) -> dict[str, float]:
    """Sample a training and a test table from ``dataset`` and compute SAP.

    Draws ``num_train`` then ``num_test`` pairs in batches of ``batch_size`` (the
    reference's order), then one integer from ``random_state`` that seeds the SVCs.
    ``n_jobs`` (default 1, in-process: the D x K one-feature fits take well under a second,
    less than starting worker processes) parallelises over factors. Returns ``{"sap": score}``.
    """
    rs = as_random_state(random_state)
    codes_train, factors_train = generate_factor_code(dataset, encode, num_train, rs, batch_size)
    codes_test, factors_test = generate_factor_code(dataset, encode, num_test, rs, batch_size)
    seed = int(rs.randint(2**31 - 1))
    return sap_from_codes(
        codes_train, factors_train, codes_test, factors_test,
        continuous_factors=continuous_factors, n_jobs=n_jobs, seed=seed,
    )


def sap_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    continuous_factors: bool = False,
    n_jobs: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """SAP from a train and a test table (codes (N, D), factor classes (N, K))."""
    matrix = sap_score_matrix(
        codes_train, factors_train, codes_test, factors_test,
        continuous_factors=continuous_factors, n_jobs=n_jobs, seed=seed,
    )
    return {"sap": top_two_gap(matrix)}


def sap_score_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    continuous_factors: bool = False,
    n_jobs: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The (D, K) predictability matrix ``S`` of step 1. ``n_jobs`` parallelises over factors."""
    x_train, y_train, x_test, y_test = check_splits(codes_train, factors_train, codes_test, factors_test)
    if continuous_factors:
        return squared_correlations(x_train, y_train.astype(np.float64))
    columns = Parallel(n_jobs=n_jobs)(
        delayed(sap_factor_column)(x_train, y_train[:, k], x_test, y_test[:, k], seed)
        for k in range(y_train.shape[1])
    )
    return np.stack(columns, axis=1)


def sap_factor_column(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> np.ndarray:
    """Test accuracy of one-feature LinearSVCs for one factor, one per code -> (D,)."""
    out = np.empty(x_train.shape[1])
    for d in range(x_train.shape[1]):
        classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # as in the reference, use what liblinear returns
            classifier.fit(x_train[:, d : d + 1], y_train)
        out[d] = np.mean(classifier.predict(x_test[:, d : d + 1]) == y_test)
    return out


def top_two_gap(matrix: np.ndarray) -> float:
    """Mean over columns of (largest - second largest entry); one row: the largest entry."""
    ordered = np.sort(np.asarray(matrix, dtype=np.float64), axis=0)
    second = ordered[-2] if ordered.shape[0] > 1 else np.zeros(ordered.shape[1])
    return float(np.mean(ordered[-1] - second))


def squared_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``cov(z_d, v_k)^2 / (var z_d var v_k)`` with ``ddof=1``; 0 where ``var z_d <= 1e-12``."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    n = x.shape[0]
    cov = xc.T @ yc / (n - 1)
    var_x = np.sum(xc**2, axis=0) / (n - 1)
    var_y = np.sum(yc**2, axis=0) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = cov**2 / (var_x[:, None] * var_y[None, :])
    return np.where(var_x[:, None] > 1e-12, out, 0.0)
