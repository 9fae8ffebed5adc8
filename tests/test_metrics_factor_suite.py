"""BetaVAE, MIG, SAP, Modularity/Explicitness, IRS, unsupervised scores and the shared suite.

The oracles are disentanglement_lib's own (``evaluation/metrics/*_test.py``): a
representation equal to the factors scores in [0.9, 1], an all-zero or per-sample-permuted
one in [0, 0.2], a duplicated one ``[z, z]`` has DCI completeness 1 - ln2/ln10 (5 factors,
10 codes) and MIG 0, and the hand-built mutual-information matrices give the closed-form
modularity values. Agreement with the reference code itself is checked by
``benchmarks/equivalence_disentanglement_lib.py`` (it needs a checkout of the reference).
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics
from sklearn.linear_model import LogisticRegression

from bench import registry
from bench.metrics.betavae import betavae_score
from bench.metrics.dci import dci
from bench.metrics.factorvae import factor_vae_score
from bench.metrics.information import discrete_entropy, discrete_mutual_info, histogram_discretize
from bench.metrics.irs import irs, irs_from_codes
from bench.metrics.mig import mig, mig_from_codes
from bench.metrics.modularity import modularity, modularity_explicitness
from bench.metrics.representation import fit_unit_reducer, reduce_units, reduced_encoder
from bench.metrics.sampling import generate_factor_code
from bench.metrics.sap import sap, sap_from_codes, top_two_gap
from bench.metrics.suite import FACTOR_METRICS, factor_suite, table_suite
from bench.metrics.unsupervised import gaussian_total_correlation, unsupervised, unsupervised_from_codes
from test_metrics_factorvae_dci import PixelFactors, identity_encode

FIVE = PixelFactors((3, 4, 3, 4, 3))  # 5 factors: [z, z] has 10 codes
SAMPLING = dict(num_train=300, num_eval=300, batch_size=16)
SUITE = dict(num_train=1000, num_test=500, n_jobs=1, params={"betavae": SAMPLING})
ONE_MINUS_LN2_LN10 = 1.0 - np.log(2) / np.log(10)


def zero_encode(x: np.ndarray) -> np.ndarray:
    return np.zeros((len(x), 5))


def duplicated_encode(x: np.ndarray) -> np.ndarray:
    z = identity_encode(x)
    return np.concatenate([z, z], axis=1)


def permuting_encoder(seed: int):
    """Every code vector is a random permutation of the (scaled) factors."""
    rs = np.random.RandomState(seed)
    return lambda x: np.stack([rs.permutation(row) for row in identity_encode(x).astype(np.float64)])


@pytest.fixture(scope="module")
def identity_scores() -> dict[str, float]:
    return factor_suite(FIVE, identity_encode, 0, metrics=("betavae", "mig", "dci", "modularity_explicitness", "irs"),
                        **SUITE)


@pytest.fixture(scope="module")
def zero_scores() -> dict[str, float]:
    return factor_suite(FIVE, zero_encode, 0, metrics=("mig", "sap", "dci", "modularity_explicitness", "irs",
                                                         "unsupervised"), **SUITE)


# -- discrete information (utils_test.py) ------------------------------------------------
def test_histogram_discretize_reference_example():
    target = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]]).T
    expected = np.array([[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]]).T
    np.testing.assert_array_equal(histogram_discretize(target, num_bins=3), expected)


def test_discrete_mutual_info_and_entropy_reference_examples():
    xs = np.array([[1, 2, 1, 2], [1, 1, 2, 2]]).T
    ys = np.array([[1, 2, 1, 2], [2, 2, 1, 1]]).T
    np.testing.assert_allclose(discrete_mutual_info(xs, ys), [[np.log(2), 0.0], [0.0, np.log(2)]], atol=1e-15)
    target = np.array([[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]]).T
    np.testing.assert_allclose(discrete_entropy(target), [np.log(3), np.log(3)])


def test_vectorised_mutual_info_equals_sklearn_pairwise():
    rs = np.random.RandomState(0)
    codes = histogram_discretize(rs.normal(size=(500, 4)) + rs.randint(3, size=(500, 1)), 20)
    factors = rs.randint(0, 5, size=(500, 3))
    factors[:, 2] = 7  # a constant factor: MI exactly 0, as sklearn
    expected = np.array([[sklearn.metrics.mutual_info_score(factors[:, j], codes[:, i]) for j in range(3)]
                         for i in range(4)])
    got = discrete_mutual_info(codes, factors)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.all(got[:, 2] == 0.0)


# -- Modularity: hand-built mutual-information matrices (modularity_explicitness_test.py) --
DIAG = np.diag(5.0 * np.ones(5))


@pytest.mark.parametrize(
    "matrix, expected",
    [
        (DIAG, 1.0),
        (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 2.0 / 3.0),  # an empty code
        (np.zeros((10, 10)), 0.0),
        (np.vstack([DIAG, DIAG]), 1.0),  # redundant codes
        (DIAG[:2, :], 1.0),  # missed factors
        (np.hstack([DIAG, DIAG]), 1.0 - 1.0 / 9.0),  # one code, two factors
    ],
)
def test_modularity_closed_form(matrix, expected):
    np.testing.assert_allclose(modularity(matrix), expected)


# -- identity representation scores in [0.9, 1] -------------------------------------------
@pytest.mark.parametrize("key", ["betavae", "mig", "modularity", "explicitness", "irs",
                                 "dci_disentanglement", "dci_completeness"])
def test_identity_representation_scores_high(identity_scores, key):
    assert 0.9 <= identity_scores[key] <= 1.0


def test_sap_identity_scores_high_for_continuous_factors():
    """As the reference's sap_score_test: the continuous variant on the identity representation."""
    codes, factors = generate_factor_code(FIVE, identity_encode, 1000, 0, 16)
    assert 0.9 <= sap_from_codes(codes, factors, codes, factors, continuous_factors=True)["sap"] <= 1.0


def test_sap_discrete_binary_factors():
    """Discrete SAP on binary factors: the own code is always right, any other code is at chance."""
    data = PixelFactors((2, 2, 2))
    codes, factors = generate_factor_code(data, identity_encode, 600, 0, 16)
    test_codes, test_factors = generate_factor_code(data, identity_encode, 400, 1, 16)
    score = sap_from_codes(codes, factors, test_codes, test_factors, n_jobs=1, seed=0)["sap"]
    assert 0.4 <= score <= 0.6
    np.testing.assert_allclose(top_two_gap(np.array([[1.0, 0.2], [0.5, 0.9], [0.1, 0.3]])), (0.5 + 0.6) / 2)


# -- useless representations score in [0, 0.2] ---------------------------------------------
@pytest.mark.parametrize("key", ["mig", "sap", "modularity", "irs", "dci_disentanglement", "dci_completeness"])
def test_zero_representation_scores_low(zero_scores, key):
    assert -1e-12 <= zero_scores[key] <= 0.2  # DCI of an all-zero importance matrix: 1 - H(uniform), rounding
    assert zero_scores["irs_active_dims"] == 0.0


def test_zero_representation_explicitness_is_chance_auc(zero_scores):
    """Explicitness is a ROC AUC: a useless representation sits at chance, 0.5, not at 0."""
    np.testing.assert_allclose(zero_scores["explicitness"], 0.5)
    assert zero_scores["gaussian_tc"] == 0.0 and zero_scores["mutual_info"] == 0.0


def test_betavae_zero_representation_scores_at_chance():
    data = PixelFactors((2,) * 10)  # chance level 1/10
    assert 0.0 <= betavae_score(data, lambda x: np.zeros((len(x), 4)), 0, **SAMPLING)["betavae"] <= 0.2


def test_permuted_representation_scores_low():
    data = PixelFactors((10,) * 5)
    codes, factors = generate_factor_code(data, permuting_encoder(0), 10000, 0, 16)
    info = discrete_mutual_info(histogram_discretize(codes, 20), factors)
    assert 0.0 <= modularity(info) <= 0.2
    assert 0.0 <= mig_from_codes(codes, factors)["mig"] <= 0.2
    betavae = betavae_score(PixelFactors((3,) * 5), permuting_encoder(1), 0, **SAMPLING)
    assert 0.0 <= betavae["betavae"] <= 0.2


# -- duplicated representation [z, z] ------------------------------------------------------
def test_duplicated_representation():
    scores = factor_suite(FIVE, duplicated_encode, 0, metrics=("mig", "dci", "modularity_explicitness"), **SUITE)
    assert 0.0 <= scores["mig"] <= 0.1  # two codes carry each factor: no gap
    target = ONE_MINUS_LN2_LN10  # importance split over 2 of D = 10 codes
    assert target - 0.1 <= scores["dci_completeness"] <= target + 0.1
    assert 0.9 <= scores["dci_disentanglement"] <= 1.0
    assert 0.9 <= scores["modularity"] <= 1.0


# -- IRS ---------------------------------------------------------------------------------
def test_irs_counts_active_dims_not_their_values():
    def encode(x):  # 5 informative codes with large values and 2 constant ones
        return np.concatenate([100.0 * identity_encode(x), np.full((len(x), 2), 3.0)], axis=1)

    scores = irs(FIVE, encode, 0, num_train=500)
    assert scores["irs_active_dims"] == 5.0
    assert 0.9 <= scores["irs"] <= 1.0


def test_irs_step_by_step_on_a_small_table():
    """IRS by hand on 4 rows: one factor, code 0 follows it, code 1 does not."""
    factors = np.array([[0], [0], [1], [1]])
    codes = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    # code 0: no deviation within a factor value -> IRS 1; code 1: deviation 0.5 at
    # quantile 1.0 out of a maximal deviation 0.5 -> IRS 0; weights max_dev = (0.5, 0.5)
    np.testing.assert_allclose(irs_from_codes(codes, factors, diff_quantile=1.0)["irs"], 0.5)


# -- unsupervised scores --------------------------------------------------------------------
def test_gaussian_total_correlation_closed_form():
    rho = 0.6
    np.testing.assert_allclose(gaussian_total_correlation(np.array([[1.0, rho], [rho, 1.0]])), -0.5 * np.log(1 - rho**2))
    np.testing.assert_allclose(gaussian_total_correlation(np.eye(5)), 0.0)


def test_unsupervised_scores_on_independent_and_dependent_codes():
    rs = np.random.RandomState(0)
    independent = rs.normal(size=(5000, 3))
    scores = unsupervised_from_codes(independent)
    assert abs(scores["gaussian_tc"]) < 0.01 and scores["mutual_info"] < 0.05
    dependent = np.column_stack([independent[:, 0], independent[:, 0] + 0.1 * independent[:, 1]])
    assert unsupervised_from_codes(dependent)["mutual_info"] > 0.5
    assert unsupervised_from_codes(np.column_stack([independent[:, 0]] * 2))["gaussian_tc"] == np.inf


# -- BetaVAE: the reference's procedure, point by point -----------------------------------
def test_betavae_matches_a_point_by_point_reference_loop():
    mixing = np.array([[1.0, 0.8, -0.6, 0.2], [0.5, 1.0, 0.7, -0.9], [-0.8, 0.4, 1.0, 0.6]])
    data = PixelFactors((4, 5, 6))

    def mixed(x):
        return identity_encode(x).astype(np.float64) @ mixing

    params = dict(batch_size=4, num_train=80, num_eval=60)
    ours = betavae_score(data, mixed, 5, **params, encode_batch_size=64)

    rs = np.random.RandomState(5)

    def points(n):
        x, y = np.zeros((n, 4)), np.zeros(n, dtype=np.int64)
        for i in range(n):
            y[i] = rs.randint(3)
            f1, f2 = data.sample_factors(4, rs), data.sample_factors(4, rs)
            f2[:, y[i]] = f1[:, y[i]]
            z1 = mixed(data.sample_observations_from_factors(f1, rs))
            z2 = mixed(data.sample_observations_from_factors(f2, rs))
            x[i] = np.mean(np.abs(z1 - z2), axis=0)
        return x, y

    (train_x, train_y), (eval_x, eval_y) = points(80), points(60)
    model = LogisticRegression().fit(train_x, train_y)
    assert ours["betavae"] == model.score(eval_x, eval_y)
    assert ours["betavae_train"] == model.score(train_x, train_y)


# -- the suite: same values as the metrics alone, deterministic ----------------------------
def test_suite_equals_each_registered_metric_alone():
    sizes = dict(num_train=600, num_test=300)
    suite = factor_suite(FIVE, duplicated_encode, 7, n_jobs=1, **sizes, params={
        "betavae": SAMPLING, "factorvae": dict(SAMPLING, num_variance_estimate=300)})
    alone = {
        **betavae_score(FIVE, duplicated_encode, 7, **SAMPLING),
        **factor_vae_score(FIVE, duplicated_encode, 7, **SAMPLING, num_variance_estimate=300),
        **mig(FIVE, duplicated_encode, 7, num_train=600),
        **sap(FIVE, duplicated_encode, 7, **sizes, n_jobs=1),
        **dci(FIVE, duplicated_encode, 7, **sizes, n_jobs=1),
        **modularity_explicitness(FIVE, duplicated_encode, 7, **sizes, n_jobs=1),
        **irs(FIVE, duplicated_encode, 7, num_train=600),
        **unsupervised(FIVE, duplicated_encode, 7, num_train=600),
    }
    assert set(alone) == set(suite)
    for key, value in alone.items():
        assert suite[key] == value or (np.isnan(value) and np.isnan(suite[key])), key


def test_suite_same_seed_same_values_whatever_n_jobs():
    encode = permuting_encoder(3)  # a stateful encoder: fresh copies per run
    kw = dict(metrics=("sap", "dci", "modularity_explicitness", "mig"), num_train=400, num_test=200)
    a = factor_suite(FIVE, permuting_encoder(3), 11, n_jobs=1, **kw)
    b = factor_suite(FIVE, permuting_encoder(3), np.random.RandomState(11), n_jobs=2, **kw)
    assert a == b
    generator = np.random.default_rng(4)
    c = factor_suite(FIVE, encode, generator, n_jobs=1, metrics=("mig",), num_train=300)
    d = factor_suite(FIVE, permuting_encoder(3), generator, n_jobs=1, metrics=("mig",), num_train=300)
    assert c == d  # each run starts from a copy: the caller's generator is not advanced


def test_table_suite_signature_and_errors():
    codes, factors = generate_factor_code(FIVE, identity_encode, 300, 0, 16)
    scores = table_suite(codes, factors, None, None, 0, metrics=("mig", "irs", "unsupervised"))
    assert {"mig", "irs", "irs_active_dims", "gaussian_tc", "mutual_info"} <= set(scores)
    with pytest.raises(ValueError, match="need a test table"):
        table_suite(codes, factors, None, None, 0, metrics=("dci",))
    bad = codes.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3, code 1"):
        table_suite(bad, factors, None, None, 0, metrics=("mig",))
    with pytest.raises(ValueError, match="integer class indices"):
        table_suite(codes, factors + 0.5, None, None, 0, metrics=("mig",))
    with pytest.raises(ValueError, match="unknown metric"):
        table_suite(codes, factors, None, None, 0, metrics=("mgi",))
    with pytest.raises(ValueError, match="unknown option"):
        table_suite(codes, factors, None, None, 0, metrics=("mig",), params={"mig": {"bins": 3}})


# -- registry --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["betavae", "mig", "sap", "modularity_explicitness", "irs", "unsupervised"])
def test_registered_with_keyword_only_tunables(name):
    import inspect

    entry = registry.metrics().get(name)
    assert entry.meta["uses"] == "encode" and entry.meta["requires"] == "factors" and entry.meta["outputs"]
    params = inspect.signature(entry.load()).parameters
    keyword_only = {p for p, v in params.items() if v.kind == v.KEYWORD_ONLY}
    assert "num_train" in keyword_only
    assert list(params)[:3] == ["dataset", "encode", "random_state"]
    assert set(FACTOR_METRICS) >= {"betavae", "factorvae", "mig", "sap", "dci", "irs"}


# -- representations: multi-dimensional latent units ------------------------------------
def test_unit_pca_recovers_each_units_direction():
    rs = np.random.RandomState(0)
    signal = rs.normal(size=(400, 3))  # one scalar per unit
    directions = rs.normal(size=(3, 4))
    units = signal[:, :, None] * directions[None] + 0.01 * rs.normal(size=(400, 3, 4)) + 5.0
    reduced = reduce_units(units, "pca")
    assert reduced.shape == (400, 3)
    for u in range(3):
        assert abs(np.corrcoef(reduced[:, u], signal[:, u])[0, 1]) > 0.999
    reducer = fit_unit_reducer(units, "pca")
    np.testing.assert_allclose(reducer.transform(units[:10]), reduced[:10])
    assert np.all(reducer.explained_variance_ratio > 0.99)
    np.testing.assert_allclose(reduce_units(units[::-1], "pca")[::-1], reduced, atol=1e-10)  # deterministic sign
    assert reduce_units(units, "flatten").shape == (400, 12)
    with pytest.raises(ValueError, match="unknown unit reduction"):
        reduce_units(units, "mean")
    with pytest.raises(ValueError, match=r"\(N, U, d\)"):
        reduce_units(units[:, 0], "pca")
    with pytest.raises(ValueError, match="fitted on 3 units"):
        reducer.transform(units[:, :2])


def test_reduced_vector_units_score_like_scalar_codes():
    """Units of dimension 3 that each carry one factor along a direction: MIG as for scalars."""
    directions = np.random.RandomState(1).normal(size=(5, 3))

    def encode_units(x):
        return identity_encode(x)[:, :, None] * directions[None]

    fit_codes = encode_units(FIVE.images(np.arange(len(FIVE))))
    encode = reduced_encoder(encode_units, fit_unit_reducer(fit_codes, "pca"))
    np.testing.assert_allclose(mig(FIVE, encode, 0, num_train=500)["mig"],
                               mig(FIVE, identity_encode, 0, num_train=500)["mig"], atol=1e-12)


def test_dci_hist_gbt_option():
    """The opt-in fast DCI importance: right on clear-cut codes, and its documented tie rule."""
    kw = dict(metrics=("dci",), num_train=600, num_test=300, n_jobs=1)
    fast = factor_suite(FIVE, identity_encode, 0, params={"dci": {"importance": "hist_gbt"}}, **kw)
    assert 0.9 <= fast["dci_disentanglement"] <= 1.0 and 0.9 <= fast["dci_completeness"] <= 1.0
    assert fast["dci_informativeness"] >= 0.9
    assert fast == factor_suite(FIVE, identity_encode, 0, params={"dci": {"importance": "hist_gbt"}}, **kw)
    # exact copies: all importance on the first copy (the reference spreads it over both)
    duplicated = factor_suite(FIVE, duplicated_encode, 0, params={"dci": {"importance": "hist_gbt"}}, **kw)
    assert duplicated["dci_completeness"] >= 0.9
    with pytest.raises(ValueError, match="importance"):
        factor_suite(FIVE, duplicated_encode, 0, params={"dci": {"importance": "hist"}}, **kw)


def test_registered_dci_takes_the_importance_option_like_the_suite():
    """``metric_params.dci.importance`` in bench.toml reaches the registered metric, with the suite's values."""
    from bench.metrics.dci import dci

    kw = dict(num_train=600, num_test=300, n_jobs=1)
    alone = dci(FIVE, identity_encode, 0, importance="hist_gbt", **kw)
    suite = factor_suite(FIVE, identity_encode, 0, metrics=("dci",), params={"dci": {"importance": "hist_gbt"}}, **kw)
    for key in ("dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert alone[key] == pytest.approx(suite[key], abs=1e-12)
    assert alone != dci(FIVE, identity_encode, 0, **kw)  # the default is the reference's GBT
    with pytest.raises(ValueError, match="importance = 'hist'"):
        dci(FIVE, identity_encode, 0, importance="hist", **kw)
