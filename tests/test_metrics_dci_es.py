"""DCI-ES (bench.metrics.dci_es) against the reference and on curves whose answer is known.

Reference values: andreinicolicioiu/DCI-ES, commit 9329daec05ac18038e080596c5bde997d28a1aaa,
``src/loss_capacity/train_model_random_forest.py::train_test_random_forest`` (``method="rf"``)
for the probes and ``metrics/explitcitness.py::Explitcitness`` for ``E`` (driven as in
``src/simple_gather.py``), run with scikit-learn 1.3.2 / NumPy 1.26.4 on the inputs of
``benchmarks/reference_infomec_dcies.py::dcies_cases`` (depths 1, 2, 3, 4, 8; 10 trees;
seed 0; factor 0 probed by classification, factors 1 and 2 by regression):
``python benchmarks/reference_infomec_dcies.py --dcies-reference <checkout>``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bench import registry
from bench.metrics.dci_es import dci_es, dci_es_from_codes, explicitness, loss_capacity_curves
from test_metrics_factorvae_dci import PixelFactors, identity_encode

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_infomec_dcies.py"
_spec = importlib.util.spec_from_file_location("reference_infomec_dcies", _SCRIPT)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

#: name -> (E, E per factor, D, C, I) printed by the reference
REFERENCE = {
    "perfect": (0.9757541328179347, [0.9961904761904762, 0.9730309335901186, 0.958040988673209],
                0.9790079496101011, 0.9638764028894613, 1.0),
    "mixed": (0.7437374984218089, [0.48888888888888904, 0.9027791866452859, 0.8395444197312517],
              0.60852525379885, 0.5669206154407554, 0.9915641699671647),
    "noise": (0.9978835978835979, [0.9936507936507937, 1.0, 1.0],
              0.0885020041638954, 0.0954372522479399, 0.08456804359095264),
}
#: the reference's test losses (factors x depths) for "mixed", rounded to 12 digits
REFERENCE_LOSSES_MIXED = [
    [0.506666666667, 0.45, 0.313333333333, 0.143333333333, 0.006666666667],
    [0.296809772765, 0.115851216526, 0.062822002491, 0.027357450064, 0.011039776764],
    [0.384213050989, 0.196756058635, 0.102398910837, 0.043335307726, 0.007601046668],
]
CONTINUOUS = tuple(k for k, discrete in enumerate(reference.DCIES_FACTOR_DISCRETE) if not discrete)
OPTIONS = dict(capacities=reference.DCIES_DEPTHS, num_trees=reference.DCIES_NUM_TREES,
               continuous_factors=CONTINUOUS, seed=reference.DCIES_SEED)
#: the reference's forests see float32 codes and targets and score in float32
TOL = 1e-7


@pytest.mark.parametrize("name", list(REFERENCE))
def test_matches_reference(name):
    ours = dci_es_from_codes(*reference.dcies_cases()[name], **OPTIONS)
    e, _, d, c, i = REFERENCE[name]
    assert ours["dci_es_explicitness"] == pytest.approx(e, abs=TOL)
    assert ours["dci_es_disentanglement"] == pytest.approx(d, abs=TOL)
    assert ours["dci_es_completeness"] == pytest.approx(c, abs=TOL)
    assert ours["dci_es_informativeness"] == pytest.approx(i, abs=TOL)
    assert ours["dci_es_size"] == pytest.approx(3 / 4)


def test_curves_and_per_factor_explicitness_match_reference():
    x_train, y_train, x_test, y_test = reference.dcies_cases()["mixed"]
    losses, _ = loss_capacity_curves(x_train, y_train, x_test, y_test, capacities=reference.DCIES_DEPTHS,
                                     num_trees=reference.DCIES_NUM_TREES, continuous_factors=CONTINUOUS, seed=0)
    np.testing.assert_allclose(losses, REFERENCE_LOSSES_MIXED, atol=TOL)
    baselines = [1 - 1 / 4, 1.0, 1.0]
    per_factor = [explicitness(np.array(reference.DCIES_DEPTHS, float), losses[k], baselines[k]) for k in range(3)]
    np.testing.assert_allclose(per_factor, REFERENCE["mixed"][1], atol=TOL)


def test_explicitness_oracles():
    x = np.array([1.0, 2.0, 3.0, 5.0])
    # at its lowest loss from the smallest capacity on: maximal
    assert explicitness(x, [0.1, 0.1, 0.1, 0.1], 1.0) == pytest.approx(1.0)
    # a loss that rises again counts as its running minimum
    assert explicitness(x, [0.1, 0.5, 0.3, 0.9], 1.0) == pytest.approx(1.0)
    # a straight line from the baseline down to zero: the area is half the box, E = 1 - 2 * 1/2 = 0
    line = 1.0 - (x - 1.0) / 4.0
    assert explicitness(x, line, 1.0) == pytest.approx(0.0)
    assert explicitness(x, line, 1.0, floor="zero") == pytest.approx(0.0)
    # floor: the reference measures above the curve's own minimum, "zero" above l* = 0
    flat = np.full(4, 0.5)
    assert explicitness(x, flat, 1.0) == pytest.approx(1.0)
    assert explicitness(x, flat, 1.0, floor="zero") == pytest.approx(0.0)


def test_perfect_code_beats_mixed_code():
    perfect = dci_es_from_codes(*reference.dcies_cases()["perfect"], **OPTIONS)
    mixed = dci_es_from_codes(*reference.dcies_cases()["mixed"], **OPTIONS)
    assert perfect["dci_es_explicitness"] > mixed["dci_es_explicitness"]
    assert perfect["dci_es_disentanglement"] > 0.95 > mixed["dci_es_disentanglement"]
    assert perfect["dci_es_informativeness"] == pytest.approx(1.0)


def test_errors_name_the_problem():
    tables = reference.dcies_cases()["perfect"]
    with pytest.raises(ValueError, match="mlp"):
        dci_es_from_codes(*tables, probe="mlp")
    with pytest.raises(ValueError, match="increasing"):
        dci_es_from_codes(*tables, capacities=(4, 2))
    with pytest.raises(ValueError, match="continuous_factors: 3"):
        dci_es_from_codes(*tables, continuous_factors=(3,))
    with pytest.raises(ValueError, match="floor"):
        dci_es_from_codes(*tables, floor="lowest")


def test_sampling_wrapper_and_registration():
    kwargs = dict(num_train=200, num_test=100, capacities=(1, 2, 4), num_trees=5, n_jobs=1)
    out = dci_es(PixelFactors((3, 4)), identity_encode, np.random.RandomState(0), **kwargs)
    assert out["dci_es_informativeness"] == pytest.approx(1.0)
    assert out["dci_es_size"] == pytest.approx(1.0)
    assert out == dci_es(PixelFactors((3, 4)), identity_encode, np.random.RandomState(0), **kwargs)
    spec = registry.METRICS.get("dci_es")
    assert "dci_es_explicitness" in spec.meta["outputs"]


def test_suite_gives_the_registered_numbers():
    from bench.metrics.suite import factor_suite

    params = dict(capacities=(1, 2, 4), num_trees=5)
    alone = dci_es(PixelFactors((3, 4)), identity_encode, 5, num_train=200, num_test=100, n_jobs=1, **params)
    shared = factor_suite(PixelFactors((3, 4)), identity_encode, 5, metrics=["dci_es"], num_train=200, num_test=100,
                          n_jobs=1, params={"dci_es": params})
    assert shared == alone
