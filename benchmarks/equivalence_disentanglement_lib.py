"""Check every factor metric against disentanglement_lib's reference implementation.

    python benchmarks/equivalence_disentanglement_lib.py /path/to/disentanglement_lib [--seed 0] [--quick]

The argument is a checkout of https://github.com/google-research/disentanglement_lib (the
folder that contains the ``disentanglement_lib`` package). Its metric modules are imported
from there and run beside ours on the same dataset, the same representation function and
the same integer seed, at the ``unsupervised_study_v1`` settings (``--quick``: smaller
samples, same draws otherwise); UDR runs on four constructed models with per-latent KL
vectors, lasso and Spearman, at the reference's UDR settings (``--skip-udr`` leaves it out). The script prints reference vs ours vs |diff| per metric
and exits with status 1 if any difference exceeds the tolerance (0.03, the issue's bound).

Requirements for the reference: ``gin-config`` (< 0.5, which still accepts the
``blacklist=`` argument the reference uses), ``absl-py`` and ``six`` in the running
environment. The metric modules ``import gin.tf`` but use nothing from TensorFlow; when
TensorFlow is not installed, ``gin.tf`` is replaced by an empty module before the import
(nothing of the reference's code is changed). Without a checkout or these packages the
script says so and exits with status 0 (skipped).

The dataset is a full factorial grid of 5 factors with 4 x 5 x 5 x 10 x 10 = 10,000
items whose "image" is the item index; a representation is a (10,000, D) code table
looked up by index, the way ``bench score`` and DisDiff's evaluation feed tables to
disentanglement_lib. Representations: ``mixed`` (a noisy, partly mixed linear map of the
factors to 10 codes), ``identity`` (the scaled factors) and ``noise`` (10 codes independent
of the factors).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np

from bench.data.base import FactorDataset
from bench.metrics.suite import factor_suite
from bench.metrics.udr import udr_from_codes

TOLERANCE = 0.03
FACTOR_SIZES = (4, 5, 5, 10, 10)

#: (our key, reference metric, reference key); the metric names key REFERENCE_CALLS
PAIRS = [
    ("betavae", "betavae", "eval_accuracy"),
    ("factorvae", "factorvae", "eval_accuracy"),
    ("mig", "mig", "discrete_mig"),
    ("sap", "sap", "SAP_score"),
    ("dci_disentanglement", "dci", "disentanglement"),
    ("dci_completeness", "dci", "completeness"),
    ("dci_informativeness", "dci", "informativeness_test"),
    ("modularity", "modularity_explicitness", "modularity_score"),
    ("explicitness", "modularity_explicitness", "explicitness_score_test"),
    ("irs", "irs", "IRS"),
    ("gaussian_tc", "unsupervised", "gaussian_total_correlation"),
    ("mutual_info", "unsupervised", "mutual_info_score"),
]


class TableFactorData(FactorDataset):
    """A factor grid whose observation of item ``i`` is the number ``i`` (shape (1, 1, 1)).

    It serves both libraries: disentanglement_lib's ``GroundTruthData`` interface
    (``num_factors``, ``factors_num_values``, ``sample_factors``,
    ``sample_observations_from_factors``, ``sample``, ``sample_observations``) and ours.
    """

    name = "table-grid"

    def __init__(self, factor_sizes: tuple[int, ...] = FACTOR_SIZES) -> None:
        self.factor_sizes = tuple(factor_sizes)
        self.factor_names = tuple(f"factor{k}" for k in range(len(factor_sizes)))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def images(self, indices) -> np.ndarray:
        return np.asarray(indices, dtype=np.float64).reshape(-1, 1, 1, 1)

    def sample_observations(self, num: int, random_state) -> np.ndarray:
        return self.sample(num, random_state)[1]


def lookup(table: np.ndarray):
    """The representation function of a code table: observations (item indices) -> codes."""
    return lambda observations: table[np.asarray(observations).reshape(len(observations)).astype(np.int64)]


def representations(data: TableFactorData, seed: int = 123) -> dict[str, np.ndarray]:
    """The code tables compared: ``mixed``, ``identity`` and ``noise`` (see module docstring)."""
    rs = np.random.RandomState(seed)
    factors = data.factors(np.arange(len(data))).astype(np.float64)
    scaled = factors / (np.asarray(data.factor_sizes) - 1.0)
    num_factors = data.num_factors
    mixing = np.zeros((num_factors, 10))
    mixing[:, :num_factors] = np.eye(num_factors)
    mixing += 0.3 * rs.normal(size=mixing.shape)  # every code mixes several factors
    mixed = scaled @ mixing + 0.1 * rs.normal(size=(len(data), 10))
    return {"mixed": mixed, "identity": scaled, "noise": rs.normal(size=(len(data), 10))}


def load_reference(path: str | Path):
    """Import disentanglement_lib's metric modules from a checkout, or return a reason why not."""
    root = Path(path)
    if not (root / "disentanglement_lib" / "evaluation" / "metrics").is_dir():
        return None, f"no disentanglement_lib checkout at {root} (expected {root}/disentanglement_lib/evaluation/metrics)"
    missing = [name for name in ("gin", "absl", "six") if importlib.util.find_spec(name) is None]
    if missing:
        return None, f"the reference needs gin-config<0.5, absl-py and six in this environment (missing: {missing})"
    if importlib.util.find_spec("tensorflow") is None:  # the metric modules import gin.tf but use nothing from it
        sys.modules.setdefault("gin.tf", types.ModuleType("gin.tf"))
    sys.path.insert(0, str(root))
    logging.getLogger().setLevel(logging.ERROR)
    names = ["beta_vae", "factor_vae", "mig", "sap_score", "dci", "modularity_explicitness", "irs",
             "unsupervised_metrics", "utils"]
    try:
        modules = {n: importlib.import_module(f"disentanglement_lib.evaluation.metrics.{n}") for n in names}
    except Exception as exc:  # e.g. a gin-config that rejects `blacklist=`
        return None, f"importing the reference failed: {type(exc).__name__}: {exc}"
    import gin

    gin.bind_parameter("discretizer.discretizer_fn", modules["utils"]._histogram_discretize)
    gin.bind_parameter("discretizer.num_bins", 20)
    gin.bind_parameter("prune_dims.threshold", 0.05)
    return modules, ""


def reference_calls(ref, sizes: dict[str, int]):
    """Reference metric name -> f(data, representation_function, RandomState), study settings."""
    n_train, n_test, n_eval = sizes["num_train"], sizes["num_test"], sizes["num_eval"]
    return {
        "betavae": lambda d, f, rs: ref["beta_vae"].compute_beta_vae_sklearn(d, f, rs, None, 64, n_train, n_eval),
        "factorvae": lambda d, f, rs: ref["factor_vae"].compute_factor_vae(d, f, rs, None, 64, n_train, n_eval, n_train),
        "mig": lambda d, f, rs: ref["mig"].compute_mig(d, f, rs, None, n_train),
        "sap": lambda d, f, rs: ref["sap_score"].compute_sap(d, f, rs, None, n_train, n_test, continuous_factors=False),
        "dci": lambda d, f, rs: ref["dci"].compute_dci(d, f, rs, None, n_train, n_test),
        "modularity_explicitness": lambda d, f, rs: ref["modularity_explicitness"].compute_modularity_explicitness(
            d, f, rs, None, n_train, n_test),
        "irs": lambda d, f, rs: ref["irs"].compute_irs(d, f, rs, None, 0.99, n_train, 16),
        "unsupervised": lambda d, f, rs: ref["unsupervised_metrics"].unsupervised_metrics(d, f, rs, None, n_train),
    }


def ours(
    data: TableFactorData, table: np.ndarray, seed: int, sizes: dict[str, int], n_jobs: int = -1,
    dci_importance: str = "gbt",
) -> dict[str, float]:
    """All our factor metrics through :func:`factor_suite` (equal to each registered metric alone)."""
    encode = lambda images: table[images.reshape(len(images)).astype(np.int64)]  # noqa: E731
    sampling = dict(num_train=sizes["num_train"], num_eval=sizes["num_eval"], batch_size=64)
    return factor_suite(
        data, encode, seed, num_train=sizes["num_train"], num_test=sizes["num_test"], batch_size=16, n_jobs=n_jobs,
        params={"betavae": sampling, "factorvae": {**sampling, "num_variance_estimate": sizes["num_train"]},
                "dci": {"importance": dci_importance}},
    )


def udr_models(data: TableFactorData, seed: int = 321) -> list[tuple[np.ndarray, np.ndarray]]:
    """Four "models" for UDR: (code table, mean KL per latent) each.

    Each model's 10 latents are a random permutation of: the 5 scaled factors (two of
    them mixed with another factor by 0.4), 3 noise latents and 2 near-constant latents,
    plus a little noise; the KL vector marks the near-constant latents as inactive (0.005)
    and one noise latent as weakly active (0.2).
    """
    rs = np.random.RandomState(seed)
    factors = data.factors(np.arange(len(data))).astype(np.float64)
    scaled = factors / (np.asarray(data.factor_sizes) - 1.0)
    models = []
    for _ in range(4):
        informative = scaled.copy()
        a, b = rs.choice(data.num_factors, size=2, replace=False)
        informative[:, a] += 0.4 * scaled[:, b]
        columns = np.column_stack([informative, rs.normal(size=(len(data), 3)), 1e-3 * rs.normal(size=(len(data), 2))])
        kl = np.array([1.5] * data.num_factors + [0.8, 0.8, 0.2, 0.005, 0.005])
        order = rs.permutation(columns.shape[1])
        models.append((columns[:, order] + 0.05 * rs.normal(size=columns.shape), kl[order]))
    return models


def compare_udr(ref_udr, data: TableFactorData, seed: int) -> float:
    """UDR (lasso and Spearman, KL threshold 0.01) of the reference vs ours; returns the largest |diff|."""
    models = udr_models(data)
    functions = [(lambda obs, t=table, k=kl: (lookup(t)(obs), k)) for table, kl in models]
    worst = 0.0
    for correlation in ("lasso", "spearman"):
        ref = ref_udr.compute_udr_sklearn(data, functions, np.random.RandomState(seed), 10, 1000,
                                          correlation_matrix=correlation, filter_low_kl=True,
                                          include_raw_correlations=False, kl_filter_threshold=0.01)
        rs = np.random.RandomState(seed)  # the same observations, drawn the reference's way (100 batches of 10)
        observations = np.concatenate([data.sample_observations(10, rs) for _ in range(100)])
        codes = [lookup(table)(observations) for table, _ in models]
        mine = udr_from_codes(codes, [kl for _, kl in models], correlation=correlation, kl_threshold=0.01)
        for i, (r, o) in enumerate(zip(ref["model_scores"], mine["model_scores"])):
            diff = abs(float(r) - float(o))
            worst = max(worst, diff)
            flag = "" if diff <= TOLERANCE else "  <-- exceeds tolerance"
            print(f"{'udr-models':<15}{f'udr_{correlation}[{i}]':<22}{float(r):>12.5f}{float(o):>12.5f}{diff:>11.2e}{flag}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="path to a disentanglement_lib checkout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 / 1,000 samples instead of 10,000 / 5,000")
    parser.add_argument("--representations", default="mixed,identity,noise")
    parser.add_argument("--skip-udr", action="store_true", help="leave out the UDR comparison")
    parser.add_argument("--dci-importance", default="gbt", choices=("gbt", "hist_gbt"),
                        help="our DCI importance: the reference's GBT (default) or the opt-in fast variant")
    args = parser.parse_args(argv)

    ref, reason = load_reference(args.reference)
    if ref is None:
        print(f"SKIPPED: {reason}")
        return 0
    warnings.filterwarnings("ignore")
    sizes = (dict(num_train=2000, num_test=1000, num_eval=1000) if args.quick
             else dict(num_train=10000, num_test=5000, num_eval=5000))
    data = TableFactorData()
    tables = representations(data)
    calls = reference_calls(ref, sizes)
    print(f"factor sizes {FACTOR_SIZES}, seed {args.seed}, samples {sizes}, tolerance {TOLERANCE}, "
          f"our DCI importance {args.dci_importance!r}")
    print(f"{'representation':<15}{'metric':<22}{'reference':>12}{'ours':>12}{'|diff|':>11}")
    worst = 0.0
    for rep_name in args.representations.split(","):
        table = tables[rep_name]
        start = time.perf_counter()
        ref_scores = {}
        for metric, call in calls.items():
            np.random.seed(args.seed)  # the reference's unseeded GBT and SVC draw from the global RNG
            ref_scores[metric] = call(data, lookup(table), np.random.RandomState(args.seed))
        ref_seconds = time.perf_counter() - start
        start = time.perf_counter()
        mine = ours(data, table, args.seed, sizes, dci_importance=args.dci_importance)
        our_seconds = time.perf_counter() - start
        for our_key, metric, ref_key in PAIRS:
            r, o = float(ref_scores[metric][ref_key]), float(mine[our_key])
            diff = abs(r - o)
            worst = max(worst, diff)
            flag = "" if diff <= TOLERANCE else "  <-- exceeds tolerance"
            print(f"{rep_name:<15}{our_key:<22}{r:>12.5f}{o:>12.5f}{diff:>11.2e}{flag}")
        irs_ref = float(ref_scores["irs"]["num_active_dims"])
        print(f"{rep_name:<15}{'irs_active_dims':<22}{irs_ref:>12.1f}{mine['irs_active_dims']:>12.1f}"
              "   (reference sums code values: its known defect)")
        print(f"{rep_name:<15}{'(seconds)':<22}{ref_seconds:>12.1f}{our_seconds:>12.1f}")
    if not args.skip_udr:
        try:
            ref_udr = importlib.import_module("disentanglement_lib.evaluation.udr.metrics.udr")
        except Exception as exc:
            print(f"UDR: SKIPPED, importing the reference failed: {type(exc).__name__}: {exc}")
        else:
            worst = max(worst, compare_udr(ref_udr, data, args.seed))
    print(f"largest |diff| {worst:.2e} ({'within' if worst <= TOLERANCE else 'OUTSIDE'} tolerance {TOLERANCE})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
