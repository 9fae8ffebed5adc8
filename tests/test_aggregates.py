"""IQM, stratified-bootstrap intervals and probability of improvement (rliable's definitions).

Oracles: the IQM of 1..8 by hand; scipy's Mann–Whitney U statistic (what rliable's
``probability_of_improvement`` divides by n_x·n_y); the resampling's defining property
(each task's runs only); intervals that collapse on constant scores.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import aggregates
from bench.aggregates import (
    improvement_interval, improvement_table, iqm, iqm_interval, probability_of_improvement, setting_intervals,
    stratified_resamples,
)


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1, 9, dtype=float)[:, None]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 1e9], [1.0, -1e9]])) == pytest.approx(1.0)  # outliers trimmed


def test_stratified_resamples_draw_runs_within_each_task():
    scores = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0], [3.0, 30.0, 300.0]])
    boot = stratified_resamples(scores, 500, np.random.default_rng(0))
    assert boot.shape == (500, 3, 3)
    for t in range(3):
        assert set(np.unique(boot[:, :, t])) <= set(scores[:, t])
    # runs are drawn independently per task: some resample mixes run 0 of task 0 with run 2 of task 1
    assert any(b[0, 0] == 1.0 and b[0, 1] == 30.0 for b in boot)


def test_intervals_collapse_on_constant_scores_and_are_reproducible():
    assert iqm_interval(np.full((5, 2), 0.7)) == pytest.approx((0.7, 0.7, 0.7))
    scores = np.random.default_rng(3).normal(size=(5, 3))
    a, b = iqm_interval(scores, seed=1), iqm_interval(scores, seed=1)
    assert a == b and a[1] <= a[0] <= a[2]
    assert iqm_interval(scores, seed=2) != a  # the seed is what makes it reproducible


def test_probability_of_improvement_is_the_normalised_mann_whitney_u():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, size=(5, 3)).astype(float), rng.integers(0, 4, size=(4, 3)).astype(float)
    expected = np.mean([0.5 if np.array_equal(x[:, t], y[:, t]) else
                        stats.mannwhitneyu(x[:, t], y[:, t], alternative="greater").statistic / (5 * 4) for t in range(3)])
    assert probability_of_improvement(x, y) == pytest.approx(expected)
    assert probability_of_improvement(x, y) + probability_of_improvement(y, x) == pytest.approx(1.0)
    assert probability_of_improvement(x + 10, x) == 1.0 and probability_of_improvement(x, x) == 0.5
    point, lo, hi = improvement_interval(x, y, seed=0)
    assert lo <= point <= hi and 0 <= lo and hi <= 1


def _rows(values: dict[tuple[str, str], list[float]], metric: str = "factorvae", planned: int = 3) -> pd.DataFrame:
    out = []
    for (dataset, method), seeds in values.items():
        for seed, v in enumerate(seeds):
            out.append({"dataset": dataset, "method": method, "config_id": f"{method}-{dataset}", "seed": seed,
                        "metric": metric, "value": v, "status": "ok" if not np.isnan(v) else "failed",
                        "n_seeds_planned": planned, "role": "model", "params": json.dumps({"m": method})})
    return pd.DataFrame(out)


def test_incomplete_settings_are_left_out_and_lower_is_better_flips_improvement():
    rows = _rows({("d1", "a"): [0.9, 0.8, 0.85], ("d1", "b"): [0.1, 0.2, float("nan")],
                  ("d2", "a"): [0.7, 0.6, 0.65], ("d2", "b"): [0.3, 0.2, 0.25]})
    intervals = setting_intervals(rows, ["factorvae"])
    assert set(zip(intervals["dataset"], intervals["method"])) == {("d1", "a"), ("d2", "a"), ("d2", "b")}
    fid = _rows({("d1", "a"): [10.0, 11.0, 12.0], ("d1", "b"): [30.0, 31.0, 32.0],
                 ("d2", "a"): [20.0, 21.0, 22.0], ("d2", "b"): [40.0, 41.0, 42.0]}, metric="fid")
    table = improvement_table(fid, ["fid"]).set_index(["x", "y"])
    assert table.loc[("a", "b"), "p_improvement"] == 1.0  # a's lower FID is better on both datasets
    assert table.loc[("a", "b"), "datasets"] == 2
    overall = aggregates.overall_intervals(fid, ["fid"]).set_index("method")
    assert overall.loc["a", "iqm"] == pytest.approx(iqm(np.array([[10, 20], [11, 21], [12, 22]], dtype=float)))
