"""Aggregates that say how uncertain a ranking is: IQM with stratified-bootstrap intervals, probability of improvement.

With 3–5 seeds a mean ± std hides how uncertain a comparison is. Following rliable
(Agarwal et al., NeurIPS 2021, "Deep RL at the Edge of the Statistical Precipice";
google-research/rliable ``metrics.py``, ``library.py``), for a score matrix of
``runs × tasks`` (seeds × datasets):

* **IQM**: the interquartile mean, the 25 %-trimmed mean of all runs × tasks
  (``aggregate_iqm``: ``scipy.stats.trim_mean(scores, 0.25, axis=None)``);
* its **95 % stratified-bootstrap interval**: each resample draws, for every task
  independently, as many runs with replacement as it has (``StratifiedBootstrap``: runs
  resampled within each task, tasks kept), and the interval is the 2.5th–97.5th percentile of
  the statistic over the resamples (``method = "percentile"``);
* **probability of improvement** P(X > Y): per task, the Mann–Whitney U statistic of X's runs
  against Y's over ``n_x · n_y`` (a tie counts ½; identical run sets give ½), averaged over
  tasks (``probability_of_improvement``), with its interval from resampling X and Y
  independently in the same stratified way (``StratifiedIndependentBootstrap``).

The resampling is seeded (``seed``), so a report is reproducible; rliable's default is 50,000
replications, ours 2,000 (the intervals' end points move by about 1e-3 between seeds of the
bootstrap at that size). A metric where lower is better (FID, MSE, LPIPS) has its scores negated
before P(X > Y), so "improvement" always means better. Only complete settings enter (every
planned seed finished): an incomplete one is left out, never averaged as if complete.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bench.results import FAILED, OK
from bench.tables import grid_rows, lower_is_better

REPS = 2000
SIZE = 0.95


def iqm(scores: np.ndarray) -> float:
    """The interquartile mean of all entries of ``scores`` (runs × tasks)."""
    return float(stats.trim_mean(np.asarray(scores, dtype=np.float64), proportiontocut=0.25, axis=None))


def stratified_resamples(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, runs, tasks): for each task independently, its runs drawn with replacement."""
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    return scores[idx, np.arange(tasks)[None, None, :]]


def _percentile_interval(values: np.ndarray, size: float) -> tuple[float, float]:
    tail = 100 * (1 - size) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def iqm_interval(scores: np.ndarray, *, reps: int = REPS, size: float = SIZE, seed: int = 0) -> tuple[float, float, float]:
    """(IQM, lower, upper) with the stratified-bootstrap percentile interval."""
    scores = np.asarray(scores, dtype=np.float64)
    boot = stratified_resamples(scores, reps, np.random.default_rng(seed)).reshape(reps, -1)
    values = stats.trim_mean(boot, proportiontocut=0.25, axis=1)
    return (iqm(scores), *_percentile_interval(values, size))


def _task_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + ½ P(X = Y) per task for x (..., n_x, tasks), y (..., n_y, tasks): the normalised U statistic."""
    greater = (x[..., :, None, :] > y[..., None, :, :]).mean(axis=(-3, -2))
    ties = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return greater + 0.5 * ties


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks; x, y are (runs × tasks) with the same tasks."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    per_task = [0.5 if np.array_equal(x[:, t], y[:, t]) else float(_task_improvement(x[:, [t]], y[:, [t]])[0])
                for t in range(x.shape[1])]
    return float(np.mean(per_task))


def improvement_interval(x: np.ndarray, y: np.ndarray, *, reps: int = REPS, size: float = SIZE,
                         seed: int = 0) -> tuple[float, float, float]:
    """(P(X > Y), lower, upper), X and Y resampled independently within each task."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    bx, by = stratified_resamples(x, reps, rng), stratified_resamples(y, reps, rng)
    values = _task_improvement(bx, by).mean(axis=-1)
    return (probability_of_improvement(x, y), *_percentile_interval(values, size))


# -- from result rows ---------------------------------------------------------------------------
def _complete_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """ok metric rows of settings whose every planned seed finished with no failed row."""
    rows = grid_rows(rows)
    keys = ["dataset", "method", "config_id"]
    seed_ok = rows.groupby(keys + ["seed"], dropna=False)["status"].agg(lambda s: not bool((s == FAILED).any()))
    finished = seed_ok.groupby(level=[0, 1, 2], dropna=False).sum()
    planned = rows.groupby(keys, dropna=False)["n_seeds_planned"].max()
    complete = {k for k in planned.index if finished.get(k, 0) >= planned.loc[k]}
    ok = rows[(rows["status"] == OK) & rows["value"].notna() & (rows["metric"].astype(str) != "")]
    mask = np.array([tuple(k) in complete for k in ok[keys].itertuples(index=False, name=None)], dtype=bool)
    return ok.loc[mask]  # a boolean array: an empty list would select no columns instead of no rows


def setting_intervals(rows: pd.DataFrame, metrics: list[str], *, seed: int = 0) -> pd.DataFrame:
    """Per dataset × method × config × metric: IQM over seeds with its interval (complete settings only)."""
    ok = _complete_scores(rows)
    out = []
    for (dataset, method, config, metric), sub in ok[ok["metric"].isin(metrics)].groupby(
            ["dataset", "method", "config_id", "metric"], sort=True):
        values = sub.groupby("seed")["value"].mean().to_numpy()[:, None]
        point, lo, hi = iqm_interval(values, seed=seed)
        out.append({"dataset": dataset, "method": method, "config_id": config, "metric": metric,
                    "runs": len(values), "iqm": point, "iqm_lo": lo, "iqm_hi": hi})
    return pd.DataFrame(out, columns=["dataset", "method", "config_id", "metric", "runs", "iqm", "iqm_lo", "iqm_hi"])


def _algorithm_matrices(ok: pd.DataFrame, metric: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per algorithm (method + hyperparameters), its seeds × datasets matrix on the datasets all share.

    Only algorithms complete on every dataset of the table with one number of seeds enter.
    """
    sub = ok[ok["metric"] == metric]
    datasets = sorted(sub["dataset"].unique())
    out: dict[str, np.ndarray] = {}
    labels: dict[str, set] = {}
    for (method, params), alg in sub.groupby(["method", "params"], sort=True):
        if sorted(alg["dataset"].unique()) != datasets:
            continue
        per = [alg[alg["dataset"] == d].groupby("seed")["value"].mean().to_numpy() for d in datasets]
        if len({len(p) for p in per}) != 1:
            continue
        labels.setdefault(method, set()).add(params)
        out[f"{method}\x00{params}"] = np.stack(per, axis=1)
    # a method with one setting is named by the method alone; several: method [config]
    named = {}
    for key, matrix in out.items():
        method, params = key.split("\x00")
        name = method if len(labels[method]) == 1 else f"{method} [{sorted(labels[method]).index(params) + 1}]"
        named[name] = -matrix if lower_is_better(metric) else matrix
    return named, datasets


def overall_intervals(rows: pd.DataFrame, metrics: list[str], *, seed: int = 0) -> pd.DataFrame:
    """Per algorithm and metric, IQM over seeds × datasets with its interval (a table spanning datasets)."""
    ok = _complete_scores(rows)
    out = []
    for metric in metrics:
        matrices, datasets = _algorithm_matrices(ok, metric)
        if len(datasets) < 2:
            continue
        sign = -1.0 if lower_is_better(metric) else 1.0  # the matrices are sign-flipped for P(X > Y): undo
        for name, matrix in matrices.items():
            point, lo, hi = iqm_interval(sign * matrix, seed=seed)
            out.append({"method": name, "metric": metric, "datasets": len(datasets), "runs": matrix.shape[0],
                        "iqm": point, "iqm_lo": lo, "iqm_hi": hi})
    return pd.DataFrame(out, columns=["method", "metric", "datasets", "runs", "iqm", "iqm_lo", "iqm_hi"])


def improvement_table(rows: pd.DataFrame, metrics: list[str], *, seed: int = 0) -> pd.DataFrame:
    """Per metric and ordered pair of algorithms, P(X better than Y) over the datasets they share, with its interval."""
    ok = _complete_scores(rows)
    out = []
    for metric in metrics:
        matrices, datasets = _algorithm_matrices(ok, metric)
        names = sorted(matrices)
        for x in names:
            for y in names:
                if x == y:
                    continue
                point, lo, hi = improvement_interval(matrices[x], matrices[y], seed=seed)
                out.append({"metric": metric, "x": x, "y": y, "datasets": len(datasets),
                            "p_improvement": point, "lo": lo, "hi": hi})
    return pd.DataFrame(out, columns=["metric", "x", "y", "datasets", "p_improvement", "lo", "hi"])


def attach(board: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with ``{metric}_iqm``, ``_iqm_lo``, ``_iqm_hi`` per setting (NaN where incomplete)."""
    board = board.copy()
    for metric, sub in intervals.groupby("metric"):
        keyed = sub.set_index(["dataset", "method", "config_id"])
        index = list(board[["dataset", "method", "config_id"]].itertuples(index=False, name=None))
        for col in ("iqm", "iqm_lo", "iqm_hi"):
            board[f"{metric}_{col}"] = [keyed[col].get(k, np.nan) for k in index]
    return board


#: at most this many algorithms in a rendered probability-of-improvement matrix (the CSV has every pair)
MAX_MATRIX = 12


def improvement_matrices(improvement: pd.DataFrame) -> dict[str, tuple[list[str], dict[tuple[str, str], tuple]]]:
    """Per metric: (algorithms, {(x, y): (p, lo, hi)}) for rendering; metrics with too many algorithms are left out."""
    out = {}
    for metric, sub in improvement.groupby("metric", sort=True):
        names = sorted(set(sub["x"]) | set(sub["y"]))
        if len(names) > MAX_MATRIX:
            continue
        out[metric] = (names, {(r.x, r.y): (r.p_improvement, r.lo, r.hi) for r in sub.itertuples()})
    return out
