"""Unsupervised scores of a representation: Gaussian total correlation and mean mutual information.

As implemented by disentanglement_lib (``evaluation/metrics/unsupervised_metrics.py``;
study settings in ``config/unsupervised_study_v1/metric_configs/unsupervised.gin``:
``num_train=10000``, sampling ``batch_size=16``, 20-bin histogram discretiser), on the
codes of ``num_train`` random observations (the factors are drawn but not used):

* ``gaussian_tc`` — the reference's ``gaussian_total_correlation``: the total correlation
  of a Gaussian with the codes' sample covariance ``S`` (``np.cov``, ``ddof=1``), i.e. the
  KL divergence between ``N(0, S)`` and the product of its marginals,
  ``0.5 * (sum_d log S_dd - log det S)`` (nats). It is 0 for uncorrelated codes and grows
  with linear dependence; it is not the total correlation of the codes' actual distribution.
* ``mutual_info`` — the reference's ``mutual_info_score``: the mean of the discrete mutual
  information (nats, not normalised) between the 20-bin discretised codes over all ordered
  pairs of *different* codes, ``sum_{i != j} I(z_i; z_j) / (D^2 - D)``.
* ``gaussian_wasserstein_corr`` and ``gaussian_wasserstein_corr_norm`` — the reference's
  ``gaussian_wasserstein_correlation`` ``2 tr S - 2 tr sqrtm(S * diag(S)[:, None])`` and the
  same divided by ``tr S``; returned as well because they come at no extra cost.

Deviations (edge cases where the reference gives no number, documented): with one code
there is no pair, so ``mutual_info`` is 0 (the reference divides 0 by 0); constant codes
are left out of ``gaussian_tc`` (the reference returns NaN when one is present); exactly
linearly dependent codes (e.g. a duplicated code) give ``gaussian_tc = inf``; with zero
total variance ``gaussian_wasserstein_corr_norm`` is NaN (0 / 0), as in the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from bench.data.base import FactorDataset
from bench.metrics.information import discrete_mutual_info, histogram_discretize
from bench.metrics.sampling import EncodeFn, RandomStateLike, generate_factor_code


def unsupervised(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    """Sample the codes of ``num_train`` observations and compute the unsupervised scores.

    Returns ``gaussian_tc``, ``mutual_info``, ``gaussian_wasserstein_corr`` and
    ``gaussian_wasserstein_corr_norm``.
    """
    codes, _ = generate_factor_code(dataset, encode, num_train, random_state, batch_size)
    return unsupervised_from_codes(codes, num_bins=num_bins)


def unsupervised_from_codes(codes: np.ndarray, *, num_bins: int = 20) -> dict[str, float]:
    """The unsupervised scores of codes (N, D); no factors needed."""
    x = np.asarray(codes, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"codes must be (N, D) with N >= 2 and D >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("codes contain NaN or infinite values")
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    wasserstein = gaussian_wasserstein_correlation(cov)
    trace = float(np.trace(cov))
    return {
        "gaussian_tc": gaussian_total_correlation(cov),
        "mutual_info": mean_pairwise_mutual_info(histogram_discretize(x, num_bins)),
        "gaussian_wasserstein_corr": wasserstein,
        "gaussian_wasserstein_corr_norm": wasserstein / trace if trace > 0 else float("nan"),
    }


def gaussian_total_correlation(cov: np.ndarray) -> float:
    """``0.5 * (sum log diag(cov) - log det cov)``: KL(N(0, cov) || N(0, diag(cov))).

    Codes with zero variance are constants, independent of every other code, and add
    nothing to the total correlation: they are left out (the reference computes
    ``log 0 - log 0`` and returns NaN). A singular covariance of the remaining codes (a
    code that is an exact linear function of others) gives ``inf``.
    """
    cov = np.asarray(cov, dtype=np.float64)
    varying = np.diag(cov) > 0.0
    if varying.sum() < 2:
        return 0.0
    cov = cov[np.ix_(varying, varying)]
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return float("inf")
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - logdet))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    """Squared 2-Wasserstein distance between N(0, cov) and N(0, diag(cov)) (reference formula)."""
    cov = np.asarray(cov, dtype=np.float64)
    with warnings.catch_warnings():  # a singular product (dependent codes) is expected here
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
    return float(2.0 * np.trace(cov) - 2.0 * np.real(np.trace(root)))


def mean_pairwise_mutual_info(discrete_codes: np.ndarray) -> float:
    """Mean MI (nats) over ordered pairs of different columns of a discrete (N, D) array."""
    num_codes = discrete_codes.shape[1]
    if num_codes < 2:
        return 0.0
    info = discrete_mutual_info(discrete_codes, discrete_codes)
    np.fill_diagonal(info, 0.0)
    return float(info.sum() / (num_codes**2 - num_codes))
