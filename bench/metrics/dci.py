"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018).

"A Framework for the Quantitative Evaluation of Disentangled Representations" (ICLR 2018),
§2, with gradient-boosted trees as the regressor, as implemented by disentanglement_lib
(``disentanglement_lib/evaluation/metrics/dci.py``; study defaults ``num_train=10000``,
``num_test=5000`` in ``config/unsupervised_study_v1/metric_configs/dci.gin``, sampling
``batch_size=16``).

For each factor ``k`` a ``GradientBoostingClassifier`` (scikit-learn defaults) predicts the
factor class from the codes. Its ``feature_importances_`` form column ``k`` of the
importance matrix ``R`` (D codes x K factors), ``R[d, k]`` = relative importance of code
``d`` for predicting factor ``k``. By default the model is grown by
:mod:`bench.metrics.gbt_exact` (the same trees, all classes of a stage and all nodes of a
level at once: about 2.9x less CPU time than scikit-learn's class on the reference table);
``importance="sklearn_gbt"`` fits scikit-learn's class itself.

* Disentanglement (§2, "Disentanglement"): code ``d`` scores ``D_d = 1 - H_K(P_d.)`` where
  ``P_d. = R[d, :] / sum_k R[d, k]`` and ``H_K`` is the entropy in base ``K``; the total is
  ``sum_d rho_d D_d`` with ``rho_d = sum_k R[d, k] / sum R``.
* Completeness (§2, "Completeness"): factor ``k`` scores
  ``C_k = 1 - H_D(R[:, k] / sum_d R[d, k])``; the total weights ``C_k`` by the factor's
  share of the total importance, as the reference does.
* Informativeness (§2): the reference reports the mean classification *accuracy* over
  factors on the test codes (and on the training codes), not a prediction error.

As in the reference, ``1e-11`` is added to every importance before normalising (so an
all-zero row or column has uniform weights and entropy 1), and an all-zero matrix is
weighted uniformly (scores 0).

Deviations from the reference (documented):

* Each classifier gets ``random_state=seed``; the reference passes none, so sklearn uses
  the global NumPy RNG, which breaks ties between equally good split features (e.g.
  duplicated codes, or a few samples in a deep node) at random. The NumPy trees break such
  ties with their own draw from ``seed``: the scores differ from scikit-learn's by the same
  tie noise (2e-4 on the reference table) as two seeds of the reference do. :func:`dci`
  draws the seed from ``random_state`` after all observations are sampled, so the sampled
  codes are the reference's.
* With a single factor (or a single code) the base-1 entropy is undefined (the reference
  gives NaN); the per-code (per-factor) score is then 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.ensemble import GradientBoostingClassifier

from bench.data.base import FactorDataset
from bench.metrics import gbt_exact
from bench.metrics.dci_hist import hist_gbt_fit_factor
from bench.metrics.sampling import EncodeFn, RandomStateLike, as_random_state, generate_factor_code

#: added to every importance before normalising, as in the reference
_EPS = 1e-11
#: the most threads one factor's fit gets. :mod:`~bench.metrics.gbt_exact` grows a stage's groups of trees in
#: threads, but much of a tree's time holds the GIL: a 40-class factor at 10,000 rows fitted 1.15-1.39x faster
#: with 2 threads than with 1 on 2 free cores (several runs), so more than a few threads would mostly contend
MAX_THREADS_PER_FIT = 4


def dci(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    n_jobs: int | None = -1,
    importance: str = "gbt",
) -> dict[str, float]:
    """Sample train and test codes from ``dataset`` and compute DCI.

    ``importance``: ``"gbt"`` (default, the reference's ``GradientBoostingClassifier`` grown in
    NumPy), ``"sklearn_gbt"`` (scikit-learn's class) or ``"hist_gbt"``, the opt-in histogram
    variant of :mod:`bench.metrics.dci_hist` (a documented deviation, for large codes on a CPU).

    Draws ``num_train`` then ``num_test`` (factors, observation) pairs in batches of
    ``batch_size`` (:func:`bench.metrics.sampling.generate_factor_code`, the reference's
    draw order), then one integer from ``random_state`` that seeds the classifiers.

    Returns:
        ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness`` (mean test
        accuracy) and ``dci_informativeness_train`` (mean training accuracy).
    """
    rs = as_random_state(random_state)
    codes_train, factors_train = generate_factor_code(dataset, encode, num_train, rs, batch_size)
    codes_test, factors_test = generate_factor_code(dataset, encode, num_test, rs, batch_size)
    seed = int(rs.randint(2**31 - 1))
    return dci_from_codes(codes_train, factors_train, codes_test, factors_test, n_jobs=n_jobs, seed=seed,
                          importance=importance)


def dci_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    n_jobs: int | None = None,
    seed: int = 0,
    importance: str = "gbt",
) -> dict[str, float]:
    """DCI from codes (N, D) and factor classes (N, K) of a train and a test split.

    ``n_jobs`` is passed to ``joblib.Parallel`` over the K per-factor fits (``None``: joblib's
    default, i.e. sequential unless inside a ``joblib.parallel_config`` block; ``-1``: all
    cores). Results do not depend on it.
    """
    importance, train_acc, test_acc = gbt_importance(
        codes_train, factors_train, codes_test, factors_test, n_jobs=n_jobs, seed=seed, importance=importance
    )
    return {
        "dci_disentanglement": disentanglement(importance),
        "dci_completeness": completeness(importance),
        "dci_informativeness": test_acc,
        "dci_informativeness_train": train_acc,
    }


def gbt_importance(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    n_jobs: int | None = None,
    seed: int = 0,
    importance: str = "gbt",
) -> tuple[np.ndarray, float, float]:
    """Fit one default ``GradientBoostingClassifier`` per factor (``importance``: which implementation,
    see :func:`factor_fit`).

    Returns:
        importance: (D, K) float64, ``|feature_importances_|`` of factor ``k``'s model in
            column ``k``.
        train_accuracy, test_accuracy: accuracies averaged over factors.
    """
    fit_factor = factor_fit(importance)
    x_train, y_train = _check_split(codes_train, factors_train, "train")
    x_test, y_test = _check_split(codes_test, factors_test, "test")
    if x_train.shape[1] != x_test.shape[1] or y_train.shape[1] != y_test.shape[1]:
        raise ValueError("train and test splits must have the same number of codes and factors")
    # largest class counts first: the slowest fits start first, balancing the workers
    trees = [trees_per_stage(y_train[:, k]) for k in range(y_train.shape[1])]
    threads = threads_per_factor(trees, n_jobs)
    order = sorted(range(y_train.shape[1]), key=lambda k: -trees[k])
    done = Parallel(n_jobs=n_jobs)(
        delayed(fit_factor)(x_train, y_train[:, k], x_test, y_test[:, k], seed, threads[k]) for k in order
    )
    fits = [fit for _, fit in sorted(zip(order, done))]
    importance = np.stack([f[0] for f in fits], axis=1).astype(np.float64)
    train_accuracy = float(np.mean([f[1] for f in fits]))
    test_accuracy = float(np.mean([f[2] for f in fits]))
    return importance, train_accuracy, test_accuracy


def trees_per_stage(factor: np.ndarray) -> int:
    """Trees a gradient-boosted classifier of one factor's classes grows per stage: one per class, one if binary."""
    classes = len(np.unique(factor))
    return classes if classes > 2 else 1


def threads_per_factor(trees: Sequence[int], n_jobs: int | None) -> list[int]:
    """Threads for each factor's fit (``trees``: each one's :func:`trees_per_stage`) when the fits run on
    ``n_jobs`` workers: the cores ``n_jobs`` allows, shared in proportion to the trees, at least one and at
    most :data:`MAX_THREADS_PER_FIT` each.

    With no more cores than concurrent fits every fit gets one thread (the cores are the bound, not the
    longest fit); on a many-core machine the many-class factors, which take longest, get the spare ones
    (dSprites' 3 / 6 / 40 / 32 / 32 classes on 16 cores: 1, 1, 4, 4, 4).
    """
    cores, total = effective_n_jobs(n_jobs), sum(trees)
    return [int(np.clip(cores * t // total, 1, MAX_THREADS_PER_FIT)) for t in trees]


def disentanglement_per_code(importance_matrix: np.ndarray) -> np.ndarray:
    """``1 - H_K`` of each code's normalised importance row (paper §2), shape (D,)."""
    num_factors = importance_matrix.shape[1]
    if num_factors == 1:
        return np.ones(importance_matrix.shape[0])
    return 1.0 - scipy.stats.entropy(importance_matrix.T + _EPS, base=num_factors)


def disentanglement(importance_matrix: np.ndarray) -> float:
    """Importance-weighted mean of :func:`disentanglement_per_code` (weights ``rho_d``)."""
    importance_matrix = np.asarray(importance_matrix, dtype=np.float64)
    per_code = disentanglement_per_code(importance_matrix)
    weights = _uniform_if_zero(importance_matrix)
    code_share = weights.sum(axis=1) / weights.sum()
    return float(np.sum(per_code * code_share))


def completeness_per_factor(importance_matrix: np.ndarray) -> np.ndarray:
    """``1 - H_D`` of each factor's normalised importance column (paper §2), shape (K,)."""
    num_codes = importance_matrix.shape[0]
    if num_codes == 1:
        return np.ones(importance_matrix.shape[1])
    return 1.0 - scipy.stats.entropy(importance_matrix + _EPS, base=num_codes)


def completeness(importance_matrix: np.ndarray) -> float:
    """Importance-weighted mean of :func:`completeness_per_factor` (reference weighting)."""
    importance_matrix = np.asarray(importance_matrix, dtype=np.float64)
    per_factor = completeness_per_factor(importance_matrix)
    weights = _uniform_if_zero(importance_matrix)
    factor_share = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_factor * factor_share))


def _uniform_if_zero(importance_matrix: np.ndarray) -> np.ndarray:
    """The matrix itself, or all ones when it sums to zero (uniform weights)."""
    if importance_matrix.sum() == 0.0:
        return np.ones_like(importance_matrix)
    return importance_matrix


def factor_fit(importance: str = "gbt"):
    """The per-factor fit ``(x_train, y_train, x_test, y_test, seed, threads=1) -> (importances, train acc,
    test acc)`` (``threads``: see :func:`threads_per_factor`).

    ``"gbt"`` (default): scikit-learn's default ``GradientBoostingClassifier`` grown level-wise
    in NumPy (:mod:`bench.metrics.gbt_exact`; the same trees, 3-4x less CPU time);
    ``"sklearn_gbt"``: scikit-learn's class itself; ``"hist_gbt"``: the opt-in histogram
    variant (:mod:`bench.metrics.dci_hist`, a documented deviation).
    """
    if importance not in _FACTOR_FITS:
        raise ValueError(f"dci: importance = {importance!r}; expected one of {IMPORTANCES}")
    return _FACTOR_FITS[importance]


def _fit_factor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int, threads: int = 1
) -> tuple[np.ndarray, float, float]:
    """Fit one factor's scikit-learn classifier; return (|importances| (D,), train acc, test acc).
    ``threads`` is ignored: scikit-learn grows these trees on one thread."""
    model = GradientBoostingClassifier(random_state=seed)
    model.fit(x_train, y_train)
    importances = np.abs(model.feature_importances_)
    train_acc = float(np.mean(model.predict(x_train) == y_train))
    test_acc = float(np.mean(model.predict(x_test) == y_test))
    return importances, train_acc, test_acc


_FACTOR_FITS = {"gbt": gbt_exact.fit_factor, "sklearn_gbt": _fit_factor, "hist_gbt": hist_gbt_fit_factor}
#: the ``importance`` values of DCI (see :func:`factor_fit`)
IMPORTANCES = tuple(_FACTOR_FITS)


def _check_split(codes: np.ndarray, factors: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split: codes (N, D) float, factors (N, K) int, same N."""
    x = np.asarray(codes, dtype=np.float64)
    y = np.asarray(factors)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: codes must be (N, D) and factors (N, K) with equal N, got {x.shape}, {y.shape}")
    return x, y
