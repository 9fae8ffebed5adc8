"""Discrete information measures shared by MIG, Modularity, IRS and the unsupervised scores.

Definitions follow ``disentanglement_lib/evaluation/metrics/utils.py``:

* :func:`histogram_discretize` is the reference's ``_histogram_discretize``: every code
  (column) is cut into ``num_bins`` equal-width bins between its minimum and maximum
  (``np.histogram``'s edges) and each value is replaced by its bin number
  ``np.digitize(x, edges[:-1])``, i.e. 1..num_bins.
* :func:`discrete_mutual_info` is the matrix of ``sklearn.metrics.mutual_info_score``
  between every code column and every factor column, in nats:
  ``I(a; b) = sum_ij p_ij log(p_ij / (p_i p_j))`` over the contingency table of ``(a, b)``.
* :func:`discrete_entropy` is ``H(b) = I(b; b)``, the reference's ``discrete_entropy``.

The reference loops over every (code, factor) pair with ``mutual_info_score``; here all
contingency tables of one code against all factors come from one ``np.bincount``, and the
MI terms are summed per block with ``np.add.reduceat``. The values equal sklearn's up to
floating-point rounding (tested to 1e-12).

Arrays are row-major: ``(N, D)`` codes and ``(N, K)`` factors, one row per sample
(the reference uses transposed ``(D, N)`` arrays).
"""

from __future__ import annotations

import numpy as np


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Bin every column of ``codes`` (N, D) into ``num_bins`` equal-width bins -> (N, D) int64.

    Bin numbers run from 1 to ``num_bins`` exactly as ``np.digitize(x, np.histogram(x,
    num_bins)[1][:-1])`` in the reference. A constant column falls in a single bin.
    """
    x = np.asarray(codes)
    if x.ndim != 2:
        raise ValueError(f"codes must be a 2-D (N, D) array, got shape {x.shape}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if not np.all(np.isfinite(x)):
        raise ValueError("codes contain NaN or infinite values; cannot discretise them")
    out = np.empty(x.shape, dtype=np.int64)
    for d in range(x.shape[1]):
        edges = np.histogram_bin_edges(x[:, d], bins=num_bins)
        out[:, d] = np.digitize(x[:, d], edges[:-1])
    return out


def dense_labels(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel every column of a discrete (N, C) array to 0..n_c-1.

    Returns:
        labels: (N, C) int64, column ``c`` holding the index of each value among the
            sorted distinct values of that column.
        sizes: (C,) int64, the number of distinct values ``n_c`` of each column.
    """
    x = np.asarray(columns)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (N, C) array of discrete values, got shape {x.shape}")
    labels = np.empty(x.shape, dtype=np.int64)
    sizes = np.empty(x.shape[1], dtype=np.int64)
    for c in range(x.shape[1]):
        values, labels[:, c] = np.unique(x[:, c], return_inverse=True)
        sizes[c] = len(values)
    return labels, sizes


def discrete_mutual_info(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mutual information (nats) between every column of ``a`` (N, Da) and of ``b`` (N, Db).

    Both arrays hold discrete values (bin numbers, factor classes). Returns the (Da, Db)
    matrix ``M[i, j] = I(a_i; b_j)``, equal to ``sklearn.metrics.mutual_info_score(b[:, j],
    a[:, i])`` as in the reference's ``discrete_mutual_info``.
    """
    a_lab, a_sizes = dense_labels(a)
    b_lab, b_sizes = dense_labels(b)
    n = a_lab.shape[0]
    if b_lab.shape[0] != n:
        raise ValueError(f"both arrays need the same number of rows, got {n} and {b_lab.shape[0]}")
    if n == 0 or a_lab.shape[1] == 0 or b_lab.shape[1] == 0:
        raise ValueError(f"need at least one sample and one column on each side, got shapes {a_lab.shape}, {b_lab.shape}")
    b_offsets = np.concatenate([[0], np.cumsum(b_sizes)[:-1]]).astype(np.int64)
    b_total = int(b_sizes.sum())
    b_global = b_lab + b_offsets  # (N, Db): column j's values in its own block of the joint axis
    b_counts = np.bincount(b_global.ravel(), minlength=b_total).astype(np.float64)  # marginal counts

    log_n = np.log(n)
    mi = np.empty((a_lab.shape[1], b_lab.shape[1]))
    for i in range(a_lab.shape[1]):
        n_a = int(a_sizes[i])
        # joint counts of (a_i, b_j) for every j at once: rows = value of a_i, columns = b blocks
        joint = np.bincount((a_lab[:, i, None] * b_total + b_global).ravel(), minlength=n_a * b_total)
        joint = joint.reshape(n_a, b_total).astype(np.float64)
        a_counts = joint[:, : b_sizes[0]].sum(axis=1)  # every b block sums to a_i's counts
        nonzero = joint > 0
        safe = np.where(nonzero, joint, 1.0)
        # p_ij log(p_ij / (p_i p_j)) with p = count / n
        terms = safe / n * (np.log(safe) + log_n - np.log(a_counts)[:, None] - np.log(b_counts)[None, :])
        # as sklearn: terms below machine epsilon are 0, and so is the MI of a single-valued column
        terms = np.where(nonzero & (np.abs(terms) >= np.finfo(np.float64).eps), terms, 0.0)
        mi[i] = np.add.reduceat(terms.sum(axis=0), b_offsets)
        if n_a == 1:
            mi[i] = 0.0
    mi[:, b_sizes == 1] = 0.0
    return np.maximum(mi, 0.0)


def discrete_entropy(b: np.ndarray) -> np.ndarray:
    """Entropy (nats) of every column of a discrete (N, K) array -> (K,).

    Equals the reference's ``discrete_entropy`` (``mutual_info_score(y, y)``).
    """
    labels, sizes = dense_labels(b)
    n = labels.shape[0]
    if n == 0:
        raise ValueError("cannot compute the entropy of zero samples")
    out = np.empty(labels.shape[1])
    for k in range(labels.shape[1]):
        p = np.bincount(labels[:, k], minlength=int(sizes[k])) / n
        out[k] = -np.sum(p * np.log(p))  # every counted value occurs, so p > 0
    return out
