"""The ground-truth factor metrics computed together, sharing samples and fits.

Run one by one, the registered metrics each draw and encode their own sample: MIG, SAP,
DCI, Modularity/Explicitness, IRS and the unsupervised scores would encode 10,000-15,000
observations each. disentanglement_lib's ``unsupervised_study_v1`` evaluates every metric
with the same ``evaluation.random_seed`` and the same sampling batch size (16), so all of
these metrics draw *the same* training table (10,000 rows) and, where they have one, the
same test table (the next 5,000 rows). This module therefore draws the two tables once and
computes every table metric from them:

* :func:`table_suite` — the metrics of a given train/test representation table (what
  ``bench score`` calls on a user's table);
* :func:`factor_suite` — samples the tables from a dataset and an ``encode`` function, then
  :func:`table_suite`, plus the two metrics that need their own draws with a factor held
  fixed (BetaVAE, FactorVAE).

Work shared across metrics: the encoded tables; the 20-bin discretisation of the training
codes and its mutual information with the factors (MIG and Modularity use the same matrix);
and one ``joblib.Parallel`` pool for DCI's per-factor gradient-boosted trees (largest first),
which works in the background while BetaVAE and FactorVAE draw and encode their samples; the
cheap fits (the per-factor logistic regressions of Explicitness and LinearSVC sets of SAP) run
in the calling process after those, so the workers import only NumPy and torch.

Equality with the metrics run alone (and with the reference):

* With an integer seed ``s``, every metric sees exactly the draws it would see alone: the
  tables come from ``RandomState(s)`` in the reference's order, BetaVAE and FactorVAE each
  start from their own ``RandomState(s)``, and the classifier seed of DCI and SAP is the
  next integer drawn after the test table — exactly as :func:`bench.metrics.dci.dci` and
  :func:`bench.metrics.sap.sap` draw it. So ``factor_suite(..., s)`` returns the same numbers
  as calling each registered metric with seed ``s``.
* Where sharing changes the draws: the reference's metrics that have no test table (MIG,
  IRS, unsupervised) draw only the training table, and those with one draw it next, so for
  equal ``num_train`` / ``batch_size`` nothing changes. Sample sizes are therefore set once
  for the suite (``num_train``, ``num_test``, ``batch_size``); to give one metric a different
  sample size, run its registered function on its own. The classifiers of DCI and SAP get
  a fixed seed where the reference leaves scikit-learn's global RNG in charge (it only
  breaks ties between equally good splits); the values agree within the reference's own
  seed-to-seed spread (see ``benchmarks/equivalence_disentanglement_lib.py``).
* With a ``np.random.RandomState`` or ``np.random.Generator``, every metric group starts
  from a copy of its current state (the caller's object is not advanced), mirroring one
  seed per metric.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from bench.data.base import FactorDataset
from bench.metrics import dci as dci_module
from bench.metrics.betavae import betavae_score
from bench.metrics.dci_es import dci_es_from_codes
from bench.metrics.factorvae import factor_vae_score
from bench.metrics.infomec import infomec_from_codes
from bench.metrics.information import discrete_entropy, discrete_mutual_info, histogram_discretize
from bench.metrics.irs import irs_from_codes
from bench.metrics.mig import mig_from_mutual_info
from bench.metrics.modularity import explicitness_per_factor, modularity
from bench.metrics.sampling import EncodeFn, RandomStateLike, as_random_state, generate_factor_code
from bench.metrics.sap import squared_correlations, sap_factor_column, top_two_gap
from bench.metrics.table import check_table
from bench.metrics.unsupervised import unsupervised_from_codes

#: metrics computed from a representation table, with the parameters each accepts
TABLE_METRIC_PARAMS: dict[str, tuple[str, ...]] = {
    "mig": ("num_bins",),
    "sap": ("continuous_factors",),
    "dci": ("importance",),
    "modularity_explicitness": ("num_bins",),
    "irs": ("diff_quantile", "num_bins"),
    "unsupervised": ("num_bins",),
}
#: metrics that draw their own observations with one factor held fixed
SAMPLING_METRIC_PARAMS: dict[str, tuple[str, ...]] = {
    "betavae": ("batch_size", "num_train", "num_eval", "encode_batch_size"),
    "factorvae": ("batch_size", "num_train", "num_eval", "num_variance_estimate", "prune_threshold", "encode_batch_size"),
}
TABLE_METRICS: tuple[str, ...] = tuple(TABLE_METRIC_PARAMS)
FACTOR_METRICS: tuple[str, ...] = tuple(SAMPLING_METRIC_PARAMS) + TABLE_METRICS
#: table metrics computed only when named (not in the defaults): their probes are costly
#: (DCI-ES fits a forest per factor and capacity) and their outputs postdate the tables above
OPT_IN_TABLE_METRIC_PARAMS: dict[str, tuple[str, ...]] = {
    "infomec": ("discrete_latents", "n_neighbors", "active_fraction", "max_iter", "zero_information"),
    "dci_es": ("probe", "capacities", "num_trees", "continuous_factors", "floor"),
}
#: table metrics that also need the test table
NEEDS_TEST = ("sap", "dci", "modularity_explicitness", "dci_es")
#: table metrics seeded by the integer drawn after the tables
_SEEDED = {"sap", "dci", "infomec", "dci_es"}


def factor_suite(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    metrics: Sequence[str] = FACTOR_METRICS,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    n_jobs: int | None = -1,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, float]:
    """Compute the selected factor metrics of ``encode`` on ``dataset`` with shared samples.

    Args:
        dataset: ground-truth factor dataset.
        encode: images (n, C, H, W) in [0, 1] -> codes (n, D).
        random_state: int seed (each metric starts from ``RandomState(seed)``, as in the
            reference study), or a RandomState / Generator (each metric starts from a copy).
        metrics: any of :data:`FACTOR_METRICS` (default: all).
        num_train, num_test, batch_size: the shared tables (study defaults 10,000 / 5,000 / 16).
        n_jobs: workers for the classifier fits (``-1``: all cores). Results do not depend on it.
        params: per-metric options, e.g. ``{"mig": {"num_bins": 20}, "betavae": {"num_train": 500}}``;
            accepted keys in :data:`TABLE_METRIC_PARAMS` and :data:`SAMPLING_METRIC_PARAMS`.

    Returns:
        One flat dict with the keys of every selected metric (see :func:`table_suite`, plus
        ``betavae``, ``betavae_train``, ``factorvae``, ``factorvae_train``, ``factorvae_active_dims``).
    """
    selected = _check_metrics(metrics, FACTOR_METRICS + tuple(OPT_IN_TABLE_METRIC_PARAMS))
    params = _check_params(params, selected, {**TABLE_METRIC_PARAMS, **SAMPLING_METRIC_PARAMS, **OPT_IN_TABLE_METRIC_PARAMS})
    start = _starting_state(random_state)

    finish_tables: Callable[[], dict[str, float]] = dict
    table_metrics = [m for m in selected if m in TABLE_METRIC_PARAMS or m in OPT_IN_TABLE_METRIC_PARAMS]
    if table_metrics:
        rs = start()
        codes_train, factors_train = generate_factor_code(dataset, encode, num_train, rs, batch_size)
        codes_test = factors_test = None
        if any(m in NEEDS_TEST for m in table_metrics):
            codes_test, factors_test = generate_factor_code(dataset, encode, num_test, rs, batch_size)
        # the classifier fits start in the background; BetaVAE and FactorVAE sample meanwhile
        finish_tables = _start_table_suite(
            codes_train, factors_train, codes_test, factors_test, rs,
            metrics=table_metrics, n_jobs=n_jobs, params={m: params[m] for m in table_metrics if m in params},
        )
    results: dict[str, float] = {}
    # this process's scikit-learn fits on one BLAS thread: the workers hold the other cores, and idle OpenBLAS
    # threads spin (the non-DCI metrics of the speed benchmark: 2.7-3.1 CPU-s with two threads, 1.9-2.1 with one)
    with threadpool_limits(1, user_api="blas"):
        if "betavae" in selected:
            results.update(betavae_score(dataset, encode, start(), **params.get("betavae", {})))
        if "factorvae" in selected:
            results.update(factor_vae_score(dataset, encode, start(), **params.get("factorvae", {})))
        results.update(finish_tables())
    return results


def table_suite(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray | None,
    factors_test: np.ndarray | None,
    random_state: RandomStateLike,
    *,
    metrics: Sequence[str] = TABLE_METRICS,
    n_jobs: int | None = -1,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, float]:
    """Compute the selected table metrics of a representation table.

    Args:
        codes_train: (N, D) float codes of the training table.
        factors_train: (N, K) integer factor classes of the same rows.
        codes_test, factors_test: (M, D) / (M, K) test table, used by ``sap``, ``dci`` and
            ``modularity_explicitness`` (explicitness); may be ``None`` when none of them is
            selected. MIG, Modularity, IRS and the unsupervised scores use the training table.
        random_state: int seed, RandomState or Generator; one integer is drawn from it (if
            ``sap`` or ``dci`` is selected) to seed their classifiers.
        metrics: any of :data:`TABLE_METRICS` = ``mig``, ``sap``, ``dci``,
            ``modularity_explicitness``, ``irs``, ``unsupervised`` (default: all), and the
            opt-in ``infomec`` and ``dci_es`` (:data:`OPT_IN_TABLE_METRIC_PARAMS`).
        n_jobs: workers for the classifier fits (``-1``: all cores; ``1``: in-process).
        params: per-metric options (:data:`TABLE_METRIC_PARAMS`), e.g. ``{"irs": {"diff_quantile": 1.0}}``.
            ``{"dci": {"importance": "hist_gbt"}}`` selects the opt-in fast DCI importance of
            :mod:`bench.metrics.dci_hist` (a documented deviation; default ``"gbt"``, the reference).

    Returns:
        A flat dict: ``mig``; ``sap``; ``dci_disentanglement``, ``dci_completeness``,
        ``dci_informativeness`` (test accuracy), ``dci_informativeness_train``;
        ``modularity``, ``explicitness`` (test AUC), ``explicitness_train``; ``irs``,
        ``irs_active_dims``; ``gaussian_tc``, ``mutual_info``, ``gaussian_wasserstein_corr``,
        ``gaussian_wasserstein_corr_norm`` — for the selected metrics.
    """
    finish = _start_table_suite(
        codes_train, factors_train, codes_test, factors_test, random_state, metrics=metrics, n_jobs=n_jobs, params=params
    )
    with threadpool_limits(1, user_api="blas"):  # (as in factor_suite)
        return finish()


def _start_table_suite(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray | None,
    factors_test: np.ndarray | None,
    random_state: RandomStateLike,
    *,
    metrics: Sequence[str],
    n_jobs: int | None,
    params: Mapping[str, Mapping[str, Any]] | None,
) -> Callable[[], dict[str, float]]:
    """:func:`table_suite` in two steps: the checks, the information metrics and the dispatch
    of the classifier fits to ``joblib`` workers happen now; the returned function waits for
    the fits and returns all the scores. The caller may do other work in between."""
    selected = _check_metrics(metrics, TABLE_METRICS + tuple(OPT_IN_TABLE_METRIC_PARAMS))
    params = _check_params(params, selected, {**TABLE_METRIC_PARAMS, **OPT_IN_TABLE_METRIC_PARAMS})
    if "dci" in selected and params["dci"].get("importance", "gbt") not in dci_module.IMPORTANCES:
        raise ValueError(f"params['dci']['importance'] = {params['dci']['importance']!r}; expected one of {dci_module.IMPORTANCES}")
    x_train, y_train = check_table(codes_train, factors_train, "train")
    needs_test = [m for m in selected if m in NEEDS_TEST]
    x_test = y_test = None
    if needs_test:
        if codes_test is None or factors_test is None:
            raise ValueError(f"metrics {needs_test} need a test table, but codes_test/factors_test is None")
        x_test, y_test = check_table(codes_test, factors_test, "test")
        if x_test.shape[1] != x_train.shape[1] or y_test.shape[1] != y_train.shape[1]:
            raise ValueError(
                f"train and test must have the same codes and factors, got train {x_train.shape}/{y_train.shape}, "
                f"test {x_test.shape}/{y_test.shape}"
            )
    seed = int(as_random_state(random_state).randint(2**31 - 1)) if _SEEDED & set(selected) else 0

    results: dict[str, float] = {}
    mutual_info: dict[int, np.ndarray] = {}

    def info_matrix(num_bins: int) -> np.ndarray:  # shared by MIG and Modularity
        if num_bins not in mutual_info:
            mutual_info[num_bins] = discrete_mutual_info(histogram_discretize(x_train, num_bins), y_train)
        return mutual_info[num_bins]

    if "mig" in selected:
        results["mig"] = mig_from_mutual_info(info_matrix(params["mig"].get("num_bins", 20)), discrete_entropy(y_train))
    if "modularity_explicitness" in selected:
        results["modularity"] = modularity(info_matrix(params["modularity_explicitness"].get("num_bins", 20)))
    if "irs" in selected:
        results.update(irs_from_codes(x_train, y_train, **params["irs"]))
    if "unsupervised" in selected:
        results.update(unsupervised_from_codes(x_train, **params["unsupervised"]))
    if "infomec" in selected:
        results.update(infomec_from_codes(x_train, y_train, seed=seed, **params["infomec"]))
    if "dci_es" in selected:
        results.update(dci_es_from_codes(x_train, y_train, x_test, y_test, seed=seed, n_jobs=n_jobs, **params["dci_es"]))

    tasks = _classifier_tasks(selected, params, x_train, y_train, x_test, y_test, seed, n_jobs)
    # DCI's gradient-boosted fits go to the workers; the cheap scikit-learn fits (SAP, Explicitness) run in
    # this process when the caller collects, so the workers never import scikit-learn (a second each)
    pooled = [task for task in tasks if task[0] == "dci"]
    local = [task for task in tasks if task[0] != "dci"]
    pending = (Parallel(n_jobs=n_jobs, return_as="generator")(delayed(fn)(*args) for _, _, fn, args in pooled)
               if pooled else iter(()))
    return lambda: _finish_table_suite(results, selected, params, pooled, pending, local, x_train, y_train)


def _finish_table_suite(
    results: dict[str, float],
    selected: list[str],
    params: dict[str, dict[str, Any]],
    pooled: list[tuple[str, int, Callable, tuple]],
    pending: Any,
    local: list[tuple[str, int, Callable, tuple]],
    x_train: np.ndarray,
    y_train: np.ndarray,
) -> dict[str, float]:
    """Run the ``local`` fits, collect the ``pooled`` ones (in task order) and add DCI, SAP and
    Explicitness to ``results``."""
    by_key = {(name, k): fn(*args) for name, k, fn, args in local}
    by_key.update({(name, k): out for (name, k, _, _), out in zip(pooled, pending)})
    num_factors = y_train.shape[1]

    if "dci" in selected:
        fits = [by_key[("dci", k)] for k in range(num_factors)]
        importance = np.stack([f[0] for f in fits], axis=1).astype(np.float64)
        results.update({
            "dci_disentanglement": dci_module.disentanglement(importance),
            "dci_completeness": dci_module.completeness(importance),
            "dci_informativeness": float(np.mean([f[2] for f in fits])),
            "dci_informativeness_train": float(np.mean([f[1] for f in fits])),
        })
    if "sap" in selected:
        if params["sap"].get("continuous_factors", False):
            matrix = squared_correlations(x_train, y_train.astype(np.float64))
        else:
            matrix = np.stack([by_key[("sap", k)] for k in range(num_factors)], axis=1)
        results["sap"] = top_two_gap(matrix)
    if "modularity_explicitness" in selected:
        pairs = [by_key[("explicitness", k)] for k in range(num_factors)]
        results["explicitness"] = float(np.mean([p[1] for p in pairs]))
        results["explicitness_train"] = float(np.mean([p[0] for p in pairs]))
    return results


def _classifier_tasks(
    selected: list[str],
    params: dict[str, dict[str, Any]],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    seed: int,
    n_jobs: int | None,
) -> list[tuple[str, int, Callable, tuple]]:
    """Every classifier fit as ``(metric, factor, function, args)``, most expensive first (DCI's fits with
    their threads for ``n_jobs`` workers, :func:`bench.metrics.dci.threads_per_factor`).

    Cost estimates (relative): a gradient-boosted model fits one tree per class and stage
    (one for a binary factor), so its cost grows with the number of classes; the logistic
    regressions and SVC sets are an order of magnitude cheaper.
    """
    tasks: list[tuple[float, str, int, Callable, tuple]] = []
    trees = [dci_module.trees_per_stage(y_train[:, k]) for k in range(y_train.shape[1])]
    threads = dci_module.threads_per_factor(trees, n_jobs)
    for k in range(y_train.shape[1]):
        if "dci" in selected:
            # the same per-factor fit as bench.metrics.dci.gbt_importance, scheduled here
            importance = params["dci"].get("importance", "gbt")
            tasks.append(((0.3 if importance == "hist_gbt" else 10.0) * trees[k], "dci", k,
                          dci_module.factor_fit(importance),
                          (x_train, y_train[:, k], x_test, y_test[:, k], seed, threads[k])))
        if "modularity_explicitness" in selected:
            tasks.append((1.0, "explicitness", k, _explicitness_standardised,
                          (x_train, y_train[:, k], x_test, y_test[:, k])))
        if "sap" in selected and not params["sap"].get("continuous_factors", False):
            tasks.append((0.5, "sap", k, sap_factor_column, (x_train, y_train[:, k], x_test, y_test[:, k], seed)))
    tasks.sort(key=lambda t: -t[0])
    return [t[1:] for t in tasks]


def _explicitness_standardised(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[float, float]:
    """Standardise with the training statistics, then :func:`~bench.metrics.modularity.explicitness_per_factor`."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0.0, std, 1.0)
    return explicitness_per_factor((x_train - mean) / std, y_train, (x_test - mean) / std, y_test)


def _starting_state(random_state: RandomStateLike) -> Callable[[], np.random.RandomState]:
    """A factory of RandomStates that all start where ``random_state`` starts (see module docstring)."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        seed = int(random_state)
        return lambda: np.random.RandomState(seed)
    snapshot = copy.deepcopy(as_random_state(random_state))
    return lambda: copy.deepcopy(snapshot)


def _check_metrics(metrics: Sequence[str], allowed: Sequence[str]) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected any of {list(allowed)}")
    if not metrics:
        raise ValueError(f"no metric selected; expected any of {list(allowed)}")
    return list(dict.fromkeys(metrics))


def _check_params(
    params: Mapping[str, Mapping[str, Any]] | None, selected: list[str], accepted: Mapping[str, tuple[str, ...]]
) -> dict[str, dict[str, Any]]:
    """Per-metric options for the selected metrics; options of known, unselected metrics are ignored."""
    out: dict[str, dict[str, Any]] = {m: {} for m in selected}
    for metric, values in (params or {}).items():
        if metric not in accepted:
            raise ValueError(f"params given for unknown metric {metric!r}; expected any of {list(accepted)}")
        if metric not in selected:
            continue
        bad = [key for key in values if key not in accepted[metric]]
        if bad:
            raise ValueError(f"params[{metric!r}]: unknown option(s) {bad}; accepted: {list(accepted[metric])}")
        out[metric] = dict(values)
    return out
