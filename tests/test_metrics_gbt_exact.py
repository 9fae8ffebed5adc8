"""The NumPy gradient-boosted classifier behind DCI's default importance grows scikit-learn's trees."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from bench.metrics.dci import dci_from_codes
from bench.metrics.gbt_exact import fit_factor, fit_gbt, predict


def _table(n: int, num_features: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=n)
    x = rng.normal(size=(n, num_features))
    x[:, 0] += 0.7 * y
    x[:, 1] += y % 2
    return x, y


def _sklearn(x, y, n_stages=100, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GradientBoostingClassifier(n_estimators=n_stages, random_state=seed).fit(x, y)


@pytest.mark.parametrize("num_classes", [2, 3, 6])
def test_first_stage_grows_scikit_learns_trees(num_classes):
    """The root split (feature and threshold, to the bit) of every tree of the first stage is
    scikit-learn's, and the stage's importances agree; deeper, small nodes can hold exact ties
    between features, which both break at random."""
    x, y = _table(600, 5, num_classes)
    reference = _sklearn(x, y, n_stages=1)
    model, importance = fit_gbt(x, y, seed=0, n_stages=1)
    for t, tree in enumerate(reference.estimators_[0]):
        assert model["stages"][0].features[0][t, 0] == tree.tree_.feature[0]
        assert model["stages"][0].thresholds[0][t, 0] == tree.tree_.threshold[0]
    np.testing.assert_allclose(importance, reference.feature_importances_, atol=0.01)
    x_new, _ = _table(300, 5, num_classes, seed=1)
    assert np.mean(predict(model, x_new) == reference.predict(x_new)) > 0.97


def test_full_model_agrees_with_scikit_learn_within_its_own_seed_spread():
    x, y = _table(2000, 8, 5)
    ours = [fit_gbt(x, y, seed=s)[1] for s in range(2)]
    theirs = [_sklearn(x, y, seed=s).feature_importances_ for s in range(2)]
    spread = np.abs(theirs[0] - theirs[1]).max()
    assert np.abs(ours[0] - theirs[0]).max() < max(3 * spread, 2e-3)
    x_test, y_test = _table(1000, 8, 5, seed=2)
    model, _ = fit_gbt(x, y, seed=0)
    agreement = np.mean(predict(model, x_test) == _sklearn(x, y).predict(x_test))
    assert agreement > 0.97


def test_dci_default_matches_scikit_learn_model():
    x, y = _table(3000, 6, 4)
    factors = np.column_stack([y, (y + np.arange(3000) % 2) % 3])
    x[:, 2] += factors[:, 1]
    split = 2000
    args = (x[:split], factors[:split], x[split:], factors[split:])
    ours = dci_from_codes(*args, seed=0)
    reference = dci_from_codes(*args, seed=0, importance="sklearn_gbt")
    for key in ("dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert ours[key] == pytest.approx(reference[key], abs=5e-3)


def test_exact_ties_are_shared_between_duplicated_codes():
    """For z and an exact copy, scikit-learn's random feature order splits the importance
    about evenly; the NumPy trees do the same."""
    x, y = _table(1000, 2, 3)
    _, importance = fit_gbt(np.column_stack([x[:, :1], x[:, :1]]), y, seed=0)
    assert importance.sum() == pytest.approx(1.0)
    assert 0.3 < importance[0] < 0.7


def test_near_equal_values_are_never_split_apart():
    """Values closer than 1e-7 (FEATURE_THRESHOLD) stay on the same side, as in scikit-learn."""
    y = np.array([0, 1] * 50)
    x = np.where(y == 1, 1e-8, 0.0)[:, None] + 1.0  # the classes differ by less than the threshold
    noise = np.random.default_rng(0).normal(size=(100, 1))
    _, importance = fit_gbt(np.column_stack([x, noise]), y, seed=0, n_stages=3)
    reference = _sklearn(np.column_stack([x, noise]), y, n_stages=3)
    assert importance[0] == 0.0 == reference.feature_importances_[0]


def test_fit_factor_returns_importances_and_accuracies():
    x, y = _table(500, 4, 3)
    importance, train_acc, test_acc = fit_factor(x[:400], y[:400], x[400:], y[400:], 0)
    assert importance.shape == (4,) and importance.argmax() == 0
    assert 0.5 < test_acc <= train_acc <= 1.0


def test_single_class_is_rejected():
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_gbt(np.zeros((10, 2)), np.zeros(10, dtype=int))


@pytest.mark.parametrize("threads", [1, 3])
def test_growing_a_stages_trees_in_groups_changes_no_tree(monkeypatch, threads):
    """The trees of a stage are grown a few at a time (``ROWS_PER_CALL`` tree-rows, for the caches), the groups
    shared by ``threads`` threads: every split, leaf value, importance and training score is the one grown with
    all the trees of the stage in one call on one thread."""
    from bench.metrics import gbt_exact

    x, y = _table(700, 5, 7)
    monkeypatch.setattr(gbt_exact, "ROWS_PER_CALL", 7 * 700)
    whole, whole_importance = fit_gbt(x, y, seed=3, n_stages=4)
    for per_call in (1, 3):
        monkeypatch.setattr(gbt_exact, "ROWS_PER_CALL", per_call * 700)
        grouped, grouped_importance = fit_gbt(x, y, seed=3, n_stages=4, threads=threads)
        np.testing.assert_array_equal(grouped_importance, whole_importance)
        np.testing.assert_array_equal(grouped["train_raw"], whole["train_raw"])
        for a, b in zip(whole["stages"], grouped["stages"]):
            for level in range(gbt_exact.MAX_DEPTH):
                np.testing.assert_array_equal(a.features[level], b.features[level])
                np.testing.assert_array_equal(a.thresholds[level], b.thresholds[level])
            np.testing.assert_array_equal(a.leaf_values, b.leaf_values)


def test_training_accuracy_from_the_fits_scores_is_predicts():
    """DCI's training accuracy is read from the fit's final scores instead of a second pass over the
    trees: the classes must be exactly those ``predict`` gives on the training rows."""
    from bench.metrics.gbt_exact import _classes

    for num_classes in (2, 5):
        x, y = _table(500, 4, num_classes, seed=4)
        model, _ = fit_gbt(x, y, seed=0, n_stages=6)
        np.testing.assert_array_equal(_classes(model, model["train_raw"]), predict(model, x))


def test_spare_cores_go_to_the_factors_with_most_classes():
    """One thread per fit until the cores outnumber the concurrent fits; then the spare cores go to the fits
    with the most trees per stage (they take longest), at most MAX_THREADS_PER_FIT each."""
    from bench.metrics.dci import MAX_THREADS_PER_FIT, threads_per_factor, trees_per_stage

    assert trees_per_stage(np.array([0, 1, 1, 0])) == 1  # binary: one tree
    assert trees_per_stage(np.arange(40) % 40) == 40
    dsprites = [3, 6, 40, 32, 32]
    assert threads_per_factor(dsprites, 2) == [1] * 5
    assert threads_per_factor(dsprites, None) == [1] * 5  # joblib's default: one worker
    assert threads_per_factor(dsprites, 8) == [1, 1, 2, 2, 2]
    assert threads_per_factor(dsprites, 16) == [1, 1, 4, 4, 4]
    assert max(threads_per_factor(dsprites, 128)) == MAX_THREADS_PER_FIT


def test_dci_hands_each_fit_its_threads_and_scores_the_same(monkeypatch):
    """DCI passes every factor's share of the threads to its fit; the scores do not depend on it."""
    from bench.metrics import dci as dci_module
    from bench.metrics import gbt_exact
    from bench.metrics.suite import table_suite

    x, y = _table(600, 4, 5)
    factors = np.column_stack([y, y % 2, (y + np.arange(600)) % 3])
    single = dci_from_codes(x[:400], factors[:400], x[400:], factors[400:], n_jobs=1, seed=0)
    suite_single = table_suite(x[:400], factors[:400], x[400:], factors[400:], 0, metrics=["dci"], n_jobs=1)
    seen = []
    fit = gbt_exact.fit_gbt

    def spy(*args, threads=1, **kwargs):
        seen.append(threads)
        return fit(*args, threads=threads, **kwargs)

    monkeypatch.setattr(gbt_exact, "fit_gbt", spy)
    monkeypatch.setattr(dci_module, "threads_per_factor", lambda trees, n_jobs: [t + 1 for t in trees])
    threaded = dci_from_codes(x[:400], factors[:400], x[400:], factors[400:], n_jobs=1, seed=0)
    assert sorted(seen) == [2, 4, 6]  # trees per stage 5, 1 (binary), 3, plus one
    assert threaded == single
    seen.clear()
    suite = table_suite(x[:400], factors[:400], x[400:], factors[400:], 0, metrics=["dci"], n_jobs=1)
    assert sorted(seen) == [2, 4, 6]
    assert suite == suite_single
