"""FactorVAE disentanglement score (Kim & Mnih 2018, "Disentangling by Factorising", §4).

Definition (as implemented by disentanglement_lib,
``disentanglement_lib/evaluation/metrics/factor_vae.py``):

1. Encode ``num_variance_estimate`` random observations and take the per-dimension
   sample variance ``s_d^2`` (``ddof=1``). Dimensions with ``s_d < prune_threshold``
   are "collapsed to the prior" and ignored (the unsupervised study sets the threshold
   to 0.05 in ``config/unsupervised_study_v1/metric_configs/factor_vae_metric.gin``).
2. One *vote*: pick a factor ``k`` uniformly, draw ``batch_size`` observations that share
   a random value of factor ``k`` (all other factors uniform), encode them, divide the
   per-dimension within-batch variance (``ddof=1``) by the global variance, and take the
   argmin ``d*`` over the active dimensions. The vote is the pair ``(d*, k)``.
3. The classifier is the majority-vote table: dimension ``d`` predicts the factor with
   most training votes ``argmax_k V[k, d]``. The score is its accuracy on ``num_eval``
   fresh votes; its accuracy on the training votes is also reported.

If no dimension is active the score is 0 (train and eval), as in the reference.

Agreement with the reference: with an integer seed the random draws happen in exactly the
reference's order (variance sample, then every training vote, then every evaluation vote;
within a vote the factor index first, then the factors of the batch), so the scores are
equal for an encoder that maps each image independently. Encoding is batched across
several votes for speed, which does not change the draws.

Deviations from the reference (documented, score-neutral):

* ``factorvae_active_dims`` is the number of active dimensions. The reference reports
  ``len(active_dims)`` of a boolean mask, i.e. the total number of dimensions.
* Votes are tallied at the dimension's own index; the reference tallies at the position
  within the active subset. Only the column labels differ, so both accuracies are equal.
"""

from __future__ import annotations

import numpy as np

from bench.data.base import FactorDataset
from bench.metrics.sampling import (
    DEFAULT_ENCODE_BATCH_SIZE,
    EncodeFn,
    RandomStateLike,
    as_random_state,
    draw_points,
    encode_in_chunks,
)


def factor_vae_score(
    dataset: FactorDataset,
    encode: EncodeFn,
    random_state: RandomStateLike,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    encode_batch_size: int = DEFAULT_ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """Compute the FactorVAE score of ``encode`` on ``dataset``.

    Args:
        dataset: ground-truth factor dataset to sample from.
        encode: images (n, C, H, W) in [0, 1] -> codes (n, D).
        random_state: int seed, ``np.random.RandomState`` or ``np.random.Generator``
            (see :func:`bench.metrics.sampling.as_random_state`).
        batch_size: observations per vote (reference study: 64).
        num_train: number of training votes (10000).
        num_eval: number of evaluation votes (5000).
        num_variance_estimate: observations used for the global variances (10000).
        prune_threshold: a dimension is active when its global std is >= this (0.05).
        encode_batch_size: about this many images per ``encode`` call (whole votes are
            grouped); only affects speed and memory.

    Returns:
        ``{"factorvae": eval accuracy, "factorvae_train": train accuracy,
        "factorvae_active_dims": number of active dimensions}``.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for a within-batch variance, got {batch_size}")
    if min(num_train, num_eval) < 1 or num_variance_estimate < 2:
        raise ValueError("num_train and num_eval must be >= 1 and num_variance_estimate >= 2")
    rs = as_random_state(random_state)

    global_variances = _global_variances(dataset, encode, num_variance_estimate, rs, encode_batch_size)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return {"factorvae": 0.0, "factorvae_train": 0.0, "factorvae_active_dims": 0.0}

    votes_per_call = max(1, encode_batch_size // batch_size)
    train_votes = _vote_table(dataset, encode, rs, batch_size, num_train, global_variances, active, votes_per_call)
    classifier = np.argmax(train_votes, axis=0)
    eval_votes = _vote_table(dataset, encode, rs, batch_size, num_eval, global_variances, active, votes_per_call)
    return {
        "factorvae": _majority_vote_accuracy(eval_votes, classifier),
        "factorvae_train": _majority_vote_accuracy(train_votes, classifier),
        "factorvae_active_dims": float(active.sum()),
    }


def _global_variances(
    dataset: FactorDataset,
    encode: EncodeFn,
    num_points: int,
    rs: np.random.RandomState,
    encode_batch_size: int,
) -> np.ndarray:
    """Per-dimension sample variance (ddof=1) of the codes of ``num_points`` random images.

    The observations are drawn in one ``sample`` call, like the reference's
    ``sample_observations(num_variance_estimate, random_state)``.
    """
    _, observations = dataset.sample(num_points, rs)
    codes = encode_in_chunks(encode, observations, encode_batch_size)
    return np.var(codes, axis=0, ddof=1)


def _vote_table(
    dataset: FactorDataset,
    encode: EncodeFn,
    rs: np.random.RandomState,
    batch_size: int,
    num_votes: int,
    global_variances: np.ndarray,
    active: np.ndarray,
    votes_per_call: int,
) -> np.ndarray:
    """Draw ``num_votes`` votes; return the (K, D) int64 table of (factor, dimension) counts.

    The draws are the reference's, in its order: all at once where the dataset allows it
    (:func:`~bench.metrics.sampling.draw_points`), else vote by vote; the
    ``votes_per_call * batch_size`` images of consecutive votes are rendered and encoded in one call.
    """
    num_factors = dataset.num_factors
    active_idx = np.flatnonzero(active)
    votes = np.zeros((num_factors, global_variances.shape[0]), dtype=np.int64)
    drawn = draw_points(dataset, rs, num_votes, batch_size, 1)
    done = 0
    while done < num_votes:
        n = min(votes_per_call, num_votes - done)
        if drawn is None:  # the dataset's draws interleave with its rendering: vote by vote
            fixed = np.empty(n, dtype=np.int64)
            observations = []
            for j in range(n):
                fixed[j] = rs.randint(num_factors)
                factors = dataset.sample_factors(batch_size, rs)
                factors[:, fixed[j]] = factors[0, fixed[j]]
                observations.append(dataset.sample_observations_from_factors(factors, rs))
            images = np.concatenate(observations, axis=0)
        else:  # drawn already: hold each vote's factor at its first item's value, render all n batches at once
            fixed = drawn[0][done : done + n]
            factors = drawn[1][done : done + n, 0].copy()  # (n, B, K)
            rows = np.arange(n)
            factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]
            images = dataset.sample_observations_from_factors(factors.reshape(-1, num_factors), rs)
        codes = encode_in_chunks(encode, images, n * batch_size)
        local_variances = np.var(codes.reshape(n, batch_size, -1), axis=1, ddof=1)
        ratios = local_variances[:, active_idx] / global_variances[active_idx]
        np.add.at(votes, (fixed, active_idx[np.argmin(ratios, axis=1)]), 1)
        done += n
    return votes


def _majority_vote_accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Share of the votes in ``votes`` (K, D) whose factor is ``classifier[d]``."""
    correct = votes[classifier, np.arange(votes.shape[1])].sum()
    return float(correct / votes.sum())
