"""FactorVAE and DCI: disentanglement_lib's oracle tests on tiny synthetic data.

The oracles follow ``disentanglement_lib/evaluation/metrics/factor_vae_test.py`` and
``dci_test.py``: a representation equal to the factors scores high, a useless one low, and
the hand-built importance matrices give the reference's closed-form values.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.base import FactorDataset
from bench.metrics.dci import completeness, dci, dci_from_codes, disentanglement
from bench.metrics.factorvae import factor_vae_score
from bench.metrics.sampling import as_random_state, generate_factor_code


class PixelFactors(FactorDataset):
    """A 1 x 1 x K "image" whose pixels are the factor classes scaled to [0, 1]."""

    name = "pixel_factors"

    def __init__(self, factor_sizes: tuple[int, ...]) -> None:
        self.factor_sizes = tuple(factor_sizes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, self.num_factors)

    def images(self, indices) -> np.ndarray:
        sizes = np.asarray(self.factor_sizes, dtype=np.float32)
        scaled = self.factors(indices).astype(np.float32) / np.maximum(sizes - 1, 1)
        return scaled.reshape(-1, *self.image_shape)


def identity_encode(x: np.ndarray) -> np.ndarray:
    """Codes = the (scaled) factor classes."""
    return x.reshape(len(x), -1)


def zero_encode(x: np.ndarray) -> np.ndarray:
    return np.zeros((len(x), 4))


def noise_encoder(dim: int, seed: int):
    """Codes drawn independently of the images."""
    rs = np.random.RandomState(seed)
    return lambda x: rs.normal(size=(len(x), dim))


SMALL = PixelFactors((4, 5, 6))
FVAE_FAST = dict(batch_size=16, num_train=300, num_eval=200, num_variance_estimate=500)
DCI_FAST = dict(num_train=500, num_test=200)


# -- sampling helpers ----------------------------------------------------------------------
def test_as_random_state_accepts_seed_state_and_generator():
    assert as_random_state(3).randint(1000) == np.random.RandomState(3).randint(1000)
    rs = np.random.RandomState(5)
    assert as_random_state(rs) is rs
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    assert as_random_state(g1).randint(1000, size=5).tolist() == as_random_state(g2).randint(1000, size=5).tolist()
    for bad in (None, True, 1.5):
        with pytest.raises(TypeError):
            as_random_state(bad)


def test_generate_factor_code_shapes_and_reference_draw_order():
    codes, factors = generate_factor_code(SMALL, identity_encode, 37, 0, batch_size=8)
    assert codes.shape == (37, 3) and codes.dtype == np.float64
    assert factors.shape == (37, 3) and factors.dtype == np.int64
    np.testing.assert_allclose(codes * (np.array(SMALL.factor_sizes) - 1), factors, atol=1e-6)
    # reference order: dataset.sample(batch) repeatedly, last batch smaller
    rs = np.random.RandomState(0)
    expected = np.concatenate([SMALL.sample(n, rs)[0] for n in (8, 8, 8, 8, 5)])
    np.testing.assert_array_equal(factors, expected)
    # the encode chunk size changes nothing
    codes_small, factors_small = generate_factor_code(SMALL, identity_encode, 37, 0, batch_size=8, encode_batch_size=3)
    np.testing.assert_array_equal(codes, codes_small)
    np.testing.assert_array_equal(factors, factors_small)


# -- FactorVAE -----------------------------------------------------------------------------
def test_factorvae_identity_representation_scores_high():
    scores = factor_vae_score(SMALL, identity_encode, 0, **FVAE_FAST)
    assert 0.9 <= scores["factorvae"] <= 1.0
    assert 0.9 <= scores["factorvae_train"] <= 1.0
    assert scores["factorvae_active_dims"] == 3.0


def test_factorvae_all_inactive_returns_zero():
    scores = factor_vae_score(SMALL, zero_encode, 0, **FVAE_FAST)
    assert scores == {"factorvae": 0.0, "factorvae_train": 0.0, "factorvae_active_dims": 0.0}


def test_factorvae_noise_representation_scores_low():
    data = PixelFactors((2,) * 10)  # chance level 1/10
    scores = factor_vae_score(data, noise_encoder(10, 1), 0, batch_size=16, num_train=500, num_eval=500,
                              num_variance_estimate=500)
    assert 0.0 <= scores["factorvae"] <= 0.2


def test_factorvae_counts_only_active_dims():
    def encode(x):  # 3 informative dims and 2 constant (inactive) ones
        return np.concatenate([identity_encode(x), np.zeros((len(x), 2))], axis=1)

    scores = factor_vae_score(SMALL, encode, 0, **FVAE_FAST)
    assert scores["factorvae_active_dims"] == 3.0
    assert scores["factorvae"] >= 0.9


def test_factorvae_deterministic_and_independent_of_encode_batching():
    a = factor_vae_score(SMALL, identity_encode, 11, **FVAE_FAST)
    b = factor_vae_score(SMALL, identity_encode, np.random.RandomState(11), **FVAE_FAST)
    c = factor_vae_score(SMALL, identity_encode, 11, encode_batch_size=FVAE_FAST["batch_size"], **FVAE_FAST)
    assert a == b == c


def test_factorvae_matches_a_vote_by_vote_reference_loop():
    """Same votes as the reference's procedure: one draw-and-encode per vote."""
    mixing = np.array([[1.0, 0.8, -0.6, 0.2], [0.5, 1.0, 0.7, -0.9], [-0.8, 0.4, 1.0, 0.6]])

    def mixed(x):  # 4 codes mixing the 3 factors, so the accuracy is well below 1
        return identity_encode(x).astype(np.float64) @ mixing

    params = dict(batch_size=8, num_train=60, num_eval=40, num_variance_estimate=100, prune_threshold=0.05)
    ours = factor_vae_score(SMALL, mixed, 4, **params)
    assert 0.5 < ours["factorvae"] < 0.9

    rs = np.random.RandomState(4)
    global_var = np.var(mixed(SMALL.sample(100, rs)[1]), axis=0, ddof=1)
    active = np.sqrt(global_var) >= 0.05

    def votes(n):
        table = np.zeros((3, 4), dtype=np.int64)
        for _ in range(n):
            k = rs.randint(3)
            f = SMALL.sample_factors(8, rs)
            f[:, k] = f[0, k]
            local = np.var(mixed(SMALL.sample_observations_from_factors(f, rs)), axis=0, ddof=1)
            table[k, np.flatnonzero(active)[np.argmin(local[active] / global_var[active])]] += 1
        return table

    train, test = votes(60), votes(40)
    clf = np.argmax(train, axis=0)
    assert ours["factorvae_train"] == train[clf, np.arange(4)].sum() / train.sum()
    assert ours["factorvae"] == test[clf, np.arange(4)].sum() / test.sum()


# -- DCI: hand-built importance matrices (dci_test.py) -------------------------------------
DIAG = np.diag(5.0 * np.ones(5))
EMPTY_CODE = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
ONE_MINUS_LN2_LN10 = 1.0 - np.log(2) / np.log(10)


@pytest.mark.parametrize(
    "matrix, expected",
    [
        (DIAG, 1.0),
        (EMPTY_CODE, 1.0),
        (np.vstack([DIAG, DIAG]), 1.0),  # redundant codes
        (DIAG[:2, :], 1.0),  # missed factors
        (np.hstack([DIAG, DIAG]), ONE_MINUS_LN2_LN10),  # one code, two factors
    ],
)
def test_disentanglement_closed_form(matrix, expected):
    np.testing.assert_allclose(disentanglement(matrix), expected)


def test_disentanglement_zero_matrix():
    np.testing.assert_allclose(disentanglement(np.zeros((10, 10))), 0.0)


@pytest.mark.parametrize(
    "matrix, expected",
    [
        (DIAG, 1.0),
        (EMPTY_CODE, 1.0),
        (np.vstack([DIAG, DIAG]), ONE_MINUS_LN2_LN10),  # redundant codes
        (DIAG[:2, :], 1.0),  # missed factors
        (np.hstack([DIAG, DIAG]), 1.0),  # one code, two factors
    ],
)
def test_completeness_closed_form(matrix, expected):
    np.testing.assert_allclose(completeness(matrix), expected)


def test_completeness_zero_matrix():
    np.testing.assert_allclose(completeness(np.zeros((10, 10))), 0.0, atol=1e-7)


# -- DCI: sampled representations -----------------------------------------------------------
def test_dci_identity_representation_scores_high():
    scores = dci(SMALL, identity_encode, 0, **DCI_FAST)
    assert 0.9 <= scores["dci_disentanglement"] <= 1.0
    assert 0.9 <= scores["dci_completeness"] <= 1.0
    assert scores["dci_informativeness"] >= 0.9
    assert scores["dci_informativeness_train"] >= 0.9


def test_dci_permuted_representation_scores_low():
    rs_rep = np.random.RandomState(0)

    def encode(x):  # every code vector is a random permutation of the factors
        z = identity_encode(x).astype(np.float64)
        return np.stack([rs_rep.permutation(row) for row in z])

    scores = dci(SMALL, encode, 0, **DCI_FAST)
    assert 0.0 <= scores["dci_disentanglement"] <= 0.2
    assert 0.0 <= scores["dci_completeness"] <= 0.2


def test_dci_duplicated_latent_space():
    def encode(x):
        z = identity_encode(x)
        return np.concatenate([z, z], axis=1)

    scores = dci(SMALL, encode, 0, **DCI_FAST)
    assert 0.9 <= scores["dci_disentanglement"] <= 1.0
    target = 1.0 - np.log(2) / np.log(6)  # importance split over 2 of D = 6 codes
    assert target - 0.1 <= scores["dci_completeness"] <= target + 0.1


def test_dci_deterministic_and_independent_of_n_jobs():
    def encode(x):
        z = identity_encode(x)
        return np.concatenate([z, z], axis=1)  # ties between codes: needs the seeded trees

    a = dci(SMALL, encode, 3, n_jobs=1, **DCI_FAST)
    b = dci(SMALL, encode, np.random.RandomState(3), n_jobs=2, **DCI_FAST)
    assert a == b


def test_dci_from_codes_rejects_mismatched_splits():
    x, y = np.zeros((10, 3)), np.zeros((10, 2), dtype=np.int64)
    with pytest.raises(ValueError):
        dci_from_codes(x, y, np.zeros((5, 4)), np.zeros((5, 2), dtype=np.int64))


class PointByPoint(PixelFactors):
    """The same dataset, with ``sample_factors`` overridden: the metrics must then draw point by
    point, in the reference's loop (disentanglement_lib's ``_generate_training_batch``)."""

    def sample_factors(self, num, random_state):
        return super().sample_factors(num, random_state)


def test_batched_draws_are_the_references_point_by_point_draws():
    """BetaVAE and FactorVAE draw all their points in a few ``randint`` calls where the dataset
    allows it; every label, factor and so every feature must be the one the point-by-point loop
    draws, and the random state must end where the loop leaves it."""
    from bench.metrics.betavae import betavae_points
    from bench.metrics.factorvae import _vote_table
    from bench.metrics.sampling import draw_points

    codes = lambda x: x.reshape(len(x), -1) * np.array([1.0, 2.0, 3.0])  # noqa: E731
    fast, slow = SMALL, PointByPoint(SMALL.factor_sizes)
    rs = np.random.RandomState(0)
    assert draw_points(fast, rs, 3, 4, 2) is not None and draw_points(slow, rs, 3, 4, 2) is None
    for batch_size, points, per_call in ((16, 37, 5), (3, 10, 1)):
        rs_fast, rs_slow = np.random.RandomState(7), np.random.RandomState(7)
        x_fast, y_fast = betavae_points(fast, codes, rs_fast, batch_size, points, per_call)
        x_slow, y_slow = betavae_points(slow, codes, rs_slow, batch_size, points, per_call)
        np.testing.assert_array_equal(y_fast, y_slow)
        np.testing.assert_array_equal(x_fast, x_slow)
        assert rs_fast.randint(2**31) == rs_slow.randint(2**31)
        variances = np.array([0.5, 1.0, 2.0])
        tables = [_vote_table(data, codes, np.random.RandomState(11), batch_size, points, variances,
                              np.array([True, False, True]), per_call) for data in (fast, slow)]
        np.testing.assert_array_equal(tables[0], tables[1])
