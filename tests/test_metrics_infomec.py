"""InfoMEC (bench.metrics.infomec) against the reference and on codes whose answer is known.

Reference values: ``disentangle/metrics/infomec.py::compute_infomec`` of
kylehkhsu/latent_quantization, commit 9a420a33505e03914f9b4fbfcafd221d25b8162f, run with
scikit-learn 1.3.2 / NumPy 1.26.4 on the inputs of
``benchmarks/reference_infomec_dcies.py::infomec_cases`` after ``numpy.random.seed(0)``
(``python benchmarks/reference_infomec_dcies.py --infomec-reference <checkout>``).
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from bench import registry
from bench.metrics.infomec import infomec, infomec_from_codes, infomec_units_from_codes, label_encode, normalized_mutual_info
from test_metrics_factorvae_dci import PixelFactors, identity_encode

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_infomec_dcies.py"
_spec = importlib.util.spec_from_file_location("reference_infomec_dcies", _SCRIPT)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

#: name -> (InfoM, InfoE, InfoC, active codes) printed by the reference
REFERENCE = {
    "perfect": (0.9975360817030583, 0.9999997908668514, 0.9975413120664197, 3),
    "mixed": (0.3991722370587223, 0.9510889608212215, 0.22996129894738124, 4),
    "noise": (0.7602648641831677, 0.006496656849715718, 0.7739827325208051, 4),
    "perfect_discrete": (0.9856606635292535, 0.9999998371343963, 0.985652282844504, 3),
    "mixed_discrete": (0.513803720358899, 0.8345379110822887, 0.33354885650823024, 4),
}
#: the reference's ``nmi`` for the "mixed" case (rounded to 12 digits)
REFERENCE_NMI_MIXED = [
    [0.462902861758, 0.077280239012, 0.420873274777, 0.155228568542],
    [0.1642551242, 0.134008368838, 0.035930113002, 0.172929265572],
    [0.095305406057, 0.414543591179, 0.115857596157, 0.184375149745],
]
#: InfoE's probe stops at max_iter=100 before converging; scikit-learn >= 1.4 scales the
#: lbfgs objective differently, so it stops elsewhere (at convergence both agree to 2e-6)
INFOE_TOL = 1e-3


@pytest.mark.parametrize("name", list(REFERENCE))
def test_matches_reference(name):
    factors, codes, discrete = reference.infomec_cases()[name]
    ours = infomec_from_codes(codes, factors, discrete_latents=discrete, seed=reference.INFOMEC_SEED)
    infom, infoe, infoc, active = REFERENCE[name]
    assert ours["infom"] == pytest.approx(infom, abs=1e-9)
    assert ours["infoc"] == pytest.approx(infoc, abs=1e-9)
    assert ours["infoe"] == pytest.approx(infoe, abs=INFOE_TOL)
    assert ours["infomec_active"] == active


def test_nmi_matches_reference():
    factors, codes, _ = reference.infomec_cases()["mixed"]
    nmi = normalized_mutual_info(codes, label_encode(factors), seed=reference.INFOMEC_SEED)
    np.testing.assert_allclose(nmi, REFERENCE_NMI_MIXED, atol=1e-9)


def _grid(sizes=(3, 4, 5), repeats=4):
    """Every combination of factor classes, ``repeats`` times: factors exactly independent."""
    return np.array(list(itertools.product(*[range(s) for s in sizes])) * repeats)


def test_perfect_discrete_code_is_maximal():
    v = _grid()
    codes = v[:, [1, 2, 0]].astype(float)  # one code per factor, permuted
    out = infomec_from_codes(codes, v, discrete_latents=True)
    assert out["infom"] == pytest.approx(1.0, abs=1e-12)
    assert out["infoc"] == pytest.approx(1.0, abs=1e-12)
    assert out["infoe"] > 0.999


def test_perfect_continuous_code_near_maximal_and_pruning():
    rs = np.random.RandomState(0)
    v = _grid(repeats=8)
    codes = v + 0.01 * rs.randn(*v.shape)
    base = infomec_from_codes(codes, v)
    assert base["infom"] > 0.97 and base["infoc"] > 0.97 and base["infoe"] > 0.99
    # a nearly constant code (range < 1/20 of the largest) is pruned: InfoM and InfoC unchanged
    padded = infomec_from_codes(np.concatenate([codes, 1e-3 * rs.randn(len(v), 1)], axis=1), v)
    assert padded["infomec_active"] == 3
    assert padded["infom"] == pytest.approx(base["infom"], abs=1e-12)
    assert padded["infoc"] == pytest.approx(base["infoc"], abs=1e-12)


def test_split_and_mixed_codes_lower_the_right_score():
    v = _grid()
    # factor 0 in two codes: every code still holds one factor (InfoM 1), InfoC drops
    split = infomec_from_codes(v[:, [0, 0, 1, 2]].astype(float), v, discrete_latents=True)
    assert split["infom"] == pytest.approx(1.0, abs=1e-12)
    assert split["infoc"] < 0.9
    # one code holding two factors: InfoM drops
    joint = np.stack([v[:, 0] * 4 + v[:, 1], v[:, 2]], axis=1).astype(float)
    mixed = infomec_from_codes(joint, v, discrete_latents=True)
    assert mixed["infom"] < 0.9


def test_invariant_to_code_order():
    factors, codes, _ = reference.infomec_cases()["mixed_discrete"]
    a = infomec_from_codes(codes, factors, discrete_latents=True)
    b = infomec_from_codes(codes[:, ::-1], factors, discrete_latents=True)
    assert a["infom"] == pytest.approx(b["infom"], abs=1e-12)
    assert a["infoc"] == pytest.approx(b["infoc"], abs=1e-12)
    assert a["infoe"] == pytest.approx(b["infoe"], abs=1e-4)  # the unconverged probe sees another column order


def test_zero_information_option():
    v = _grid()
    codes = np.stack([v[:, 0], v[:, 1], v[:, 2], (np.arange(len(v)) // (len(v) // 4)) % 2.0], axis=1)
    # the last code carries exactly zero information about every factor: 0/0 in the reference
    ref = infomec_from_codes(codes, v, discrete_latents=True)
    assert np.isnan(ref["infom"])
    excl = infomec_from_codes(codes, v, discrete_latents=True, zero_information="exclude")
    assert excl["infom"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="zero_information"):
        infomec_from_codes(codes, v, zero_information="drop")


def test_errors_name_the_problem():
    v = _grid()
    with pytest.raises(ValueError, match="factor 1"):
        infomec_from_codes(v.astype(float), np.stack([v[:, 0], np.zeros(len(v), int)], axis=1))
    with pytest.raises(ValueError, match="no active code"):
        infomec_from_codes(np.ones((len(v), 2)), v)


def test_units_reduction():
    v = _grid()
    units = np.stack([v, v], axis=2).astype(float)  # (N, 3 units, 2 dims), both dims = the factor
    out = infomec_units_from_codes(units, v, reduction="pca", discrete_latents=True)
    assert out["infom"] == pytest.approx(1.0, abs=1e-9)
    assert out["infomec_active"] == 3


def test_sampling_wrapper_and_registration():
    out = infomec(PixelFactors((3, 4)), identity_encode, np.random.RandomState(0), num_train=300)
    assert out["infom"] > 0.95 and out["infoc"] > 0.95 and out["infoe"] > 0.99
    again = infomec(PixelFactors((3, 4)), identity_encode, np.random.RandomState(0), num_train=300)
    assert again == out
    spec = registry.METRICS.get("infomec")
    assert set(spec.meta["outputs"]) == {"infom", "infoe", "infoc"}


def test_suite_gives_the_registered_numbers():
    from bench.metrics.suite import factor_suite

    alone = infomec(PixelFactors((3, 4)), identity_encode, 3, num_train=300)
    shared = factor_suite(PixelFactors((3, 4)), identity_encode, 3, metrics=["infomec"], num_train=300, n_jobs=1)
    assert shared == alone


def test_bench_score_computes_infomec_on_the_table_rows_and_dci_es_when_named():
    from bench.score import plan_metrics, score_codes

    rng = np.random.default_rng(0)
    factors = rng.integers(0, 4, size=(800, 3))  # covers the 64-cell grid many times over
    codes = np.concatenate([factors + 0.1 * rng.normal(size=factors.shape), rng.normal(size=(800, 2))], 1)
    data = {"codes": codes.astype(np.float32), "factors": factors}
    direct = infomec_from_codes(codes.astype(np.float32), factors, seed=0)
    got = score_codes(data, metrics=["infomec"], seed=0)
    assert got["infom"] == pytest.approx(direct["infom"]) and got["infom"] > 0.8  # not resampled into duplicates
    assert "infom" not in plan_metrics(data).outputs  # opt-in: not part of "everything the table allows"
    assert {"dci_es_explicitness", "dci_es_size"} <= set(plan_metrics(data, ["dci_es"]).outputs)
