"""InfoMEC: InfoM (modularity), InfoE (explicitness), InfoC (compactness).

Hsu, Dorrell, Whittington, Wu & Finn, "Disentanglement via Latent Quantization" (NeurIPS
2023), the section defining InfoMEC and its appendix (section numbers not checked here);
definitions as implemented by the reference
``kylehkhsu/latent_quantization``, file ``disentangle/metrics/infomec.py`` (commit
9a420a33505e03914f9b4fbfcafd221d25b8162f), functions ``compute_infomec``, ``compute_nmi``,
``compute_infoe`` and ``logistic_regression``:

1. Factors (``sources``) are label-encoded per factor (classes 0..K_i-1).
2. Normalised mutual information ``NMI[i, j] = I(v_i; z_j) / H(v_i)`` (the paper's NMI,
   normalised by the *factor's* entropy, in nats, ``H(v_i) = mutual_info_score(v_i, v_i)``):

   * continuous codes (default, ``discrete_latents=False``): each code is standardised and
     ``I`` is the k-nearest-neighbour estimate of ``sklearn.feature_selection.mutual_info_classif``
     (Ross 2014) with ``n_neighbors=10``. The codes are *not* discretised into bins;
   * discrete codes (``discrete_latents=True``, e.g. quantised latents): each code is
     label-encoded and ``I`` is the plug-in ``sklearn.metrics.mutual_info_score``.

3. Active codes: range (max - min over the sample, raw codes) ``> max range / 20`` for
   continuous codes, ``> 0`` for discrete codes; inactive codes are pruned from the NMI.
4. With ``K`` factors and ``L`` active codes (``P`` = pruned NMI, K x L):

   * ``InfoM = (mean_j max_i P[i, j] / sum_i P[i, j] - 1/K) / (1 - 1/K)`` (a code's information
     concentrated on one factor);
   * ``InfoC = (mean_i max_j P[i, j] / sum_j P[i, j] - 1/L) / (1 - 1/L)`` (a factor's
     information concentrated in one code).

5. ``InfoE`` (predictive information of a linear probe): for every factor a multinomial
   logistic regression without penalty (lbfgs, ``max_iter=100``, ``tol=1e-4``,
   ``class_weight="balanced"``) is fitted on *all* codes (standardised; one-hot for discrete
   codes) and its training log loss is compared with that of the same probe on all-zero
   inputs: ``(H_null - H_codes) / H_null``, averaged over factors. As in the reference there
   is no held-out split.

The mutual-information estimator adds 1e-10-scale noise to the codes (scikit-learn's tie
breaking); the reference draws it from NumPy's global generator, here from one
``RandomState(seed)`` used for all ``(factor, code)`` pairs in the reference's order, so
``numpy.random.seed(seed)`` before the reference call reproduces our numbers exactly.

Multi-dimensional latent units: neither the reference code nor the paper defines InfoMEC
for vector-valued units (codes are ``(num_samples, num_latents)``). Codes ``(N, U, d)`` are
first reduced to a table by :mod:`bench.metrics.representation` (``"pca"``: one scalar per
unit, so InfoM/InfoC are per unit; ``"flatten"``: every dimension is its own code), as for
the other factor metrics; :func:`infomec_units_from_codes` does this for arrays.

Deviations, all named options (defaults reproduce the reference):

* ``zero_information="reference"``: an active code with zero NMI to every factor (or a
  factor with zero NMI to every active code) makes the ratio 0/0 and the score NaN, as in
  the reference; ``"exclude"`` drops such rows/columns from the mean (what the reference's
  older ``compute_mutual_information_ratio`` in ``mutual_information.py`` does for InfoM).
* ``n_neighbors`` (10), ``active_fraction`` (1/20) and ``max_iter`` (100) are exposed.
* Edge cases without a reference number: with one factor InfoM is 1, with one active
  code InfoC is 1 (the normaliser ``1 - 1/1`` is zero); a factor taking a single value
  raises a ``ValueError`` (zero entropy), as does a sample with no active code.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import feature_selection, linear_model, metrics, preprocessing
from sklearn.exceptions import ConvergenceWarning

from bench.data.base import FactorDataset
from bench.metrics.representation import reduce_units
from bench.metrics.sampling import EncodeFn, RandomStateLike, as_random_state, generate_factor_code
from bench.metrics.table import check_table

ZERO_INFORMATION = ("reference", "exclude")


def infomec(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    discrete_latents: bool = False,
    n_neighbors: int = 10,
    active_fraction: float = 0.05,
    max_iter: int = 100,
    zero_information: str = "reference",
) -> dict[str, float]:
    """Sample ``num_train`` (factors, codes) pairs and compute InfoM, InfoE, InfoC.

    The reference scores the codes of its validation set (10 000 images in its configs);
    here they are drawn like the other factor metrics
    (:func:`bench.metrics.sampling.generate_factor_code`), then one integer from
    ``random_state`` seeds the MI estimator's tie-breaking noise.
    """
    rs = as_random_state(random_state)
    codes, factors = generate_factor_code(dataset, encode, num_train, rs, batch_size)
    seed = int(rs.randint(2**31 - 1))
    return infomec_from_codes(
        codes, factors, discrete_latents=discrete_latents, n_neighbors=n_neighbors, seed=seed,
        active_fraction=active_fraction, max_iter=max_iter, zero_information=zero_information,
    )


def infomec_from_codes(
    codes: np.ndarray,
    factors: np.ndarray,
    *,
    discrete_latents: bool = False,
    n_neighbors: int = 10,
    seed: int = 0,
    active_fraction: float = 0.05,
    max_iter: int = 100,
    zero_information: str = "reference",
) -> dict[str, float]:
    """InfoMEC of codes (N, D) against factor classes (N, K) (reference ``compute_infomec``).

    Returns ``infom``, ``infoe``, ``infoc`` and ``infomec_active`` (number of active codes).
    """
    if zero_information not in ZERO_INFORMATION:
        raise ValueError(f"zero_information must be one of {ZERO_INFORMATION}, got {zero_information!r}")
    latents, sources = check_table(codes, factors)
    sources = label_encode(sources)
    nmi = normalized_mutual_info(latents, sources, discrete_latents=discrete_latents, n_neighbors=n_neighbors, seed=seed)
    active = active_latents(latents, discrete_latents=discrete_latents, active_fraction=active_fraction)
    if not active.any():
        raise ValueError("InfoMEC: no active code (every code is constant over the sample)")
    pruned = nmi[:, active]
    return {
        "infom": concentration(pruned, axis=0, zero_information=zero_information),
        "infoe": infoe(latents, sources, discrete_latents=discrete_latents, max_iter=max_iter),
        "infoc": concentration(pruned, axis=1, zero_information=zero_information),
        "infomec_active": float(active.sum()),
    }


def infomec_units_from_codes(codes: np.ndarray, factors: np.ndarray, *, reduction: str = "pca", **params) -> dict[str, float]:
    """InfoMEC of codes with multi-dimensional units (N, U, d), reduced to a table first.

    Not defined by the reference; see the module docstring. ``reduction``: ``"pca"`` or
    ``"flatten"`` (:func:`bench.metrics.representation.reduce_units`).
    """
    return infomec_from_codes(reduce_units(codes, reduction), factors, **params)


def label_encode(values: np.ndarray) -> np.ndarray:
    """Every column mapped to 0..(distinct values - 1) (reference ``process_sources``)."""
    return np.stack([np.unique(values[:, i], return_inverse=True)[1].reshape(-1) for i in range(values.shape[1])], axis=1)


def normalized_mutual_info(
    latents: np.ndarray, sources: np.ndarray, *, discrete_latents: bool = False, n_neighbors: int = 10, seed: int = 0
) -> np.ndarray:
    """NMI (K factors x D codes), ``I(v_i; z_j) / H(v_i)`` (reference ``compute_nmi``)."""
    if discrete_latents:
        processed = label_encode(latents)
    else:
        processed = preprocessing.StandardScaler().fit_transform(latents)
    rng = np.random.RandomState(seed)
    nmi = np.empty((sources.shape[1], processed.shape[1]))
    for i in range(sources.shape[1]):
        for j in range(processed.shape[1]):
            if discrete_latents:
                nmi[i, j] = metrics.mutual_info_score(sources[:, i], processed[:, j])
            else:
                nmi[i, j] = feature_selection.mutual_info_classif(
                    processed[:, j][:, None], sources[:, i], discrete_features=False, n_neighbors=n_neighbors,
                    random_state=rng,
                )[0]
        entropy = metrics.mutual_info_score(sources[:, i], sources[:, i])
        if entropy <= 0.0:
            raise ValueError(f"InfoMEC: factor {i} takes a single value in the sample (zero entropy)")
        nmi[i, :] /= entropy
    return nmi


def active_latents(latents: np.ndarray, *, discrete_latents: bool = False, active_fraction: float = 0.05) -> np.ndarray:
    """Boolean mask (D,) of codes whose range exceeds ``active_fraction`` x the largest range (0 if discrete)."""
    ranges = latents.max(axis=0) - latents.min(axis=0)
    if discrete_latents:
        return ranges > 0
    return ranges > ranges.max() * active_fraction


def concentration(pruned_nmi: np.ndarray, *, axis: int, zero_information: str = "reference") -> float:
    """InfoM (``axis=0``, per code over factors) or InfoC (``axis=1``, per factor over codes).

    ``(mean max/sum - 1/n) / (1 - 1/n)`` with ``n`` the length of the reduced axis.
    """
    n = pruned_nmi.shape[axis]
    if n == 1:
        return 1.0
    total = pruned_nmi.sum(axis=axis)
    peak = pruned_nmi.max(axis=axis)
    if zero_information == "exclude":
        keep = total > 0
        peak, total = peak[keep], total[keep]
        if not keep.any():
            return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = peak / total
    return float((np.mean(ratio) - 1.0 / n) / (1.0 - 1.0 / n))


def infoe(latents: np.ndarray, sources: np.ndarray, *, discrete_latents: bool = False, max_iter: int = 100) -> float:
    """Mean normalised predictive information of a linear probe (reference ``compute_infoe``)."""
    if discrete_latents:
        processed = preprocessing.OneHotEncoder().fit_transform(latents)
    else:
        processed = preprocessing.StandardScaler().fit_transform(latents)
    null = np.zeros_like(latents)
    per_factor = []
    for i in range(sources.shape[1]):
        conditional = probe_log_loss(processed, sources[:, i], max_iter=max_iter)
        marginal = probe_log_loss(null, sources[:, i], max_iter=max_iter)
        per_factor.append((marginal - conditional) / marginal)
    return float(np.mean(per_factor))


def probe_log_loss(x, y: np.ndarray, *, max_iter: int = 100) -> float:
    """Training log loss of an unpenalised, class-balanced multinomial logistic regression.

    Reference ``logistic_regression``: ``LogisticRegression(penalty=None, solver="lbfgs",
    tol=1e-4, max_iter=100, class_weight="balanced", multi_class="multinomial")``; without a
    penalty, ``C=inf`` in scikit-learn >= 1.8 (lbfgs is multinomial for several classes).
    A probe that stops at ``max_iter`` is kept, as in the reference.
    """
    model = linear_model.LogisticRegression(
        C=np.inf, tol=1e-4, fit_intercept=True, class_weight="balanced", solver="lbfgs", max_iter=max_iter
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return float(metrics.log_loss(y, model.predict_proba(x), labels=model.classes_))
