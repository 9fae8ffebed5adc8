"""Opt-in fast importance for DCI: histogram gradient boosting (a named deviation, never the default).

DCI's reference importance (``bench.metrics.dci``) fits one scikit-learn
``GradientBoostingClassifier`` per factor: 100 stages of depth-3 regression trees, one tree
per class and stage, each split found by sorting the samples of the node. On a 10,000-row
table with 10 codes that is about 15-50 ms per tree on one CPU core with scikit-learn's class
(about 85 s for 5 factors with 34 classes in all) and about a third of that with the
level-wise NumPy trees of :mod:`bench.metrics.gbt_exact` (the default); it dominates the
factor suite's time either way.

``importance="hist_gbt"`` replaces each model by a ``HistGradientBoostingClassifier`` with
the same boosting settings — 100 iterations, learning rate 0.1, trees of depth at most 3,
one sample per leaf allowed, no L2 penalty, no early stopping — which bins each code into
at most 255 quantile bins and finds splits on histograms, roughly 30x faster per model.
The importance of code ``d`` for factor ``k`` is the total split gain of the splits on
``d`` summed over all trees of factor ``k``'s model, normalised to sum to 1 (the
counterpart of ``feature_importances_``, which sums impurity decreases).

What differs from the reference definition, and why the numbers are close but not equal:

* split thresholds are bin edges (at most 255 per code) instead of every midpoint;
* the split gain is the second-order loss reduction ``G_L^2/H_L + G_R^2/H_R - G^2/H``
  (XGBoost eq. 7, hessian-weighted) instead of the squared-error impurity decrease of the
  gradients (the hessian-free counterpart); the leaf values are Newton steps in both;
* ties between equally good splits on different codes go to the lowest code index, where
  the reference's trees visit the codes in a random order. For *exactly duplicated* codes
  the reference therefore spreads the importance over the copies (completeness
  ``1 - ln 2 / ln D`` for ``[z, z]``) while this variant gives it all to one copy
  (completeness close to 1): do not use it to compare representations that may contain
  exact copies of a code.

On the ``mixed`` table of ``benchmarks/equivalence_disentanglement_lib.py`` (study sample
sizes, seed 0) the scores moved from the reference's by 0.014 (disentanglement), 0.013
(completeness) and 0.008 (informativeness); on the identity and noise tables by at most
0.008 (run that script with ``--dci-importance hist_gbt``). They are close, but they are
not the reference numbers and must not be mixed with them in one table. The gains are read from the fitted model's ``_predictors`` (node
records with ``feature_idx``, ``gain``, ``is_leaf``), a private attribute that
scikit-learn has kept since 0.21; a version without it fails with a clear error.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits


def hist_gbt_fit_factor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int, threads: int = 1
) -> tuple[np.ndarray, float, float]:
    """Fit one factor's model; return (normalised split-gain importances (D,), train acc, test acc).
    ``threads`` is ignored: the fit keeps to one OpenMP thread (more were never measured to pay for the
    small tables DCI fits, and the factors' fits already run in parallel)."""
    model = HistGradientBoostingClassifier(
        learning_rate=0.1,
        max_iter=100,
        max_depth=3,
        max_leaf_nodes=None,
        min_samples_leaf=1,
        l2_regularization=0.0,
        early_stopping=False,
        random_state=seed,
    )
    with threadpool_limits(limits=1):  # parallelism is over factors; nested OpenMP threads oversubscribe
        model.fit(x_train, y_train)
        train_acc = float(np.mean(model.predict(x_train) == y_train))
        test_acc = float(np.mean(model.predict(x_test) == y_test))
    predictors = getattr(model, "_predictors", None)
    if predictors is None:
        import sklearn

        raise RuntimeError(
            f"importance='hist_gbt' reads HistGradientBoostingClassifier._predictors, which scikit-learn "
            f"{sklearn.__version__} does not have; use importance='gbt'"
        )
    gains = np.zeros(x_train.shape[1])
    for stage in predictors:
        for tree in stage:
            splits = tree.nodes[tree.nodes["is_leaf"] == 0]
            np.add.at(gains, splits["feature_idx"].astype(np.int64), splits["gain"])
    total = gains.sum()
    importances = gains / total if total > 0 else gains
    return importances, train_acc, test_acc
