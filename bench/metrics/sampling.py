"""Shared sampling helpers for the ground-truth factor metrics.

disentanglement_lib draws every metric sample from one ``np.random.RandomState`` that the
evaluation seeds once (``evaluation.random_seed``, see
``disentanglement_lib/evaluation/evaluate.py``). Scores agree with it only when the draws
happen in the same order, so the helpers here keep two rules:

* randomness always flows through a ``np.random.RandomState`` (:func:`as_random_state`);
* observations are *drawn* in the reference's batch sizes and order, while *encoding*
  may use larger chunks: for an encoder that maps each image independently this changes
  nothing but speed.

Reference: ``disentanglement_lib/evaluation/metrics/utils.py``
(``generate_batch_factor_code``), which returns transposed ``(D, N)`` / ``(K, N)`` arrays;
:func:`generate_factor_code` returns row-major ``(N, D)`` / ``(N, K)`` arrays instead.
"""

from __future__ import annotations

import numbers
from typing import Callable, Union

import numpy as np

from bench.data.base import FactorDataset

#: ``encode``: images (n, C, H, W) float32 in [0, 1] -> codes (n, D)
EncodeFn = Callable[[np.ndarray], np.ndarray]
RandomStateLike = Union[int, np.integer, np.random.RandomState, np.random.Generator]

#: default number of images per ``encode`` call when sampling is done in smaller batches
DEFAULT_ENCODE_BATCH_SIZE = 1024


def as_random_state(random_state: RandomStateLike) -> np.random.RandomState:
    """Return a ``np.random.RandomState`` for an int seed, a RandomState or a Generator.

    * ``int`` -> ``np.random.RandomState(seed)``, exactly what disentanglement_lib's
      ``evaluate.py`` builds from ``evaluation.random_seed``, so draws match it.
    * ``np.random.RandomState`` -> returned as is (its state advances, as in the reference).
    * ``np.random.Generator`` -> a RandomState wrapping the *same* bit generator, so the
      legacy draws advance the Generator's stream; results are a deterministic function
      of the Generator's state (but not equal to any integer-seeded reference run).

    ``None`` and other types are rejected: a metric without a seed is not reproducible.
    """
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, np.random.Generator):
        return np.random.RandomState(random_state.bit_generator)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.RandomState(int(random_state))
    raise TypeError(
        "random_state must be an int seed, a np.random.RandomState or a np.random.Generator, "
        f"got {type(random_state).__name__}"
    )


def encode_in_chunks(encode: EncodeFn, images: np.ndarray, chunk_size: int) -> np.ndarray:
    """Encode ``images`` (n, C, H, W) with at most ``chunk_size`` images per call -> (n, D).

    The codes keep the dtype ``encode`` returns (the reference works on whatever its
    representation function returns).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    parts = []
    for start in range(0, len(images), chunk_size):
        batch = images[start : start + chunk_size]
        parts.append(_as_codes(encode(batch), len(batch)))
    return np.concatenate(parts, axis=0)


def generate_factor_code(
    dataset: FactorDataset,
    encode: EncodeFn,
    num_points: int,
    random_state: RandomStateLike,
    batch_size: int = 64,
    *,
    encode_batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_points`` random (factors, observation) pairs and encode the observations.

    The draws follow ``generate_batch_factor_code``: consecutive calls of
    ``dataset.sample(min(batch_size, remaining), random_state)`` (factors first, then the
    observations of those factors). Encoding is done in chunks of ``encode_batch_size``
    images (default: ``max(batch_size, DEFAULT_ENCODE_BATCH_SIZE)``), which for a
    per-image encoder gives the same codes as encoding each sampled batch on its own.

    Returns:
        codes: (num_points, D) float64.
        factors: (num_points, K) int64 factor classes of each row.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rs = as_random_state(random_state)
    chunk = encode_batch_size if encode_batch_size is not None else max(batch_size, DEFAULT_ENCODE_BATCH_SIZE)

    factor_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    pending_count = 0
    drawn = 0
    while drawn < num_points:
        n = min(batch_size, num_points - drawn)
        factors, observations = dataset.sample(n, rs)
        factor_parts.append(np.asarray(factors, dtype=np.int64))
        pending.append(observations)
        pending_count += n
        drawn += n
        if pending_count >= chunk or drawn == num_points:
            code_parts.append(encode_in_chunks(encode, np.concatenate(pending, axis=0), chunk))
            pending, pending_count = [], 0

    codes = np.concatenate(code_parts, axis=0).astype(np.float64, copy=False)
    return codes, np.concatenate(factor_parts, axis=0)


def draw_points(
    dataset: FactorDataset, rs: np.random.RandomState, num_points: int, batch_size: int, batches: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The draws of ``num_points`` BetaVAE / FactorVAE points in one go, or ``None`` where that would change them.

    One point draws, in this order, a factor index ``rs.randint(num_factors)`` and then ``batches``
    factor batches ``dataset.sample_factors(batch_size, rs)`` (one ``randint(size_k, size=batch_size)``
    per factor). A RandomState draws the same numbers from one ``randint`` call with an array of
    upper bounds laid out in that order, so all the points come from a few calls instead of
    ``num_points * (1 + batches * K)`` small ones; the points are then rendered and encoded in
    large batches.

    Returns ``(labels (P,), factors (P, batches, batch_size, K))``, or ``None`` when the dataset
    draws its factors itself (an overridden ``sample_factors``) or its observations consume random
    numbers (an overridden ``sample_observations_from_factors``, e.g. smallNORB's instance draw):
    then the draws interleave with the rendering and the caller must draw point by point.
    """
    kind = type(dataset)
    if (kind.sample_factors is not FactorDataset.sample_factors
            or kind.sample_observations_from_factors is not FactorDataset.sample_observations_from_factors
            or not isinstance(rs, np.random.RandomState)):
        return None
    sizes = np.asarray(dataset.factor_sizes, dtype=np.int64)
    k = len(sizes)
    per_point = np.concatenate([[k], np.tile(np.repeat(sizes, batch_size), batches)])  # bounds in draw order
    block = max(1, (1 << 20) // len(per_point))  # points per randint call: about 8 MB of draws
    parts = [rs.randint(0, np.tile(per_point, min(block, num_points - start))).reshape(-1, len(per_point))
             for start in range(0, num_points, block)]
    draws = np.concatenate(parts)
    factors = draws[:, 1:].reshape(num_points, batches, k, batch_size).transpose(0, 1, 3, 2)
    return draws[:, 0], np.ascontiguousarray(factors)


def _as_codes(codes: np.ndarray, n: int) -> np.ndarray:
    """Check an ``encode`` output for ``n`` images is an (n, D) array; return it as numpy."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"encode must return codes of shape ({n}, D), got shape {arr.shape}")
    return arr
