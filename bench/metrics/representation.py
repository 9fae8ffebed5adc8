"""Scalar codes from multi-dimensional latent units, for the factor metrics.

The factor metrics score one number per latent *unit*. Some methods have vector-valued
units: DisDiff (Yang et al. 2023) splits its representation into ``U`` units of ``d``
dimensions each, EncDiff (Yang et al. 2024) produces ``U`` concept tokens. Their codes
have shape ``(N, U, d)``. Two reductions to a 2-D table are offered:

* ``"pca"`` (DisDiff's protocol, ``evaluate.py::eval_func`` of the authors' code): for every
  unit separately, a one-component PCA fitted on the codes of the evaluation set, and the
  unit's code is its projection on that component -> ``(N, U)``;
* ``"flatten"``: every dimension of every unit becomes its own code -> ``(N, U * d)``.

A PCA component is defined up to its sign; here the sign makes the largest-magnitude
loading positive, so the reduction is deterministic. None of the factor metrics depends on
the sign of a code. The PCA is computed from the SVD of the centred unit codes (the same
component as ``sklearn.decomposition.PCA(n_components=1)``).

DisDiff fits the PCA on the codes of the whole dataset and then scores a lookup table of
the projections. :class:`UnitReducer` keeps the fitted means and components so the same
projection can be applied to the codes of new observations (:func:`reduced_encoder`),
which the sampling metrics need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

REDUCTIONS = ("pca", "flatten")


@dataclass(frozen=True)
class UnitReducer:
    """A fitted reduction of (n, U, d) unit codes to a 2-D code table.

    Attributes:
        mode: ``"pca"`` or ``"flatten"``.
        mean: (U, d) per-unit means of the fitting codes (``"pca"`` only).
        components: (U, d) unit-norm first principal direction of every unit (``"pca"`` only).
        explained_variance_ratio: (U,) share of each unit's variance its component explains.
    """

    mode: str
    num_units: int
    unit_dim: int
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    explained_variance_ratio: np.ndarray | None = None

    def transform(self, codes: np.ndarray) -> np.ndarray:
        """Reduce codes (n, U, d) -> (n, U) for ``"pca"``, (n, U * d) for ``"flatten"``."""
        x = _check_units(codes)
        if x.shape[1:] != (self.num_units, self.unit_dim):
            raise ValueError(
                f"codes have {x.shape[1]} units of dimension {x.shape[2]}, but the reducer was fitted on "
                f"{self.num_units} units of dimension {self.unit_dim}"
            )
        if self.mode == "flatten":
            return x.reshape(len(x), -1)
        return np.einsum("nud,ud->nu", x - self.mean[None], self.components)


def fit_unit_reducer(codes: np.ndarray, mode: str = "pca") -> UnitReducer:
    """Fit the reduction ``mode`` on codes (N, U, d); see the module docstring."""
    if mode not in REDUCTIONS:
        raise ValueError(f"unknown unit reduction {mode!r}; expected one of {REDUCTIONS}")
    x = _check_units(codes)
    n, num_units, unit_dim = x.shape
    if mode == "flatten":
        return UnitReducer("flatten", num_units, unit_dim)
    if n < 2:
        raise ValueError(f"a PCA needs at least 2 codes, got {n}")
    mean = x.mean(axis=0)
    components = np.empty((num_units, unit_dim))
    ratio = np.empty(num_units)
    for u in range(num_units):
        centred = x[:, u, :] - mean[u]
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        direction = vt[0]
        direction = direction * (1.0 if direction[np.argmax(np.abs(direction))] >= 0 else -1.0)
        components[u] = direction
        total = np.sum(singular**2)
        ratio[u] = singular[0] ** 2 / total if total > 0 else 0.0
    return UnitReducer("pca", num_units, unit_dim, mean, components, ratio)


def reduce_units(codes: np.ndarray, mode: str = "pca") -> np.ndarray:
    """Fit the reduction on ``codes`` (N, U, d) and apply it to them (DisDiff's protocol)."""
    return fit_unit_reducer(codes, mode).transform(codes)


def reduced_encoder(
    encode_units: Callable[[np.ndarray], np.ndarray], reducer: UnitReducer
) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap an ``encode`` returning (n, U, d) unit codes into one returning the reduced codes."""
    return lambda images: reducer.transform(encode_units(images))


def _check_units(codes: np.ndarray) -> np.ndarray:
    x = np.asarray(codes, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"unit codes must have shape (N, U, d), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("unit codes contain NaN or infinite values")
    return x
