"""DCI-ES: explicitness as the area under the loss-capacity curve (E), and size (S).

Eastwood, Nicolicioiu, von Kügelgen, Kekić, Träuble, Dittadi & Schölkopf, "DCI-ES: An
Extended Disentanglement Framework with Connections to Identifiability" (ICLR 2023), the
sections on explicitness (the loss-capacity curve and the area under it, ``E``) and size
(``S``, "relative to the ground truth"); section numbers not checked here. Reference:
andreinicolicioiu/DCI-ES at commit 9329daec05ac18038e080596c5bde997d28a1aaa:

* probes: ``src/loss_capacity/train_model_random_forest.py::train_test_random_forest`` with
  ``method="rf"`` and the capacities of ``configs/random_forest/config.yaml``
  (``max_depth`` 1, 2, 3, 4, 8, 10, 12, 14, 16, 18, 20, 32; ``num_trees: 100``,
  ``max_leaf_nodes: None``, ``random_state=seed``);
* curve and score: ``metrics/explitcitness.py::Explitcitness`` / ``compute_explitcitness``,
  driven as in ``src/simple_gather.py``.

For every factor ``k`` and capacity ``c`` one probe is fitted on the training codes:
a ``RandomForestClassifier`` for a discrete (categorical) factor, whose loss is
``1 - accuracy`` on the test codes, or a ``RandomForestRegressor`` for a continuous factor,
loss ``1 - R^2``. The factor's loss-capacity curve is made monotone (running minimum over
increasing capacity) and

    ``E_k = 1 - 2 * sum_trapezoid(l(c) - min l) / ((c_max - c_min) * l_b,k)``

with ``l_b,k`` the baseline loss of a probe that ignores the codes: ``1 - 1/K_k`` for a
factor of ``K_k`` classes probed by classification, 1 for regression (``baseline_loss`` in
``simple_gather.py``). ``E`` is the mean over factors. The capacity axis is the tree depth
(linear; the reference takes ``log`` of the capacity only for the MLP and RFF families).

Alongside, the DCI scores of the probe with the best mean test score (``simple_gather.py``:
``best_info_ind``): disentanglement and completeness from the forests'
``feature_importances_`` (:func:`bench.metrics.dci.disentanglement`, the same formula as the
reference's ``metrics/dci.py``) and informativeness = that mean test score.

Size ``S``: the reference code computes no size. Following the paper's definition (a
smaller code that is equally explicit is preferred), ``S = K / D``, the number of factors
over the number of code dimensions (1 for a code with one dimension per factor).

Probe families: only the random-forest family is implemented. The reference's MLP probes
(``configs/mlp``: two hidden layers of width 0..3603, capacity = parameters per factor,
torch training) and random-Fourier-feature probes (``configs/rff``) are not.

Options (defaults reproduce the reference):

* ``capacities``, ``num_trees``, ``continuous_factors`` (the indices of factors probed by
  regression; the reference takes them from its dataset class, e.g. MPI3D's
  ``_factor_discrete``; default: every factor is categorical);
* ``floor="curve_min"``: the area is measured above the curve's own lowest loss, as the
  reference's ``compute_explitcitness`` does, so a code from which no factor can be
  predicted at any capacity still scores ``E`` near 1 (read ``E`` together with the
  informativeness). ``floor="zero"``: above ``l* = 0``, the assumption stated in the
  reference's comment (``# we assume l* = 0``) and the paper's normaliser; then ``E`` can be
  negative for a curve that stays near the baseline (the reference's factor 2 is kept).
* The number of classes ``K_k`` of the baseline is the number of distinct values of the
  factor in the train and test tables (the reference uses its dataset's factor sizes).
* Probe inputs: as the reference's loader, regression targets are the classes scaled to
  [0, 1] (divided by the largest class seen) in float32; the codes are passed as given
  (the forests split on float32 copies of them either way).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from bench.data.base import FactorDataset
from bench.metrics.dci import completeness, disentanglement
from bench.metrics.sampling import EncodeFn, RandomStateLike, as_random_state, generate_factor_code
from bench.metrics.table import check_splits

#: ``configs/random_forest/config.yaml`` of the reference
REFERENCE_DEPTHS = (1, 2, 3, 4, 8, 10, 12, 14, 16, 18, 20, 32)
PROBES = ("random_forest",)
FLOORS = ("curve_min", "zero")


def dci_es(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    probe: str = "random_forest",
    capacities: tuple = REFERENCE_DEPTHS,
    num_trees: int = 100,
    continuous_factors: tuple = (),
    floor: str = "curve_min",
    n_jobs: int | None = -1,
) -> dict[str, float]:
    """Sample a train and a test table from ``dataset`` and compute DCI-ES.

    Draws ``num_train`` then ``num_test`` pairs (:func:`generate_factor_code`), then one
    integer from ``random_state`` that seeds the forests (the reference: ``seed * run_id``).
    """
    rs = as_random_state(random_state)
    codes_train, factors_train = generate_factor_code(dataset, encode, num_train, rs, batch_size)
    codes_test, factors_test = generate_factor_code(dataset, encode, num_test, rs, batch_size)
    seed = int(rs.randint(2**31 - 1))
    return dci_es_from_codes(
        codes_train, factors_train, codes_test, factors_test, probe=probe, capacities=capacities,
        num_trees=num_trees, continuous_factors=continuous_factors, floor=floor, seed=seed, n_jobs=n_jobs,
    )


def dci_es_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    probe: str = "random_forest",
    capacities: Sequence[int] = REFERENCE_DEPTHS,
    num_trees: int = 100,
    continuous_factors: Sequence[int] = (),
    floor: str = "curve_min",
    seed: int = 0,
    n_jobs: int | None = None,
) -> dict[str, float]:
    """DCI-ES of a train and a test table (codes (N, D), factor classes (N, K)).

    Returns ``dci_es_explicitness`` (E), ``dci_es_size`` (S), and ``dci_es_disentanglement``,
    ``dci_es_completeness``, ``dci_es_informativeness`` of the best probe.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES} (the MLP and RFF families are not implemented), got {probe!r}")
    if floor not in FLOORS:
        raise ValueError(f"floor must be one of {FLOORS}, got {floor!r}")
    x_train, y_train, x_test, y_test = check_splits(codes_train, factors_train, codes_test, factors_test)
    num_factors = y_train.shape[1]
    continuous = _check_factor_indices(continuous_factors, num_factors)
    caps = np.asarray(capacities, dtype=np.float64)
    if caps.ndim != 1 or caps.size < 2 or np.any(np.diff(caps) <= 0):
        raise ValueError(f"capacities must be >= 2 increasing values, got {list(capacities)}")

    losses, importances = loss_capacity_curves(
        x_train, y_train, x_test, y_test, capacities=[int(c) for c in capacities], num_trees=num_trees,
        continuous_factors=continuous, seed=seed, n_jobs=n_jobs,
    )
    baselines = [
        1.0 if k in continuous else 1.0 - 1.0 / len(np.unique(np.concatenate([y_train[:, k], y_test[:, k]])))
        for k in range(num_factors)
    ]
    per_factor = [explicitness(caps, losses[k], baselines[k], floor=floor) for k in range(num_factors)]
    scores = 1.0 - losses.mean(axis=0)
    best = int(np.argmax(scores))
    return {
        "dci_es_explicitness": float(np.mean(per_factor)),
        "dci_es_size": num_factors / x_train.shape[1],
        "dci_es_disentanglement": disentanglement(importances[best]),
        "dci_es_completeness": completeness(importances[best]),
        "dci_es_informativeness": float(scores[best]),
    }


def loss_capacity_curves(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    capacities: Sequence[int],
    num_trees: int = 100,
    continuous_factors: Sequence[int] = (),
    seed: int = 0,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Test loss of a random-forest probe per factor and depth (reference ``train_test_random_forest``).

    Returns:
        losses: (K, C) ``1 - accuracy`` (classification) or ``1 - R^2`` (regression).
        importances: C matrices (D, K) of ``|feature_importances_|``.
    """
    num_factors = y_train.shape[1]
    losses = np.empty((num_factors, len(capacities)))
    importances = []
    for c, depth in enumerate(capacities):
        matrix = np.zeros((x_train.shape[1], num_factors))
        for k in range(num_factors):
            forest_class = RandomForestRegressor if k in continuous_factors else RandomForestClassifier
            target_train, target_test = y_train[:, k], y_test[:, k]
            if k in continuous_factors:
                # the reference's loader: classes scaled to [0, 1], in float32
                top = max(int(y_train[:, k].max()), int(y_test[:, k].max()), 1)
                target_train = (target_train / np.float32(top)).astype(np.float32).astype(np.float64)
                target_test = (target_test / np.float32(top)).astype(np.float32).astype(np.float64)
            forest = forest_class(
                max_leaf_nodes=None, max_depth=depth, n_estimators=num_trees, random_state=seed, n_jobs=n_jobs
            )
            forest.fit(x_train, target_train)
            losses[k, c] = 1.0 - forest.score(x_test, target_test)
            matrix[:, k] = np.abs(forest.feature_importances_)
        importances.append(matrix)
    return losses, importances


def explicitness(capacities: np.ndarray, losses: np.ndarray, baseline_loss: float, *, floor: str = "curve_min") -> float:
    """``E`` of one loss-capacity curve (reference ``Explitcitness.add_curve`` + ``compute_explitcitness``).

    The curve is replaced by its running minimum; the trapezoid area above ``floor`` is
    normalised by ``(c_max - c_min) * baseline_loss``: ``E = 1 - 2 * area / max_area``.
    """
    x = np.asarray(capacities, dtype=np.float64)
    y = np.minimum.accumulate(np.asarray(losses, dtype=np.float64))
    if baseline_loss <= 0:
        raise ValueError(f"baseline loss must be > 0, got {baseline_loss}")
    lowest = y.min() if floor == "curve_min" else 0.0
    area = np.sum(0.5 * ((y[:-1] - lowest) + (y[1:] - lowest)) * np.diff(x))
    return float(1.0 - 2.0 * area / ((x.max() - x.min()) * baseline_loss))


def _check_factor_indices(indices: Sequence[int], num_factors: int) -> set[int]:
    out = set()
    for k in indices:
        if not isinstance(k, (int, np.integer)) or not 0 <= k < num_factors:
            raise ValueError(f"continuous_factors: {k!r} is not a factor index in [0, {num_factors})")
        out.add(int(k))
    return out
