"""BetaVAE disentanglement score (Higgins et al. 2017, "beta-VAE: Learning Basic Visual
Concepts with a Constrained Variational Framework", §3 and Appendix A.4).

Definition as implemented by disentanglement_lib (``evaluation/metrics/beta_vae.py``,
``compute_beta_vae_sklearn``; study settings in
``config/unsupervised_study_v1/metric_configs/beta_vae_sklearn.gin``: ``batch_size=64``,
``num_train=10000``, ``num_eval=5000``):

1. One *training point*: pick a factor ``k`` uniformly; draw two batches of ``batch_size``
   factor vectors, copy factor ``k`` of the first batch into the second (pairs agree on
   ``k``, everything else is random), encode both batches and take the mean absolute
   difference of the paired codes, ``mean_b |z1_b - z2_b|`` (a D-vector); its label is ``k``.
2. A linear classifier (``sklearn.linear_model.LogisticRegression`` with default settings)
   is trained on ``num_train`` points; the score is its accuracy on ``num_eval`` fresh
   points (``betavae``); the training accuracy is ``betavae_train``.

The paper's classifier is a linear softmax trained by gradient descent; the reference (and
this module) use scikit-learn's L2-regularised logistic regression (today's default: lbfgs,
multinomial, C=1, 100 iterations; the reference ran with the same when executed with
scikit-learn >= 0.22).

Agreement with the reference: with an integer seed the random draws happen in exactly the
reference's order (per point: the factor index, the first batch's factors, the second
batch's factors; all training points, then all evaluation points; the lbfgs fit draws no
random numbers), so the scores are equal for an encoder that maps each image
independently. Encoding is batched across several points for speed, which does not change
the draws. If every training point has the same label (possible only for tiny
``num_train``) no classifier can be fitted; the score is then the share of that label.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from bench.data.base import FactorDataset
from bench.metrics.sampling import (
    DEFAULT_ENCODE_BATCH_SIZE,
    EncodeFn,
    RandomStateLike,
    as_random_state,
    draw_points,
    encode_in_chunks,
)


def betavae_score(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    encode_batch_size: int = DEFAULT_ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """Compute the BetaVAE score of ``encode`` on ``dataset``.

    Args:
        dataset: ground-truth factor dataset to sample from.
        encode: images (n, C, H, W) in [0, 1] -> codes (n, D).
        random_state: int seed, ``np.random.RandomState`` or ``np.random.Generator``.
        batch_size: pairs averaged into one point (reference study: 64).
        num_train: training points (10000).
        num_eval: evaluation points (5000).
        encode_batch_size: about this many images per ``encode`` call; speed only.

    Returns:
        ``{"betavae": eval accuracy, "betavae_train": train accuracy}``.
    """
    if batch_size < 1 or num_train < 1 or num_eval < 1:
        raise ValueError(f"batch_size, num_train and num_eval must be >= 1, got {batch_size}, {num_train}, {num_eval}")
    rs = as_random_state(random_state)
    points_per_call = max(1, encode_batch_size // (2 * batch_size))
    train_x, train_y = betavae_points(dataset, encode, rs, batch_size, num_train, points_per_call)
    eval_x, eval_y = betavae_points(dataset, encode, rs, batch_size, num_eval, points_per_call)
    return betavae_from_points(train_x, train_y, eval_x, eval_y)


def betavae_from_points(
    train_points: np.ndarray, train_labels: np.ndarray, eval_points: np.ndarray, eval_labels: np.ndarray
) -> dict[str, float]:
    """Fit ``LogisticRegression()`` on the training points; return both accuracies."""
    if len(np.unique(train_labels)) < 2:
        majority = train_labels[0]
        return {
            "betavae": float(np.mean(eval_labels == majority)),
            "betavae_train": 1.0,
        }
    model = LogisticRegression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the reference uses the unconverged fit too
        model.fit(train_points, train_labels)
    return {
        "betavae": float(np.mean(model.predict(eval_points) == eval_labels)),
        "betavae_train": float(np.mean(model.predict(train_points) == train_labels)),
    }


def betavae_points(
    dataset: FactorDataset,
    encode: EncodeFn,
    rs: np.random.RandomState,
    batch_size: int,
    num_points: int,
    points_per_call: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_points`` points (step 1); returns features (num_points, D) and labels (num_points,).

    The draws are the reference's, in its order: all at once where the dataset allows it
    (:func:`~bench.metrics.sampling.draw_points`), else point by point; the ``2 * batch_size``
    images of ``points_per_call`` consecutive points are rendered and encoded in one call.
    """
    drawn = draw_points(dataset, rs, num_points, batch_size, 2)
    features: list[np.ndarray] = []
    labels = np.empty(num_points, dtype=np.int64) if drawn is None else drawn[0]
    done = 0
    while done < num_points:
        n = min(points_per_call, num_points - done)
        if drawn is None:  # the dataset's draws interleave with its rendering: point by point
            first, second = [], []
            for j in range(n):
                labels[done + j] = rs.randint(dataset.num_factors)
                factors1 = dataset.sample_factors(batch_size, rs)
                factors2 = dataset.sample_factors(batch_size, rs)
                factors2[:, labels[done + j]] = factors1[:, labels[done + j]]
                first.append(dataset.sample_observations_from_factors(factors1, rs))
                second.append(dataset.sample_observations_from_factors(factors2, rs))
            images = np.concatenate(first + second, axis=0)
        else:  # drawn already: copy each point's factor into its second batch, render all 2n batches at once
            factors = drawn[1][done : done + n].copy()  # (n, 2, B, K)
            rows = np.arange(n)
            factors[rows, 1, :, labels[done : done + n]] = factors[rows, 0, :, labels[done : done + n]]
            both = factors.transpose(1, 0, 2, 3).reshape(-1, factors.shape[-1])  # first batches, then second
            images = dataset.sample_observations_from_factors(both, rs)
        codes = encode_in_chunks(encode, images, len(images))  # in the encoder's dtype, as the reference
        z1 = codes[: n * batch_size].reshape(n, batch_size, -1)
        z2 = codes[n * batch_size :].reshape(n, batch_size, -1)
        features.append(np.mean(np.abs(z1 - z2), axis=1).astype(np.float64))
        done += n
    return np.concatenate(features, axis=0), labels
