"""UDR: Unsupervised Disentanglement Ranking (Duan et al. 2020, "Unsupervised Model Selection
for Variational Disentangled Representation Learning", ICLR), disentanglement_lib definition.

UDR needs no ground-truth factors. It scores each model of a *set* (the same method and
hyperparameters trained with different seeds) by how well its latents agree, one to one,
with the latents of the other models, on the same observations:

1. every model encodes the same ``num_data_points`` observations (mean codes); each code
   column is standardised (zero mean, unit variance, ``ddof=0``; a constant column is left
   at zero);
2. with ``filter_low_kl``, a latent whose mean KL(q(z_d|x) ‖ N(0, 1)) over the observations is
   ≤ ``kl_threshold`` is *inactive*: its column is zeroed and it is left out of the
   similarity matrices below (the paper's informative-latent filter, §3);
3. for every ordered pair (i, j), i ≠ j, a similarity matrix R (latents of i × latents of j):
   ``correlation="lasso"`` — the absolute coefficients of a Lasso regression (α = 0.1)
   predicting model j's codes from model i's; ``"spearman"`` — absolute Spearman rank
   correlations;
4. the pair's score is the relative strength of R (paper eq. 3): the mean over columns of
   ``max(col)² / sum(col)`` and over rows of ``max(row)² / sum(row)`` (0/0 counts as 0),
   averaged; 1 when each latent of i matches exactly one latent of j;
5. the model's UDR is the median of the scores of the pairs (j, i) over j ≠ i (the
   reference's ``model_scores``).

Defaults are the reference's UDR configuration (``udr_sklearn``: 1,000 data points, lasso,
KL filter on with threshold 0.01).

Defect of the reference fixed here (documented): disentanglement_lib zeroes the columns of
latents with KL ≤ 0.01 whatever ``kl_filter_threshold`` says, and uses the threshold only for
the filter of step 3; a threshold other than 0.01 therefore mixed two definitions of
"inactive". Here ``kl_threshold`` governs both.

Deviations (edge cases where the reference gives no number, documented):

* a model whose latents are all inactive leaves an empty matrix (the reference raises in
  ``max``); its pairs score 0;
* encoders without a Gaussian posterior (AE, DiffAE, ...) have no per-latent KL: their
  latents are all treated as active (``kl=None``), which is what ``filter_low_kl=False`` does
  in the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

CORRELATIONS = ("lasso", "spearman")


def relative_strength(corr: np.ndarray) -> float:
    """Relative-strength disentanglement of a non-negative similarity matrix (rows × columns)."""
    corr = np.asarray(corr, dtype=np.float64)
    if corr.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        cols = np.nan_to_num(corr.max(axis=0) ** 2 / corr.sum(axis=0))
        rows = np.nan_to_num(corr.max(axis=1) ** 2 / corr.sum(axis=1))
    return float((cols.mean() + rows.mean()) / 2)


def spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Spearman correlation| between every column of ``a`` (rows) and of ``b`` (columns).

    Computed as Pearson correlation of the column ranks (average ranks for ties), so it is
    ``scipy.stats.spearmanr`` per pair; a constant column gives NaN, as there.
    """
    ra = scipy.stats.rankdata(a, axis=0)
    rb = scipy.stats.rankdata(b, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (ra.T @ rb) / np.outer(np.sqrt((ra ** 2).sum(axis=0)), np.sqrt((rb ** 2).sum(axis=0)))
    return np.abs(corr)


def lasso_matrix(a: np.ndarray, b: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """|Lasso coefficients| predicting ``b`` from ``a``, as (columns of a) × (columns of b)."""
    model = Lasso(alpha=alpha)
    with warnings.catch_warnings():  # the reference's settings (max_iter 1000) often stop near, not at, the optimum
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(a, b)
    coef = np.atleast_2d(model.coef_)  # (D_b, D_a)
    return np.abs(coef).T


def _standardise(codes: np.ndarray) -> np.ndarray:
    mean, std = codes.mean(axis=0), codes.std(axis=0)
    return (codes - mean) / np.where(std > 0, std, 1.0)


def gaussian_kl_per_latent(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean over items of KL(N(μ, σ²) ‖ N(0, 1)) per latent, (N, D) → (D,) (as the reference)."""
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    return np.mean(0.5 * (mean ** 2 + np.exp(logvar) - logvar - 1.0), axis=0)


def udr_from_codes(
    codes: list[np.ndarray],
    kl: list[np.ndarray | None] | None = None,
    *,
    correlation: str = "lasso",
    filter_low_kl: bool = True,
    kl_threshold: float = 0.01,
    alpha: float = 0.1,
) -> dict[str, np.ndarray]:
    """UDR of each model from its codes on the same observations.

    ``codes``: one (N, D_i) array per model, rows = the same N observations in the same order.
    ``kl``: per model, the mean KL per latent (D_i,) or ``None`` (no posterior: all active).
    Returns ``{"model_scores": (M,), "pairwise": (M, M)}``; ``pairwise[i, j]`` is the relative
    strength of the similarity matrix of model i's latents × model j's (diagonal NaN).
    """
    if correlation not in CORRELATIONS:
        raise ValueError(f"udr: correlation must be one of {CORRELATIONS}, got {correlation!r}")
    if len(codes) < 2:
        raise ValueError(f"udr: needs the codes of at least 2 models, got {len(codes)}")
    kl = list(kl) if kl is not None else [None] * len(codes)
    if len(kl) != len(codes):
        raise ValueError(f"udr: {len(kl)} KL vectors for {len(codes)} models")
    n = None
    reps, masks = [], []
    for i, (z, k) in enumerate(zip(codes, kl)):
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"udr: codes of model {i} must be (N, D), got shape {z.shape}")
        if n is None:
            n = z.shape[0]
        if z.shape[0] != n:
            raise ValueError(f"udr: model {i} has codes for {z.shape[0]} observations, model 0 for {n}")
        if not np.isfinite(z).all():
            raise ValueError(f"udr: codes of model {i} contain NaN or inf")
        z = _standardise(z)
        active = np.ones(z.shape[1], dtype=bool)
        if k is not None:
            k = np.asarray(k, dtype=np.float64).reshape(-1)
            if k.shape[0] != z.shape[1]:
                raise ValueError(f"udr: model {i} has {z.shape[1]} latents but {k.shape[0]} KL values")
            if filter_low_kl:
                active = k > kl_threshold
                z = z * active
        reps.append(z)
        masks.append(active)
    m = len(reps)
    pairwise = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            if correlation == "lasso":
                corr = lasso_matrix(reps[i], reps[j], alpha)
            else:
                corr = spearman_matrix(reps[i], reps[j])
            pairwise[i, j] = relative_strength(corr[masks[i]][:, masks[j]])
    scores = np.array([np.median(np.delete(pairwise[:, i], i)) for i in range(m)])
    return {"model_scores": scores, "pairwise": pairwise}


def udr(
    dataset,
    models: list,
    random_state: np.random.RandomState,
    *,
    num_data_points: int = 1000,
    correlation: str = "lasso",
    filter_low_kl: bool = True,
    kl_threshold: float = 0.01,
    alpha: float = 0.1,
) -> dict[str, np.ndarray]:
    """UDR of fitted adapters (the seeds of one setting) on ``num_data_points`` shared observations.

    Adapters declaring ``stochastic_encode`` provide their Gaussian posterior through
    ``encode_posterior`` and get the KL filter; the others are treated as all-active.
    Returns ``{"udr": (M,) model scores in the order of ``models``}``.
    """
    if num_data_points < 2:
        raise ValueError(f"udr: num_data_points must be >= 2, got {num_data_points}")
    index = random_state.randint(len(dataset), size=num_data_points)
    images = dataset.images(index)
    codes, kls = [], []
    for model in models:
        if "stochastic_encode" in model.capabilities:
            mean, logvar = model.encode_posterior(images)
            codes.append(mean)
            kls.append(gaussian_kl_per_latent(mean, logvar))
        else:
            codes.append(model.encode(images))
            kls.append(None)
    out = udr_from_codes(codes, kls, correlation=correlation, filter_low_kl=filter_low_kl,
                         kl_threshold=kl_threshold, alpha=alpha)
    return {"udr": out["model_scores"]}
