"""Interventional Robustness Score (Suter et al. 2019, "Robustly Disentangled Causal
Mechanisms: Validating Deep Representations for Interventional Robustness", §4, Def. 5-6).

Definition as implemented by disentanglement_lib (``evaluation/metrics/irs.py``;
settings in ``config/sample/irs/irs.gin``: ``num_train=10000``, sampling ``batch_size=16``,
``diff_quantile=0.99``, the factors passed through the 20-bin histogram discretiser):

1. drop the codes that are constant on the sample (variance 0);
2. for every factor ``k`` and every value ``g`` it takes (after discretisation), the
   ``diff_quantile`` quantile (``np.percentile``, linear interpolation) of
   ``|z - E[z | v_k = g]|`` over the samples with ``v_k = g``; averaged over the values
   ``g`` this is ``EMPIDA[d, k]``, the expected deviation of code ``d`` when all factors
   except ``k`` are intervened on;
3. normalise by the code's maximal deviation ``max |z_d - mean z_d|``:
   ``IRS[d, k] = 1 - EMPIDA[d, k] / max_dev_d``; code ``d`` scores ``max_k IRS[d, k]``;
4. the score is the mean of the per-code scores weighted by ``max_dev_d``.

With no active code the score is 0, as in the reference. ``diff_quantile=1.0`` is the
paper's version (maximum deviation).

Defect of the reference fixed here (documented): its ``num_active_dims`` is
``np.sum(active_mus)``, the sum of all *values* of the active codes, not their number.
``irs_active_dims`` is the number of codes with non-zero variance.
"""

from __future__ import annotations

import numpy as np

from bench.data.base import FactorDataset
from bench.metrics.information import histogram_discretize
from bench.metrics.sampling import EncodeFn, RandomStateLike, generate_factor_code
from bench.metrics.table import check_table


def irs(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    diff_quantile: float = 0.99,
    num_bins: int = 20,
) -> dict[str, float]:
    """Sample ``num_train`` (factors, codes) pairs from ``dataset`` and compute IRS.

    Returns ``{"irs": score, "irs_active_dims": number of non-constant codes}``.
    """
    codes, factors = generate_factor_code(dataset, encode, num_train, random_state, batch_size)
    return irs_from_codes(codes, factors, diff_quantile=diff_quantile, num_bins=num_bins)


def irs_from_codes(
    codes: np.ndarray, factors: np.ndarray, *, diff_quantile: float = 0.99, num_bins: int = 20
) -> dict[str, float]:
    """IRS of codes (N, D) against factor classes (N, K) (steps 1-4 of the module docstring)."""
    if not 0.0 <= diff_quantile <= 1.0:
        raise ValueError(f"diff_quantile must be in [0, 1], got {diff_quantile}")
    x, y = check_table(codes, factors)
    groups = histogram_discretize(y, num_bins)
    active = x.var(axis=0) > 0.0
    if not active.any():
        return {"irs": 0.0, "irs_active_dims": 0.0}
    scores, max_dev = irs_per_code(x[:, active], groups, diff_quantile)
    return {"irs": float(np.average(scores, weights=max_dev)), "irs_active_dims": float(active.sum())}


def irs_per_code(codes: np.ndarray, groups: np.ndarray, diff_quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-code IRS ``max_k IRS[d, k]`` and maximal deviation ``max_dev_d`` (both (D,)).

    ``codes`` (N, D) must have no constant column; ``groups`` (N, K) are discrete factor values.
    """
    max_dev = np.max(np.abs(codes - codes.mean(axis=0)), axis=0)
    empida = np.zeros((codes.shape[1], groups.shape[1]))
    for k in range(groups.shape[1]):
        values = np.unique(groups[:, k])
        for g in values:
            z = codes[groups[:, k] == g]
            empida[:, k] += np.percentile(np.abs(z - z.mean(axis=0)), q=diff_quantile * 100, axis=0)
        empida[:, k] /= len(values)
    irs_matrix = 1.0 - empida / max_dev[:, None]
    return irs_matrix.max(axis=1), max_dev
