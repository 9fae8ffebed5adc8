"""Attribute metrics for datasets with binary attributes (CelebA) or class labels.

**TAD** (Total AUROC Difference) and the number of captured attributes, Yeats, Hetrick,
Soremekun, Gunaratne & Roy (2022), "NashAE: Disentangling Representations through
Adversarial Covariance Minimization", ECCV, §5 ("TAD metric"):

1. For every attribute ``a`` and latent ``j``, the AUROC of the latent's value as a
   detector of the attribute, in the better of the two directions:
   ``max(AUROC(z_j), AUROC(-z_j))`` (>= 0.5).
2. Per attribute, the best AUROC minus the second best (over the other latents).
3. An attribute is *captured* when its best AUROC is >= 0.75 and it is not entangled with
   another attribute: its largest mutual information with any other attribute is at most
   0.2 of its own entropy (``max_{b != a} I(a; b) / H(a) <= 0.2``, natural logarithms,
   plug-in estimates from the attribute table itself).
4. ``tad`` is the sum of the differences over captured attributes; ``tad_attributes`` is
   their number.

Two variants, selected by name:

* ``variant="nashae"`` (default) follows the authors' evaluation
  (``celeba_eval.ipynb`` and ``ae_utils_exp.py`` of ericyeats/nashae-beamsynthesis): one
  set of codes (a random batch of 1,000 images), AUROCs integrated from a sweep of 101
  thresholds ``min_j + t (max_j - min_j)``, ``t = 0, 0.01, ..., 1`` (detector
  ``z >= thr`` and ``z < thr``; each curve's points sorted, area = sum of
  ``TPR_i (FPR_i - FPR_{i-1})``), and a latent whose range ``max_j - min_j`` is <= 0.2
  counts as a random guess (AUROC 0.5).
* ``variant="infodiffusion"`` follows ``eval_disentanglement.py`` of isjakewong/InfoDiffusion
  (Wang et al. 2023): 10,000 codes, ``KFold(5, shuffle=True)``; on each *training* fold the
  codes are standardised and the AUROCs are exact (``sklearn.metrics.roc_auc_score``, equal
  to the Mann-Whitney statistic with ties counted 1/2, computed here from ranks); ``tad``
  and ``tad_attributes`` are the means over the five folds.

**AUROC probe** (InfoDiffusion's "latent quality" for CelebA): per attribute a
``LogisticRegression`` (scikit-learn defaults) on standardised codes (scaler fitted on the
training fold), test-fold AUROC of ``predict_proba``; mean over attributes, then over the
five folds of ``KFold(5, shuffle=True)``.

**Latent accuracy** (InfoDiffusion's latent classification for FashionMNIST / CIFAR-10):
the same protocol with the class label as target (one multinomial ``LogisticRegression``)
and test-fold accuracy. InfoDiffusion encodes the whole training split (``save_latent``:
60,000 FashionMNIST images, file order) and runs the 5 folds over all of it.

Row and fold **protocols** of the three dataset wrappers (``protocol=``):

* ``"random"`` (default): ``num_samples`` items drawn at random with the evaluation's random
  state, which then (advanced) seeds ``KFold``;
* ``"infodiffusion"``: InfoDiffusion's ``eval_disentanglement.py`` exactly — the first
  ``num_samples`` (10,000) items in dataset order, ``KFold(5, shuffle=True, random_state=0)``
  whatever the evaluation's seed, the scaler fitted on the training fold, scikit-learn's
  default ``LogisticRegression``; TAD (variant ``"infodiffusion"``, required) on the training
  folds. Every folded score also reports its standard deviation over the folds
  (``tad_fold_std``, ``auroc_fold_std``, ``latent_accuracy_fold_std``), the "± std" of the
  paper's tables.

Documented deviations:

* An attribute that is constant in the evaluated rows has no AUROC (one class only) and no
  entropy; it is never captured (the reference code divides by zero there) and is left out
  of the AUROC probe's mean. A (fold, attribute) pair whose training or test fold holds
  one class only is left out of that fold's mean (scikit-learn raises there).
* The threshold sweep runs in float32 like the reference (codes are cast), because the last
  threshold ``(max - min) + min`` can round past the maximum and so moves a curve's end
  point; the fractions ``t`` come from the same ``torch.arange`` call.
* The dataset wrappers draw a random subset of items without replacement (default 10,000
  for the probes, so a CPU run stays in minutes; ``num_samples`` raises it); InfoDiffusion
  takes the first 10,000 CelebA items in file order for TAD/AUROC and every training item
  for the latent accuracy.
* ``LogisticRegression`` convergence warnings (scikit-learn's default ``max_iter=100``, kept
  as in the reference) are silenced; ``max_iter`` is a parameter.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.stats
import torch
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from bench.data.base import AttributeDataset, ImageDataset, LabelledDataset
from bench.metrics.sampling import DEFAULT_ENCODE_BATCH_SIZE, EncodeFn, RandomStateLike, as_random_state

VARIANTS = ("nashae", "infodiffusion")
#: which items are scored and how the folds are drawn (see the module docstring)
PROTOCOLS = ("random", "infodiffusion")
#: per-variant number of evaluated items in the dataset wrapper (the references' sizes)
DEFAULT_NUM_SAMPLES = {"nashae": 1000, "infodiffusion": 10000}


# -- AUROC of single latents ------------------------------------------------------------------


def exact_auroc_matrix(codes: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Both-direction AUROC of every latent for every attribute, shape (A, D).

    ``AUROC(z_j)`` is the Mann-Whitney statistic ``P(z_pos > z_neg) + P(z_pos = z_neg) / 2``
    (what ``roc_auc_score(y, z)`` returns); the entry is ``max(AUROC, 1 - AUROC)``. Rows of
    constant attributes are NaN.
    """
    z, y = _check_codes_attributes(codes, attributes)
    ranks = scipy.stats.rankdata(z, axis=0)  # average ranks for ties
    pos = y.sum(axis=0)
    neg = len(y) - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        u = y.T @ ranks - (pos * (pos + 1) / 2.0)[:, None]
        auc = u / (pos * neg)[:, None]
    auc[(pos == 0) | (neg == 0)] = np.nan
    return np.maximum(auc, 1.0 - auc)


def threshold_auroc_matrix(
    codes: np.ndarray, attributes: np.ndarray, *, num_thresholds: int = 101, min_range: float = 0.2
) -> np.ndarray:
    """Both-direction AUROC by NashAE's threshold sweep, shape (A, D).

    For latent ``j`` the thresholds are ``min_j + t (max_j - min_j)`` for ``num_thresholds``
    values of ``t`` evenly spaced on [0, 1]; the detectors ``z_j >= thr`` and ``z_j < thr``
    give one ROC curve each, integrated as the reference does (points sorted, right-end
    rectangles). A latent with ``max_j - min_j <= min_range`` scores 0.5 for every attribute
    (the reference skips it as inactive). Rows of constant attributes are NaN.
    """
    z, y = _check_codes_attributes(codes, attributes)
    z = z.astype(np.float32)  # the reference's arithmetic: float32 codes and thresholds
    n, num_codes = z.shape
    pos = y.sum(axis=0)
    neg = n - pos
    constant = (pos == 0) | (neg == 0)
    result = np.full((y.shape[1], num_codes), 0.5)
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be >= 2, got {num_thresholds}")
    # the reference's torch.arange(0.0, 1.0001, step=0.01) for 101 thresholds, bit for bit
    t = torch.arange(0.0, 1.0001, step=1.0 / (num_thresholds - 1), dtype=torch.float32).numpy()[:num_thresholds]
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(num_codes):
            lo, hi = z[:, j].min(), z[:, j].max()
            if hi - lo <= np.float32(min_range):
                continue
            order = np.argsort(z[:, j], kind="stable")
            sorted_z = z[order, j]
            thresholds = t * (hi - lo) + lo  # float32; the last one may round past the maximum
            below = np.searchsorted(sorted_z, thresholds, side="left")  # (T,) count of z < thr
            cum_pos = np.concatenate([np.zeros((1, y.shape[1])), np.cumsum(y[order], axis=0)])
            pos_below = cum_pos[below]  # (T, A)
            neg_below = below[:, None] - pos_below
            up = _sorted_area((neg - neg_below) / neg, (pos - pos_below) / pos)  # z >= thr
            down = _sorted_area(neg_below / neg, pos_below / pos)  # z < thr
            result[:, j] = np.maximum(up, down)
    result[constant] = np.nan
    return result


def _sorted_area(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Area under (T, A) ROC points: each column sorted, ``sum TPR_i (FPR_i - FPR_{i-1})``."""
    fpr, tpr = np.sort(fpr, axis=0), np.sort(tpr, axis=0)
    return np.sum(tpr[1:] * np.diff(fpr, axis=0), axis=0)


# -- mutual information between attributes ---------------------------------------------------


def attribute_mutual_information(attributes: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (nats) between every pair of binary attributes, (A, A).

    The diagonal holds each attribute's entropy ``H(a) = I(a; a)``. Cells of the joint table
    with zero probability contribute 0, as in the reference.
    """
    y = np.asarray(attributes, dtype=np.float64)
    n = len(y)
    mi = np.zeros((y.shape[1], y.shape[1]))
    marginal = y.mean(axis=0)
    for a_val, p_a in ((y, marginal), (1.0 - y, 1.0 - marginal)):
        for b_val, p_b in ((y, marginal), (1.0 - y, 1.0 - marginal)):
            joint = a_val.T @ b_val / n
            expected = np.outer(p_a, p_b)
            with np.errstate(divide="ignore", invalid="ignore"):
                term = joint * np.log(joint / expected)
            mi += np.where((joint > 0) & (expected > 0), term, 0.0)
    return mi


def entangled_fraction(attributes: np.ndarray) -> np.ndarray:
    """Per attribute, ``max_{b != a} I(a; b) / H(a)`` (NaN for a constant attribute), (A,)."""
    mi = attribute_mutual_information(attributes)
    entropy = np.diag(mi).copy()
    off = mi - np.diag(entropy)
    largest = off.max(axis=1) if len(mi) > 1 else np.zeros(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(entropy > 0, largest / entropy, np.nan)


# -- TAD ----------------------------------------------------------------------------------------


def tad_from_auroc(
    auroc: np.ndarray,
    attributes: np.ndarray,
    *,
    auroc_threshold: float = 0.75,
    entanglement_threshold: float = 0.2,
) -> dict[str, float]:
    """TAD and the number of captured attributes from an (A, D) AUROC matrix.

    The second best AUROC of an attribute is the best over the other latents; with a single
    latent it is 0, as in the reference (which zeroes the best entry and takes the max).
    """
    auroc = np.asarray(auroc, dtype=np.float64)
    best_idx = np.argmax(np.nan_to_num(auroc, nan=-1.0), axis=1)
    best = auroc[np.arange(len(auroc)), best_idx]
    others = auroc.copy()
    others[np.arange(len(auroc)), best_idx] = 0.0
    differences = best - others.max(axis=1)
    entangled = entangled_fraction(attributes)
    with np.errstate(invalid="ignore"):
        kept = (best >= auroc_threshold) & (entangled <= entanglement_threshold)
    return {"tad": float(differences[kept].sum()), "tad_attributes": float(kept.sum())}


def tad_from_codes(
    codes: np.ndarray,
    attributes: np.ndarray,
    random_state: RandomStateLike = 0,
    *,
    variant: str = "nashae",
    auroc_threshold: float = 0.75,
    entanglement_threshold: float = 0.2,
    n_splits: int = 5,
    num_thresholds: int = 101,
    min_range: float = 0.2,
) -> dict[str, float]:
    """TAD and ``tad_attributes`` of codes (N, D) for binary attributes (N, A).

    ``variant="nashae"`` uses every row at once with the threshold-sweep AUROC
    (``num_thresholds``, ``min_range``) and ignores ``random_state``;
    ``variant="infodiffusion"`` averages over the training folds of
    ``KFold(n_splits, shuffle=True, random_state)`` with exact AUROCs (an int
    ``random_state`` gives the reference's folds for the same int).
    """
    z, y = _check_codes_attributes(codes, attributes)
    thresholds = {"auroc_threshold": auroc_threshold, "entanglement_threshold": entanglement_threshold}
    if variant == "nashae":
        auroc = threshold_auroc_matrix(z, y, num_thresholds=num_thresholds, min_range=min_range)
        return tad_from_auroc(auroc, y, **thresholds)
    if variant == "infodiffusion":
        scores = []
        for train, _ in _folds(len(z), n_splits, random_state):
            z_train = StandardScaler().fit_transform(z[train])
            scores.append(tad_from_auroc(exact_auroc_matrix(z_train, y[train]), y[train], **thresholds))
        out = {key: float(np.mean([s[key] for s in scores])) for key in ("tad", "tad_attributes")}
        return {**out, "tad_fold_std": float(np.std([s["tad"] for s in scores]))}
    raise ValueError(f"unknown TAD variant {variant!r}; expected one of {VARIANTS}")


# -- logistic-regression probes --------------------------------------------------------------


def auroc_from_codes(
    codes: np.ndarray,
    attributes: np.ndarray,
    random_state: RandomStateLike = 0,
    *,
    n_splits: int = 5,
    max_iter: int = 100,
    n_jobs: int | None = None,
) -> dict[str, float]:
    """Mean test AUROC of per-attribute logistic regressions on standardised codes.

    ``KFold(n_splits, shuffle=True, random_state)``; per fold and attribute a
    ``LogisticRegression(max_iter=max_iter)`` (scikit-learn defaults otherwise, as in
    InfoDiffusion) on codes standardised with the training fold's scaler; the test AUROC of
    ``predict_proba``. Returns ``{"auroc": mean over folds of the mean over attributes}``.
    ``n_jobs`` parallelises the fits with joblib (results do not depend on it).
    """
    z, y = _check_codes_attributes(codes, attributes)
    folds = list(_folds(len(z), n_splits, random_state))
    tasks = []
    for f, (train, test) in enumerate(folds):
        scaler = StandardScaler().fit(z[train])
        x_train, x_test = scaler.transform(z[train]), scaler.transform(z[test])
        for a in range(y.shape[1]):
            tasks.append((f, x_train, y[train, a], x_test, y[test, a]))
    results = Parallel(n_jobs=n_jobs)(delayed(_probe_auroc)(*task[1:], max_iter) for task in tasks)
    per_fold = [[r for (f, *_), r in zip(tasks, results) if f == k and r is not None] for k in range(len(folds))]
    fold_means = [np.mean(scores) for scores in per_fold if scores]
    if not fold_means:
        raise ValueError("auroc: every attribute is constant in some fold; nothing to score")
    return {"auroc": float(np.mean(fold_means)), "auroc_fold_std": float(np.std(fold_means))}


def latent_accuracy_from_codes(
    codes: np.ndarray,
    labels: np.ndarray,
    random_state: RandomStateLike = 0,
    *,
    n_splits: int = 5,
    max_iter: int = 100,
) -> dict[str, float]:
    """Mean test accuracy of a logistic regression predicting class labels from codes.

    InfoDiffusion's latent classification: ``KFold(n_splits, shuffle=True, random_state)``,
    codes standardised with the training fold's scaler, ``LogisticRegression(max_iter)``
    (scikit-learn defaults otherwise), accuracy on the test fold, mean over folds.
    """
    z = _check_codes(codes)
    labels = np.asarray(labels)
    if labels.shape != (len(z),) or labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers of shape ({len(z)},), got {labels.dtype} {labels.shape}")
    if len(np.unique(labels)) < 2:
        raise ValueError("latent_accuracy needs at least two classes among the labels")
    accuracies = []
    for train, test in _folds(len(z), n_splits, random_state):
        scaler = StandardScaler().fit(z[train])
        model = _fit_logistic(scaler.transform(z[train]), labels[train], max_iter)
        accuracies.append(np.mean(model.predict(scaler.transform(z[test])) == labels[test]))
    return {"latent_accuracy": float(np.mean(accuracies)), "latent_accuracy_fold_std": float(np.std(accuracies))}


def _probe_auroc(x_train, y_train, x_test, y_test, max_iter: int) -> float | None:
    if len(np.unique(y_train)) < 2 or len(np.unique(y_test)) < 2:
        return None
    model = _fit_logistic(x_train, y_train, max_iter)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def _fit_logistic(x: np.ndarray, y: np.ndarray, max_iter: int) -> LogisticRegression:
    """scikit-learn's default logistic regression; a convergence warning is not an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(max_iter=max_iter).fit(x, y)


def _folds(n: int, n_splits: int, random_state: RandomStateLike):
    """``KFold(n_splits, shuffle=True)`` splits; an int seed is passed through unchanged."""
    if n < n_splits:
        raise ValueError(f"{n} rows cannot be split into {n_splits} folds")
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        rs: int | np.random.RandomState = int(random_state)
    else:
        rs = as_random_state(random_state)
    return KFold(n_splits=n_splits, shuffle=True, random_state=rs).split(np.arange(n))


# -- dataset wrappers (registered) ------------------------------------------------------------


def tad(
    dataset: AttributeDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    variant: str = "nashae",
    protocol: str = "random",
    num_samples: int | None = None,
    auroc_threshold: float = 0.75,
    entanglement_threshold: float = 0.2,
    encode_batch_size: int = DEFAULT_ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """TAD of ``encode`` on ``num_samples`` items of an attribute dataset (rows and folds: ``protocol``).

    ``num_samples`` defaults to the variant's reference size (1,000 for NashAE, 10,000 for
    InfoDiffusion). The items are drawn first, then the folds (InfoDiffusion variant).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown TAD variant {variant!r}; expected one of {VARIANTS}")
    if protocol == "infodiffusion" and variant != "infodiffusion":
        raise ValueError("tad: protocol 'infodiffusion' scores InfoDiffusion's TAD; set variant = 'infodiffusion'")
    n = DEFAULT_NUM_SAMPLES[variant] if num_samples is None else num_samples
    indices, codes, folds = _rows_and_codes(dataset, encode, random_state, protocol, n, encode_batch_size)
    return tad_from_codes(
        codes,
        dataset.attributes(indices),
        folds,
        variant=variant,
        auroc_threshold=auroc_threshold,
        entanglement_threshold=entanglement_threshold,
    )


def auroc(
    dataset: AttributeDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    protocol: str = "random",
    num_samples: int = 10000,
    n_splits: int = 5,
    max_iter: int = 100,
    n_jobs: int | None = -1,
    encode_batch_size: int = DEFAULT_ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """AUROC probe of ``encode`` on ``num_samples`` items of an attribute dataset (rows and folds: ``protocol``)."""
    indices, codes, folds = _rows_and_codes(dataset, encode, random_state, protocol, num_samples, encode_batch_size)
    return auroc_from_codes(codes, dataset.attributes(indices), folds, n_splits=n_splits, max_iter=max_iter,
                            n_jobs=n_jobs)


def latent_accuracy(
    dataset: LabelledDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    protocol: str = "random",
    num_samples: int = 10000,
    n_splits: int = 5,
    max_iter: int = 100,
    encode_batch_size: int = DEFAULT_ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """Latent classification accuracy of ``encode`` on ``num_samples`` labelled items (rows and folds: ``protocol``)."""
    indices, codes, folds = _rows_and_codes(dataset, encode, random_state, protocol, num_samples, encode_batch_size)
    return latent_accuracy_from_codes(codes, dataset.labels(indices), folds, n_splits=n_splits, max_iter=max_iter)


def _rows_and_codes(dataset: ImageDataset, encode: EncodeFn, random_state: RandomStateLike, protocol: str,
                    num_samples: int, batch_size: int):
    """(item indices, their codes, the random state of the folds) under ``protocol``."""
    if protocol == "random":
        rs = as_random_state(random_state)
        indices, codes = _draw_and_encode(dataset, encode, rs, num_samples, batch_size)
        return indices, codes, rs
    if protocol == "infodiffusion":  # eval_disentanglement.py: the first items, KFold(random_state=0)
        indices = np.arange(min(num_samples, len(dataset)))
        return indices, _encode_rows(dataset, encode, indices, batch_size), 0
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


def _draw_and_encode(
    dataset: ImageDataset, encode: EncodeFn, rs: np.random.RandomState, num_samples: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` distinct random item indices (all items if fewer) and their codes."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    n = min(num_samples, len(dataset))
    indices = rs.choice(len(dataset), size=n, replace=False)
    return indices, _encode_rows(dataset, encode, indices, batch_size)


def _encode_rows(dataset: ImageDataset, encode: EncodeFn, indices: np.ndarray, batch_size: int) -> np.ndarray:
    n = len(indices)
    if n < 2:
        raise ValueError(f"num_samples must be >= 2, got {n}")
    parts = []
    for start in range(0, n, batch_size):
        chunk = indices[start : start + batch_size]
        codes = np.asarray(encode(dataset.images(chunk)))
        if codes.ndim != 2 or codes.shape[0] != len(chunk):
            raise ValueError(f"encode must return codes of shape ({len(chunk)}, D), got {codes.shape}")
        parts.append(codes)
    return np.concatenate(parts).astype(np.float64, copy=False)


# -- input checks -------------------------------------------------------------------------------


def _check_codes(codes: np.ndarray) -> np.ndarray:
    z = np.asarray(codes, dtype=np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"codes must have shape (N, D) with N >= 2, got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError(f"codes contain {int((~np.isfinite(z)).sum())} non-finite values")
    return z


def _check_codes_attributes(codes: np.ndarray, attributes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = _check_codes(codes)
    y = np.asarray(attributes)
    if y.ndim != 2 or len(y) != len(z):
        raise ValueError(f"attributes must have shape ({len(z)}, A) to match the codes, got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"attributes must be binary 0/1, found values {bad.tolist()}")
    return z, y.astype(np.float64)
