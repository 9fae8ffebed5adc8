"""Validation of representation tables: codes (N, D) beside factor classes (N, K).

Every ``*_from_codes`` function checks its inputs here, so a malformed table fails where
it enters, with the offending shape or value in the message.
"""

from __future__ import annotations

import numpy as np


def check_table(codes: np.ndarray, factors: np.ndarray, name: str = "table") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(codes float64 (N, D), factors int64 (N, K))`` or raise ``ValueError``.

    Codes must be finite; factors must be integer class indices (integral floats are
    accepted and converted); both need the same number of rows N >= 2, D >= 1, K >= 1.
    ``name`` ("train", "test", ...) is quoted in the error messages.
    """
    x = np.asarray(codes, dtype=np.float64)
    y = np.asarray(factors)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: codes must be (N, D) and factors (N, K) with the same N, got {x.shape} and {y.shape}"
        )
    if x.shape[0] < 2 or x.shape[1] < 1 or y.shape[1] < 1:
        raise ValueError(f"{name}: need at least 2 rows, 1 code and 1 factor, got codes {x.shape}, factors {y.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{name}: codes contain NaN or infinite values (first at row {bad[0]}, code {bad[1]})")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0)):
            raise ValueError(f"{name}: factors must be integer class indices, got dtype {y.dtype} with non-integer values")
    return x, y.astype(np.int64, copy=False)


def check_splits(
    codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check a train and a test table and that they have the same codes and factors."""
    x_train, y_train = check_table(codes_train, factors_train, "train")
    x_test, y_test = check_table(codes_test, factors_test, "test")
    if x_train.shape[1] != x_test.shape[1] or y_train.shape[1] != y_test.shape[1]:
        raise ValueError(
            f"train and test must have the same number of codes and factors, got codes {x_train.shape[1]} vs "
            f"{x_test.shape[1]}, factors {y_train.shape[1]} vs {y_test.shape[1]}"
        )
    return x_train, y_train, x_test, y_test
