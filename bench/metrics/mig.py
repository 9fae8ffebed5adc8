"""Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs", eq. 4).

Definition as implemented by disentanglement_lib (``evaluation/metrics/mig.py``, study
settings in ``config/unsupervised_study_v1/metric_configs/mig.gin``: ``num_train=10000``,
sampling ``batch_size=16``, ``histogram_discretizer`` with ``num_bins=20``):

1. discretise every code into 20 equal-width bins (:func:`~bench.metrics.information.histogram_discretize`);
2. ``I[d, k]`` = discrete mutual information (nats) between code ``d`` and factor ``k``;
3. for every factor, the gap between the largest and second largest ``I[:, k]``, divided
   by the factor's entropy ``H(v_k)``; MIG is the mean over factors.

The paper estimates the mutual information of continuous codes; the reference (and this
module) uses the histogram plug-in estimate above, which is what published numbers use.

Deviations (edge cases where the reference gives no number, documented):

* a single code has no second-best code: the gap is then ``I[0, k]`` (second best 0);
* a factor that takes one value in the sample has zero entropy, so its normalised gap is
  undefined: :func:`mig_from_codes` raises a ``ValueError`` naming the factor.
"""

from __future__ import annotations

import numpy as np

from bench.data.base import FactorDataset
from bench.metrics.information import discrete_entropy, discrete_mutual_info, histogram_discretize
from bench.metrics.sampling import EncodeFn, RandomStateLike, generate_factor_code
from bench.metrics.table import check_table


def mig(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    """Sample ``num_train`` (factors, codes) pairs from ``dataset`` and compute MIG.

    The draws are the reference's (``generate_batch_factor_code`` in batches of
    ``batch_size``). Returns ``{"mig": score}``.
    """
    codes, factors = generate_factor_code(dataset, encode, num_train, random_state, batch_size)
    return mig_from_codes(codes, factors, num_bins=num_bins)


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> dict[str, float]:
    """MIG of codes (N, D) against factor classes (N, K). Returns ``{"mig": score}``."""
    codes, factors = check_table(codes, factors)
    info = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    return {"mig": mig_from_mutual_info(info, discrete_entropy(factors))}


def mig_from_mutual_info(mutual_info: np.ndarray, factor_entropy: np.ndarray) -> float:
    """Mean over factors of (largest - second largest MI) / H(factor).

    Args:
        mutual_info: (D, K) mutual information between codes and factors (nats).
        factor_entropy: (K,) entropy of every factor (nats).
    """
    info = np.asarray(mutual_info, dtype=np.float64)
    entropy = np.asarray(factor_entropy, dtype=np.float64)
    constant = np.flatnonzero(entropy <= 0.0)
    if constant.size:
        raise ValueError(
            f"MIG: factor(s) {constant.tolist()} take a single value in the sample (zero entropy); "
            "the normalised gap is undefined"
        )
    top = np.sort(info, axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros(top.shape[1])
    return float(np.mean((top[0] - second) / entropy))

