"""TAD, AUROC probe and latent accuracy on constructed codes whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.base import AttributeDataset, LabelledDataset
from bench.metrics.attributes import (
    attribute_mutual_information,
    auroc,
    auroc_from_codes,
    entangled_fraction,
    exact_auroc_matrix,
    latent_accuracy,
    latent_accuracy_from_codes,
    tad,
    tad_from_auroc,
    tad_from_codes,
    threshold_auroc_matrix,
)

# 8 items, attribute 0 balanced; latent 1 agrees with it on 6 of 8 items
Y0 = np.array([1, 1, 1, 1, 0, 0, 0, 0])
Z1 = np.array([1, 1, 1, 0, 0, 0, 0, 1], dtype=float)


def test_exact_auroc_by_hand():
    # pairs (positive, negative) won by the positive: 4 + 3.5 + 3 + 2.5 = 13 of 16 (ties count 1/2)
    z = np.array([3, 2, 1, 0, 2, 0, -1, -2], dtype=float)
    codes = np.stack([Y0.astype(float), z, -z, Z1], axis=1)
    a = exact_auroc_matrix(codes, Y0[:, None])
    # Z1: P(1 vs 0) = 9/16 plus half the ties 6/16 -> 12/16; -z scores the same as z
    np.testing.assert_allclose(a, [[1.0, 13 / 16, 13 / 16, 12 / 16]])


def test_exact_auroc_equals_sklearn_both_directions():
    from sklearn.metrics import roc_auc_score

    rs = np.random.RandomState(0)
    y = (rs.rand(300, 3) < [0.2, 0.5, 0.7]).astype(int)
    z = np.round(rs.randn(300, 4) + y[:, [0, 1, 2, 0]], 1)  # rounding creates ties
    expected = [[max(roc_auc_score(y[:, a], z[:, j]), roc_auc_score(y[:, a], -z[:, j])) for j in range(4)] for a in range(3)]
    np.testing.assert_allclose(exact_auroc_matrix(z, y), expected, atol=1e-12)


def test_threshold_auroc_by_hand():
    # NashAE's sweep on a binary code: z >= thr gives (FPR, TPR) = (1, 1) at t = 0 and (1/4, 3/4)
    # after; sorted right-end rectangles: 1 * 3/4 = 0.75. The opposite detector gives 0.1875.
    codes = np.stack([Y0.astype(float), Z1, np.full(8, 0.3), 0.1 * Z1], axis=1)
    a = threshold_auroc_matrix(codes, Y0[:, None])
    np.testing.assert_allclose(a, [[1.0, 0.75, 0.5, 0.5]])  # ranges 0 and 0.1 <= 0.2: inactive, 0.5


def test_tad_copy_of_attribute_is_captured_with_known_difference():
    # four balanced, pairwise independent attributes (a full 2^4 design, repeated)
    grid = np.array([[(i >> b) & 1 for b in range(4)] for i in range(16)])
    y = np.tile(grid, (25, 1))
    # latent 0 copies attribute 0; latent 1 is attribute 0 with a quarter of the positives
    # and a quarter of the negatives flipped: AUROC = 9/16 + (6/16) / 2 = 3/4
    flipped = y[:, 0].copy()
    flipped[np.arange(len(y)) % 8 < 2] ^= 1
    codes = np.stack([y[:, 0], flipped], axis=1).astype(float)
    np.testing.assert_allclose(exact_auroc_matrix(codes, y)[0], [1.0, 0.75], atol=1e-12)
    # attributes 1-3 are invisible in the codes (best AUROC 0.5): only attribute 0 counts
    assert tad_from_auroc(exact_auroc_matrix(codes, y), y) == {"tad": pytest.approx(0.25), "tad_attributes": 1.0}
    assert tad_from_codes(codes, y) == {"tad": pytest.approx(0.25), "tad_attributes": 1.0}  # NashAE sweep
    out = tad_from_codes(codes, y, 0, variant="infodiffusion")  # training folds: AUROC near 3/4
    assert out["tad_attributes"] == 1.0
    assert out["tad"] == pytest.approx(0.25, abs=0.03)


def test_entangled_attributes_are_excluded():
    rs = np.random.RandomState(1)
    a0 = (rs.rand(400) < 0.5).astype(int)
    a1 = a0.copy()  # identical to a0: I(a0; a1) = H(a0)
    a2 = (rs.rand(400) < 0.5).astype(int)
    y = np.stack([a0, a1, a2], axis=1)
    frac = entangled_fraction(y)
    assert frac[0] == pytest.approx(1.0) and frac[1] == pytest.approx(1.0) and frac[2] < 0.2
    codes = y.astype(float) + 0.01 * rs.randn(400, 3)  # every attribute perfectly detected
    out = tad_from_codes(codes, y)
    assert out["tad_attributes"] == 1.0  # only a2 is kept


def test_mutual_information_diagonal_is_entropy():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    mi = attribute_mutual_information(y)
    np.testing.assert_allclose(np.diag(mi), [np.log(2), np.log(2)])
    np.testing.assert_allclose(mi[0, 1], 0.0, atol=1e-12)


def test_constant_attribute_is_never_captured():
    y = np.stack([np.ones(20, int), np.arange(20) % 2], axis=1)
    codes = np.stack([np.arange(20) % 2, np.linspace(0, 1, 20)], axis=1).astype(float)
    for variant in ("nashae", "infodiffusion"):
        assert tad_from_codes(codes, y, 0, variant=variant)["tad_attributes"] == 1.0


def test_tad_single_latent_second_best_is_zero():
    # the reference zeroes the best entry, so with one latent the difference is the AUROC itself
    out = tad_from_auroc(np.array([[0.9]]), np.array([[0], [1]]))
    assert out == {"tad": pytest.approx(0.9), "tad_attributes": 1.0}


def test_tad_rejects_bad_input():
    with pytest.raises(ValueError, match="variant"):
        tad_from_codes(np.zeros((4, 1)), np.zeros((4, 1), int), variant="nash")
    with pytest.raises(ValueError, match="binary"):
        tad_from_codes(np.zeros((4, 1)), -np.ones((4, 1), int))
    with pytest.raises(ValueError, match="non-finite"):
        tad_from_codes(np.full((4, 1), np.nan), np.zeros((4, 1), int))


def test_auroc_probe_perfect_and_useless_codes():
    rs = np.random.RandomState(0)
    y = (rs.rand(500, 3) < 0.5).astype(int)
    good = y + 0.1 * rs.randn(500, 3)
    assert auroc_from_codes(good, y, 0)["auroc"] > 0.99
    noise = rs.randn(500, 3)
    assert abs(auroc_from_codes(noise, y, 0)["auroc"] - 0.5) < 0.1


def test_latent_accuracy_perfect_and_useless_codes():
    rs = np.random.RandomState(0)
    labels = rs.randint(0, 4, size=400)
    onehot = np.eye(4)[labels] + 0.05 * rs.randn(400, 4)
    assert latent_accuracy_from_codes(onehot, labels, 0)["latent_accuracy"] == 1.0
    assert latent_accuracy_from_codes(rs.randn(400, 4), labels, 0)["latent_accuracy"] < 0.4
    with pytest.raises(ValueError, match="labels"):
        latent_accuracy_from_codes(onehot, labels.astype(float), 0)


def test_probes_are_deterministic_for_a_seed():
    rs = np.random.RandomState(3)
    y = (rs.rand(200, 2) < 0.5).astype(int)
    z = y + rs.randn(200, 2)
    assert auroc_from_codes(z, y, 7) == auroc_from_codes(z, y, np.random.RandomState(7))
    assert tad_from_codes(z, y, 7, variant="infodiffusion") == tad_from_codes(z, y, 7, variant="infodiffusion")


class _Faces(AttributeDataset):
    """Images whose first pixel is attribute 0 and second is attribute 1; 3rd attribute hidden."""

    name = "faces"

    def __init__(self) -> None:
        rs = np.random.RandomState(0)
        self._attrs = (rs.rand(300, 3) < 0.5).astype(np.int64)

    @property
    def image_shape(self):
        return (1, 2, 2)

    def __len__(self) -> int:
        return len(self._attrs)

    def images(self, indices):
        out = np.zeros((len(indices), 1, 2, 2), np.float32)
        out[:, 0, 0, 0] = self._attrs[indices, 0]
        out[:, 0, 0, 1] = self._attrs[indices, 1]
        return out

    def attributes(self, indices):
        return self._attrs[np.asarray(indices)]


class _Digits(LabelledDataset):
    name = "digits"
    class_names = ("a", "b", "c")

    @property
    def image_shape(self):
        return (1, 1, 3)

    def __len__(self) -> int:
        return 150

    def images(self, indices):
        return np.eye(3, dtype=np.float32)[np.asarray(indices) % 3].reshape(-1, 1, 1, 3)

    def labels(self, indices):
        return np.asarray(indices) % 3


def _flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def test_dataset_wrappers_draw_then_score():
    faces = _Faces()
    for variant in ("nashae", "infodiffusion"):
        rs = np.random.RandomState(0)
        idx = rs.choice(len(faces), size=200, replace=False)
        expected = tad_from_codes(_flatten(faces.images(idx)), faces.attributes(idx), rs, variant=variant)
        out = tad(faces, _flatten, 0, variant=variant, num_samples=200, encode_batch_size=64)
        assert out == expected
        assert out["tad_attributes"] == 2.0 and 0.8 < out["tad"] <= 1.0
    assert 0.75 < auroc(faces, _flatten, 0, num_samples=200, n_jobs=1)["auroc"] < 0.9  # 2 of 3 attributes visible
    assert latent_accuracy(_Digits(), _flatten, 0)["latent_accuracy"] == 1.0


class _NoisyDigits(_Digits):
    """Labels i % 3 with images that only partly show them (accuracy below 1, so folds differ)."""

    def __len__(self) -> int:
        return 300

    def images(self, indices):
        idx = np.asarray(indices)
        noise = np.random.RandomState(7).randn(300, 3).astype(np.float32)[idx]
        return (np.eye(3, dtype=np.float32)[idx % 3] * 0.5 + noise).reshape(-1, 1, 1, 3)


def test_infodiffusion_protocol_uses_the_first_rows_and_the_folds_of_random_state_0(monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    data, n = _NoisyDigits(), 200
    seen = []

    def encode(x):
        seen.append(len(x))
        return _flatten(x)

    out = latent_accuracy(data, encode, 12345, protocol="infodiffusion", num_samples=n)
    assert sum(seen) == n
    # eval_disentanglement.py by hand: rows 0..n-1 in order, KFold(5, shuffle=True, random_state=0)
    z, y = _flatten(data.images(np.arange(n))).astype(np.float64), data.labels(np.arange(n))
    accuracies = []
    for train, test in KFold(5, shuffle=True, random_state=0).split(z):
        scaler = StandardScaler().fit(z[train])
        model = LogisticRegression().fit(scaler.transform(z[train]), y[train])
        accuracies.append(np.mean(model.predict(scaler.transform(z[test])) == y[test]))
    assert out["latent_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert out["latent_accuracy_fold_std"] == pytest.approx(np.std(accuracies), abs=1e-12)
    assert 0 < out["latent_accuracy_fold_std"] and out["latent_accuracy"] < 1
    # the evaluation's seed does not enter; the default protocol's rows and folds do depend on it
    assert latent_accuracy(data, _flatten, 1, protocol="infodiffusion", num_samples=n) == out
    assert latent_accuracy(data, _flatten, 1, num_samples=n) != latent_accuracy(data, _flatten, 2, num_samples=n)
    faces = _Faces()
    first = tad(faces, _flatten, 3, variant="infodiffusion", protocol="infodiffusion", num_samples=100)
    idx = np.arange(100)
    assert first == tad_from_codes(_flatten(faces.images(idx)), faces.attributes(idx), 0, variant="infodiffusion")
    with pytest.raises(ValueError, match="set variant = 'infodiffusion'"):
        tad(faces, _flatten, 0, protocol="infodiffusion")
    with pytest.raises(ValueError, match="unknown protocol 'paper'"):
        auroc(faces, _flatten, 0, protocol="paper")
