"""Run the reference implementations of InfoMEC and DCI-ES on the fixed inputs of the tests.

The numbers written down in ``tests/test_metrics_infomec.py`` and
``tests/test_metrics_dci_es.py`` were printed by this script:

* InfoMEC: ``disentangle/metrics/infomec.py::compute_infomec`` of kylehkhsu/latent_quantization
  at commit 9a420a33505e03914f9b4fbfcafd221d25b8162f;
* DCI-ES: ``src/loss_capacity/train_model_random_forest.py::train_test_random_forest`` (the
  random-forest probe family) and ``metrics/explitcitness.py::Explitcitness`` of
  andreinicolicioiu/DCI-ES at commit 9329daec05ac18038e080596c5bde997d28a1aaa.

Usage (a Python with numpy<2, scipy and scikit-learn==1.3.2, the reference's era; not the
project's venv, whose scikit-learn no longer accepts ``multi_class``)::

    git -C <mirror> archive HEAD | tar -x -C /tmp/latent_quantization   # the `fetch` tool, or
    git clone https://github.com/kylehkhsu/latent_quantization /tmp/latent_quantization
    git clone https://github.com/andreinicolicioiu/DCI-ES /tmp/DCI-ES
    python benchmarks/reference_infomec_dcies.py --infomec-reference /tmp/latent_quantization \
        --dcies-reference /tmp/DCI-ES

The inputs (:func:`infomec_cases`, :func:`dcies_cases`) need only NumPy; the tests import them
from this file so both sides score the same arrays. The reference's torch data loaders,
tensorboard writer, ``sage`` and ``xgboost`` imports are replaced by stubs (they only move
arrays and log); the probes and the score are the reference's own code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import types
from pathlib import Path

import numpy as np

FACTOR_SIZES = (4, 5, 6)
#: DCI-ES: which factors the reference probes by classification (the rest by regression)
DCIES_FACTOR_DISCRETE = (True, False, False)
DCIES_DEPTHS = (1, 2, 3, 4, 8)
DCIES_NUM_TREES = 10
DCIES_SEED = 0
INFOMEC_SEED = 0


def _factors(n: int, rng: np.random.RandomState) -> np.ndarray:
    return np.stack([rng.randint(size, size=n) for size in FACTOR_SIZES], axis=1)


def infomec_cases() -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """name -> (factors (1000, 3) int, codes (1000, 4) float, discrete_latents)."""
    rng = np.random.RandomState(0)
    n = 1000
    v = _factors(n, rng)
    vs = (v - v.mean(0)) / v.std(0)
    perfect = np.concatenate([v + 0.05 * rng.randn(n, 3), 0.001 * rng.randn(n, 1)], axis=1)
    mixed = vs @ rng.randn(3, 4) + 0.1 * rng.randn(n, 4)
    noise = rng.randn(n, 4)
    perfect_discrete = np.concatenate([v[:, [2, 0, 1]], np.zeros((n, 1))], axis=1).astype(np.float64)
    edges = np.quantile(mixed, np.linspace(0, 1, 9)[1:-1], axis=0)
    mixed_discrete = np.stack([np.digitize(mixed[:, j], edges[:, j]) for j in range(4)], axis=1) / 7.0
    return {
        "perfect": (v, perfect, False),
        "mixed": (v, mixed, False),
        "noise": (v, noise, False),
        "perfect_discrete": (v, perfect_discrete, True),
        "mixed_discrete": (v, mixed_discrete, True),
    }


def dcies_cases() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (codes_train (600, 4), factors_train (600, 3), codes_test (300, 4), factors_test)."""
    rng = np.random.RandomState(1)
    mixing = rng.randn(3, 4)
    out = {}
    for name in ("perfect", "mixed", "noise"):
        tables = []
        for n in (600, 300):
            v = _factors(n, rng)
            if name == "perfect":
                z = np.concatenate([v + 0.05 * rng.randn(n, 3), rng.randn(n, 1)], axis=1)
            elif name == "mixed":
                z = ((v - 2.0) / 1.5) @ mixing + 0.1 * rng.randn(n, 4)
            else:
                z = rng.randn(n, 4)
            tables += [z.astype(np.float32).astype(np.float64), v]
        out[name] = tuple(tables)
    return out


def run_infomec(reference: Path) -> dict[str, dict]:
    sys.path.insert(0, str(reference / "disentangle" / "metrics"))
    import infomec  # the reference module (needs only numpy + scikit-learn)

    results = {}
    for name, (v, z, discrete) in infomec_cases().items():
        np.random.seed(INFOMEC_SEED)  # mutual_info_classif's tie-breaking noise (global RNG)
        r = infomec.compute_infomec(v, z, discrete)
        results[name] = {
            "infom": float(r["infom"]), "infoe": float(r["infoe"]), "infoc": float(r["infoc"]),
            "active": int(np.sum(r["active_latents"])), "nmi": np.asarray(r["nmi"]).round(12).tolist(),
        }
    return results


class _Dataset:
    def __init__(self, codes, factors):
        self.codes, self.factors = codes, factors
        self._factor_sizes = list(FACTOR_SIZES)
        self._factor_discrete = list(DCIES_FACTOR_DISCRETE)
        self._factor_names = [f"factor_{k}" for k in range(len(FACTOR_SIZES))]

    def __len__(self):
        return len(self.codes)


class _Loader:
    def __init__(self, dataset):
        self.dataset = dataset


class _Writer:
    def add_scalar(self, *args, **kwargs):
        pass


def run_dcies(reference: Path, out_dir: Path) -> dict[str, dict]:
    for name in ("torch", "sage", "xgboost"):
        sys.modules.setdefault(name, types.ModuleType(name))
    utils = types.ModuleType("loss_capacity.utils")

    def get_representations_split(model, dataset, device, num_samples=None):
        # the reference's loader: float32 codes, factor classes normalised to [0, 1]
        targets = dataset.factors / (np.array(FACTOR_SIZES, dtype=np.float32) - 1)
        return dataset.codes.astype(np.float32), targets.astype(np.float32)

    utils.get_representations_split = get_representations_split
    sys.modules["loss_capacity.utils"] = utils
    sys.path.insert(0, str(reference))
    sys.path.insert(0, str(reference / "src"))
    from loss_capacity.train_model_random_forest import train_test_random_forest
    from metrics.explitcitness import Explitcitness

    baseline = [1.0 - 1.0 / s if d else 1.0 for s, d in zip(FACTOR_SIZES, DCIES_FACTOR_DISCRETE)]
    results = {}
    for name, (z_tr, v_tr, z_te, v_te) in dcies_cases().items():
        loaders = [_Loader(_Dataset(z_tr, v_tr)), _Loader(_Dataset(z_te, v_te)), _Loader(_Dataset(z_te, v_te))]
        test_scores, dcis = [], []
        for depth in DCIES_DEPTHS:
            folder = out_dir / f"{name}_{depth}"
            _, _, _, test, dci = train_test_random_forest(
                None, *loaders, method="rf", max_leaf_nodes=None, max_depth=depth, num_trees=DCIES_NUM_TREES,
                seed=DCIES_SEED, tb_writer=_Writer(), savefolder=str(folder), use_sage=False,
            )
            test_scores.append(test)
            dcis.append(dci)
        losses = 1.0 - np.array(test_scores).T  # factors x capacities, as simple_gather.py
        per_factor = []
        for k in range(len(FACTOR_SIZES)):
            exp = Explitcitness()
            exp.add_curve(np.array(DCIES_DEPTHS, dtype=float), losses[k], baseline[k], name=f"model_factor_{k}")
            per_factor.append(float(exp.get_explitcitness()[f"model_factor_{k}"]))
        best = int(np.argmax([d["informativeness_test"] for d in dcis]))
        results[name] = {
            "explicitness": float(np.mean(per_factor)), "explicitness_per_factor": per_factor,
            "losses": losses.round(12).tolist(),
            "disentanglement": float(dcis[best]["disentanglement"]),
            "completeness": float(dcis[best]["completeness"]),
            "informativeness": float(dcis[best]["informativeness_test"]),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--infomec-reference", type=Path, help="checkout of kylehkhsu/latent_quantization")
    parser.add_argument("--dcies-reference", type=Path, help="checkout of andreinicolicioiu/DCI-ES")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reference_infomec_dcies"),
                        help="scratch folder (the reference saves its forests here)")
    args = parser.parse_args()
    for path, repo in ((args.infomec_reference, "kylehkhsu/latent_quantization"),
                       (args.dcies_reference, "andreinicolicioiu/DCI-ES")):
        if path is not None and not path.is_dir():
            sys.exit(f"{path} is missing: git clone https://github.com/{repo} {path}")
    out = {}
    if args.infomec_reference:
        out["infomec"] = run_infomec(args.infomec_reference)
    if args.dcies_reference:
        with contextlib.redirect_stdout(sys.stderr):  # the reference prints its progress
            out["dci_es"] = run_dcies(args.dcies_reference, args.work)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
