"""scikit-learn's default ``GradientBoostingClassifier``, re-implemented level-wise in NumPy for DCI.

DCI's reference importance is ``GradientBoostingClassifier()`` with every default: log loss,
100 stages, learning rate 0.1, regression trees of depth 3 on the negative gradient with the
squared-error criterion (``friedman_mse`` ranks splits identically), ``min_samples_leaf=1``,
all features, no subsampling, a prior-probability start and one Newton step per leaf. Fitted
as scikit-learn does it — one tree at a time, every node sorting its samples — it costs
15-50 ms per tree on a 10,000-row table; DCI needs one tree per class and stage.

This module grows the same trees, but all the trees of a stage (one per class; they share the
stage's gradient) and all the nodes of a depth level at once, with the samples of every node
kept sorted per feature (one stable partition per level instead of a sort per node). Per tree
and node it does exactly what scikit-learn's ``BestSplitter`` and ``MSE`` criterion do:

* candidate splits between consecutive sorted values ``v[p-1] < v[p]`` with
  ``v[p] > v[p-1] + 1e-7`` (``FEATURE_THRESHOLD``), at least one sample each side;
* proxy improvement ``S_L²/n_L + S_R²/n_R``, the first best position per feature, threshold
  ``v[p-1]/2 + v[p]/2`` (``v[p-1]`` if that rounds to ``v[p]``), samples ``x <= threshold``
  go left (features in float32, as the trees store them);
* a node with impurity ≤ machine epsilon, or without a candidate split, is a leaf;
* leaf values ``mean(g)·(K−1)/K / mean(p(1−p))`` (multiclass) or ``mean(g) / mean(p(1−p))``
  (binary), 0 when the denominator is below 1e-150; start: the log prior odds (binary) or the
  symmetric multinomial logit of the class priors (clipped to [eps, 1 − eps]);
* importances: per tree the impurity decrease ``n·imp − n_L·imp_L − n_R·imp_R`` summed per
  feature and divided by n, averaged over the trees that split at least once, normalised to
  sum to 1; prediction: argmax of the raw scores (binary: class 1 when the score is ≥ 0).

What can differ: floating-point sums are accumulated in another order (differences of a few
units in the last place), and exact ties between *different features* (e.g. duplicated
codes) are broken by a random feature order drawn from ``seed`` rather than by
scikit-learn's own generator; both give each tied feature the split with equal probability.
``tests/test_metrics_gbt_exact.py`` compares importances and predictions with scikit-learn's.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import threadpool_limits

FEATURE_THRESHOLD = 1e-7
EPSILON = np.finfo(np.float64).eps
N_STAGES, LEARNING_RATE, MAX_DEPTH = 100, 0.1, 3
#: trees grown per vectorised call: about this many (tree, row) pairs, at most MAX_TREES_PER_CALL trees. Larger
#: arrays stop fitting the caches, smaller ones pay Python's overhead (a 40-class factor, 30 stages: 2,000 rows
#: 0.67 ms per tree 2 at a time, 0.56 ms 8 at a time; 10,000 rows: 2.42 ms 2 at a time, 2.53 ms 4 at a time)
ROWS_PER_CALL, MAX_TREES_PER_CALL = 20_000, 16


class _Stage:
    """The T trees of one stage: per level the split feature and threshold of every node
    (−1 for a node that does not split), and the leaf values by final node id."""

    def __init__(self, features: list[np.ndarray], thresholds: list[np.ndarray], leaf_values: np.ndarray):
        self.features, self.thresholds, self.leaf_values = features, thresholds, leaf_values

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Final node id of every sample in every tree, (T, n)."""
        t_count = self.leaf_values.shape[0]
        node = np.zeros((t_count, x.shape[0]), dtype=np.int64)
        rows = np.arange(t_count)[:, None]
        for feat, thr in zip(self.features, self.thresholds):
            f = feat[rows, node]  # (T, n)
            split = f >= 0
            value = x[np.arange(x.shape[0])[None, :], np.where(split, f, 0)]
            right = split & (value > thr[rows, node])
            node = 2 * node + right
        return node


def _softmax(raw: np.ndarray) -> np.ndarray:
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _Target:
    """The classifier's targets: its classes, one tree per class and stage (one for a binary target), its
    start, its Newton-step scale and its tie-breaking random stream (``RandomState(seed)``)."""

    def __init__(self, y_train: np.ndarray, n: int, seed: int):
        self.classes, y = np.unique(np.asarray(y_train), return_inverse=True)
        k_classes = len(self.classes)
        if k_classes < 2:
            raise ValueError(f"gradient boosting needs at least 2 classes in a factor, got {k_classes}")
        self.binary = k_classes == 2
        self.t_count = 1 if self.binary else k_classes
        self.rng = np.random.RandomState(seed)
        prior = np.bincount(y, minlength=k_classes) / n
        eps = np.finfo(np.float64).eps
        if self.binary:
            p1 = np.clip(prior[1], eps, 1 - eps)
            self.init = np.array([np.log(p1 / (1 - p1))])
            self.target = (y == 1).astype(np.float64)[None, :]  # (1, n)
            self.newton_scale = 1.0
        else:
            logp = np.log(np.clip(prior, eps, 1 - eps))
            self.init = logp - logp.mean()
            self.target = (y[None, :] == np.arange(k_classes)[:, None]).astype(np.float64)  # (K, n)
            self.newton_scale = (k_classes - 1) / k_classes

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """(t_count, n) probabilities of the raw scores ``raw`` (n, t_count)."""
        return (1.0 / (1.0 + np.exp(-raw[:, 0])))[None, :] if self.binary else _softmax(raw).T

    def visits(self, num_features: int) -> list[np.ndarray]:
        """The random order in which every node of every tree of one stage tries the features, per level
        (t_count, 2**d, F), drawn level by level."""
        return [np.argsort(self.rng.random_sample((self.t_count, 2 ** d, num_features)), axis=2)
                for d in range(MAX_DEPTH)]


def fit_gbt(x_train: np.ndarray, y_train: np.ndarray, seed: int = 0, n_stages: int = N_STAGES, threads: int = 1):
    """Fit the default gradient-boosted classifier; returns a model for :func:`predict` and the
    normalised importances (D,). ``seed`` draws the feature order that breaks exact ties.

    ``threads``: the groups of trees of a stage are grown by this many threads (each with its own
    buffers; the trees are the same for any value). It pays where a core is free for each thread:
    on a many-core machine, for a factor with many classes (:func:`bench.metrics.dci.threads_per_factor` decides)."""
    x = np.ascontiguousarray(x_train, dtype=np.float32)
    n, num_features = x.shape
    target = _Target(y_train, n, seed)
    t_count = target.t_count
    raw = np.tile(target.init, (n, 1))  # (n, T)
    order = np.ascontiguousarray(np.argsort(x, axis=0, kind="stable").T)  # (F, n) samples sorted per feature
    xt = np.ascontiguousarray(x.T)  # (F, n)
    # the trees of a stage are grown a few at a time (ROWS_PER_CALL), each group with buffers of its size
    per_call = int(np.clip(ROWS_PER_CALL // n, 1, MAX_TREES_PER_CALL))
    bounds = np.linspace(0, t_count, -(-t_count // per_call) + 1).round().astype(int)
    groups = list(zip(bounds[:-1], bounds[1:]))
    lanes = int(np.clip(threads, 1, len(groups)))
    works: list[dict[int, _Work]] = [{} for _ in range(lanes)]  # per lane: its buffers, by group size

    def grow_lane(lane: int, grad: np.ndarray, visits: list[np.ndarray]) -> list[tuple]:
        """Lane ``lane`` grows groups lane, lane + lanes, ... of this stage."""
        grown = []
        for lo, hi in groups[lane::lanes]:
            work = works[lane].get(hi - lo) or works[lane].setdefault(hi - lo, _Work(hi - lo, num_features, n))
            grown.append(_grow(grad[lo:hi], order, xt, [v[lo:hi] for v in visits], work))
        return grown

    stages, importance_sum, splitting_trees = [], np.zeros(num_features), 0
    leaves = 2 ** MAX_DEPTH
    # torch's cumsum on one thread: its row-parallel version is 20x slower when the other core is busy (as it
    # is in DCI, whose per-factor fits run in parallel); the sums are the same either way. The limit is per
    # thread (OpenMP's), so the lanes' threads set it too.
    lane_threads = (ThreadPoolExecutor(lanes - 1, thread_name_prefix="gbt-lane", initializer=_one_openmp_thread)
                    if lanes > 1 else contextlib.nullcontext())
    with lane_threads as pool, threadpool_limits(1, user_api="openmp"):
        for _ in range(n_stages):
            prob = target.probabilities(raw)  # (T, n)
            grad = target.target - prob  # negative gradient
            visits = target.visits(num_features)
            others = [pool.submit(grow_lane, lane, grad, visits) for lane in range(1, lanes)] if pool else []
            by_lane = [grow_lane(0, grad, visits)] + [f.result() for f in others]
            parts = [by_lane[g % lanes][g // lanes] for g in range(len(groups))]  # back in group order
            stage = _Stage([np.concatenate([p[0].features[d] for p in parts]) for d in range(MAX_DEPTH)],
                           [np.concatenate([p[0].thresholds[d] for p in parts]) for d in range(MAX_DEPTH)], None)
            node = np.concatenate([p[1] for p in parts])
            importances = np.concatenate([p[2] for p in parts])
            # Newton step per leaf; the leaves' counts and gradient sums are the last level's children's
            flat = node + leaves * np.arange(t_count)[:, None]
            count = np.concatenate([p[3][0] for p in parts]).reshape(t_count, leaves)
            num = np.concatenate([p[3][1] for p in parts]).reshape(t_count, leaves)
            hess = np.bincount(flat.ravel(), weights=(prob * (1 - prob)).ravel(),
                               minlength=t_count * leaves).reshape(t_count, leaves)
            with np.errstate(divide="ignore", invalid="ignore"):
                numerator = num / count
                numerator *= target.newton_scale
                denominator = hess / count
                values = np.where(np.abs(denominator) < 1e-150, 0.0, numerator / denominator)
            values = np.where(count > 0, values, 0.0)
            stage.leaf_values = values
            raw += LEARNING_RATE * values[np.arange(t_count)[:, None], node].T
            stages.append(stage)
            relevant = stage.features[0][:, 0] >= 0  # trees with more than a root (as scikit-learn counts them)
            importance_sum += importances[relevant].sum(axis=0)
            splitting_trees += int(relevant.sum())
    if splitting_trees == 0:
        importance = np.zeros(num_features)
    else:
        mean = importance_sum / splitting_trees
        importance = mean / mean.sum()
    # the training rows' final scores ride along: their predictions need no second pass over the trees
    return {"classes": target.classes, "init": target.init, "stages": stages, "binary": target.binary,
            "train_raw": raw}, importance


def _one_openmp_thread() -> None:
    """A lane thread's OpenMP limit: one thread (OpenMP's limit is per thread, so the fit's does not reach it)."""
    threadpool_limits(1, user_api="openmp")


def predict(model, x: np.ndarray) -> np.ndarray:
    """Class predictions of a model from :func:`fit_gbt`; the leaf values are added stage by stage, in
    the order the fit added them (so the training rows' scores are the fit's own, to the bit)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    raw = np.tile(model["init"], (x.shape[0], 1))
    for stage in model["stages"]:
        node = stage.apply(x)
        t = np.arange(node.shape[0])[:, None]
        raw += LEARNING_RATE * stage.leaf_values[t, node].T
    return _classes(model, raw)


def _classes(model, raw: np.ndarray) -> np.ndarray:
    """The predicted classes of raw scores (n, T)."""
    if model["binary"]:
        return model["classes"][(raw[:, 0] >= 0).astype(int)]
    return model["classes"][np.argmax(raw, axis=1)]


class _Work:
    """The (T, F, n) buffers one fit reuses at every level of every stage (a fresh 8 MB array per step
    costs as much in page faults as the arithmetic on it)."""

    def __init__(self, t_count: int, num_features: int, n: int):
        shape = (t_count, num_features, n)
        self.gathered = np.empty(shape)
        self.proxy = np.empty(shape)
        self.perm = np.empty(shape, dtype=np.int64)
        self.next_perm = np.empty(shape, dtype=np.int64)
        self.side = np.empty(shape, dtype=bool)
        self.left = np.empty(shape, dtype=bool)
        # torch views of the same memory: torch's cumsum adds along a row in the same order as NumPy's
        # (bit-identical) at a third of its cost
        self.gathered_t, self.proxy_t = torch.from_numpy(self.gathered), torch.from_numpy(self.proxy)
        # the root's split counts, the same at every stage: n_L after each position and the gain's 1/(n_L·n_R)
        self.root_left = np.arange(1, n + 1, dtype=np.float64)
        root_right = n - self.root_left
        self.root_weight = np.where(root_right > 0, 1.0 / (self.root_left * np.maximum(root_right, 1.0)), 0.0)


def _grow(grad: np.ndarray, order: np.ndarray, xt: np.ndarray, visits: list[np.ndarray], work: _Work):
    """Grow the T depth-3 trees of one stage on the targets ``grad`` (T, n).

    ``order`` (F, n): the samples sorted by each feature; ``visits``: per level the random order in
    which each node's features are tried (T, 2**d, F); ``work``: the buffers. Returns the
    stage (splits per level), the final node id of every training sample (T, n) and the
    unnormalised importances (T, F).
    """
    t_count, n = grad.shape
    num_features = xt.shape[0]
    rows = np.arange(t_count)
    importances = np.zeros((t_count, num_features))
    # per tree and feature, the samples in (node, value) order, as flat indices t·n + sample
    perm, spare = work.perm, work.next_perm
    np.add(order[None, :, :], (rows * n)[:, None, None], out=perm)
    node = np.zeros((t_count, n), dtype=np.int64)  # node id at the current level
    open_node = np.ones((t_count, 1), dtype=bool)
    sq = grad * grad
    pos = np.arange(n)
    features, thresholds = [], []
    children: tuple[np.ndarray, ...] = ()  # the level above's (count, sum, sum of squares) per child
    for depth in range(MAX_DEPTH):
        m = 2 ** depth
        if depth == 0:
            flat = np.repeat(rows, n)
            count = np.bincount(flat, minlength=t_count).reshape(t_count, 1)
            total = np.bincount(flat, weights=grad.ravel(), minlength=t_count).reshape(t_count, 1)
            total_sq = np.bincount(flat, weights=sq.ravel(), minlength=t_count).reshape(t_count, 1)
        else:  # the children's sums of the level above (the same sums, in the same order)
            count, total, total_sq = (c.reshape(t_count, m) for c in children)
        with np.errstate(divide="ignore", invalid="ignore"):
            impurity = np.where(count > 0, total_sq / count - (total / count) ** 2, 0.0)
        open_node &= (count >= 2) & (impurity > EPSILON)

        # positions are grouped by node, the same way for every feature
        ends = np.cumsum(count, axis=1)
        starts = ends - count
        before = np.cumsum(total, axis=1) - total  # sum of the targets of the earlier segments
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        # The proxy S_L²/n_L + S_R²/n_R of a split equals S²/n + (S_L − n_L·S/n)² · n / (n_L·n_R): with the
        # node's S²/n left out (the same for every split of a node), the gain is D²·c with D = S_L − n_L·mean
        # and c = 1/(n_L·n_R) (the factor n too). Five passes over (T, F, n) instead of ten; after a node's
        # last sample c = 0 (no split there), and a gain is never negative.
        if depth == 0:  # one node holding every position: its counts are the fit's, the same for every tree
            shift = (work.root_left[None, :] * mean)[:, None, :]
            weight = np.where(open_node, work.root_weight[None, :], 0.0)[:, None, :]
        else:
            # (T, n) node of each position, and as a flat index t·m + node into the (T, m) tables
            seg_flat = np.repeat(np.arange(t_count * m), count.ravel())
            seg_flat = seg_flat.reshape(t_count, n)
            n_left = pos[None, :] - starts.ravel()[seg_flat] + 1.0  # a split after this position
            n_right = count.ravel()[seg_flat] - n_left
            shift = (before.ravel()[seg_flat] + n_left * mean.ravel()[seg_flat])[:, None, :]
            weight = np.where((n_right > 0) & open_node.ravel()[seg_flat],
                              1.0 / (n_left * np.maximum(n_right, 1.0)), 0.0)[:, None, :]

        np.take(grad.ravel(), perm, out=work.gathered, mode="wrap")  # (indices are valid; "raise" would buffer)
        torch.cumsum(work.gathered_t, 2, out=work.proxy_t)
        proxy = work.proxy  # (T, F, n) S_L in (node, value) order
        proxy -= shift
        proxy *= proxy
        proxy *= weight
        # best proxy per (tree, feature, node): segmented maximum over each node's positions
        best = np.full((t_count, num_features, m), -np.inf)
        nonempty = count > 0
        t_idx, j_idx = np.nonzero(nonempty)
        seg_first = starts[t_idx, j_idx]
        flat_starts = ((t_idx * num_features)[:, None] + np.arange(num_features)[None, :]) * n + seg_first[:, None]
        order_idx = np.argsort(flat_starts.ravel(), kind="stable")
        reduced = np.maximum.reduceat(proxy.ravel(), flat_starts.ravel()[order_idx])
        maxima = np.empty_like(reduced)
        maxima[order_idx] = reduced
        best[t_idx[:, None], np.arange(num_features)[None, :], j_idx[:, None]] = maxima.reshape(-1, num_features)
        # best feature per node: features visited in a random order, the first best wins.
        # The maxima above ignore FEATURE_THRESHOLD; a winner that splits between near-equal
        # values (rare) has its feature's maximum recomputed over the valid positions only.
        visit = visits[depth]
        threshold = np.full((t_count, m), np.inf)
        feat = np.full((t_count, m), -1, dtype=np.int64)
        right = np.zeros((t_count, n), dtype=bool)  # a sample goes right: x > threshold
        c_count = np.zeros((t_count, m, 2), dtype=np.int64)
        c_count[:, :, 0] = count  # (a node that does not split keeps its samples in its left child)
        for t, j in zip(*np.nonzero(open_node & nonempty)):
            a, b = starts[t, j], ends[t, j]
            values, order, exact = best[t, :, j].copy(), visit[t, j], {}
            while True:
                f = int(order[np.argmax(values[order])])
                if values[f] == -np.inf:
                    break
                p = exact[f] if f in exact else a + int(np.argmax(proxy[t, f, a:b]))
                here = np.float64(xt[f, perm[t, f, p] - t * n])
                nxt = np.float64(xt[f, perm[t, f, p + 1] - t * n])
                if f in exact or nxt > here + FEATURE_THRESHOLD:
                    th = here / 2.0 + nxt / 2.0
                    threshold[t, j] = here if th == nxt else th
                    feat[t, j] = f
                    # here <= threshold < nxt: in feature f's order the node's samples after p go right
                    right.ravel()[perm[t, f, p + 1:b]] = True
                    c_count[t, j] = (p + 1 - a, b - p - 1)
                    break
                v = xt[f, perm[t, f, a:b] - t * n].astype(np.float64)
                masked = np.where(v[1:] > v[:-1] + FEATURE_THRESHOLD, proxy[t, f, a:b - 1], -np.inf)
                exact[f] = a + int(np.argmax(masked))
                values[f] = masked.max()
        splits = feat >= 0
        choice = np.maximum(feat, 0)
        features.append(feat)
        thresholds.append(threshold)

        # children, and the impurity decrease of each split for the importances
        child = 2 * node + right
        cflat = (child + 2 * m * rows[:, None]).ravel()
        c_sum = np.bincount(cflat, weights=grad.ravel(), minlength=t_count * 2 * m).reshape(t_count, m, 2)
        c_sq = np.bincount(cflat, weights=sq.ravel(), minlength=t_count * 2 * m).reshape(t_count, m, 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            c_imp = np.where(c_count > 0, c_sq / c_count - (c_sum / c_count) ** 2, 0.0)
        decrease = count * impurity - (c_count * c_imp).sum(axis=2)  # (T, m)
        children = (c_count, c_sum, c_sq)
        for t, j in zip(*np.nonzero(splits)):
            importances[t, choice[t, j]] += decrease[t, j] / n

        if depth + 1 < MAX_DEPTH:  # children keep the per-feature order: stable partition by side
            side = np.take(right.ravel(), perm, out=work.side, mode="wrap")  # (T, F, n)
            left = np.logical_not(side, out=work.left)
            # a node holds the same samples in every feature's order, so every feature row of a tree holds the
            # same number of left (right) samples: compressed, a tree's left samples form an (F, its n_L) block
            # with each node's left samples in order. One np.compress per tree and side over its contiguous rows
            # (two factors' fits: 3.3 s, vs 3.8 s with a boolean index per node and 4.4 s with a radix argsort)
            for t in range(t_count):
                block_left = np.compress(left[t].ravel(), perm[t].ravel()).reshape(num_features, -1)
                block_right = np.compress(side[t].ravel(), perm[t].ravel()).reshape(num_features, -1)
                col_left = col_right = 0
                for j in range(m):  # node j's children: its left samples, then its right ones
                    a, n_l, n_r = starts[t, j], c_count[t, j, 0], c_count[t, j, 1]
                    spare[t, :, a:a + n_l] = block_left[:, col_left:col_left + n_l]
                    spare[t, :, a + n_l:a + n_l + n_r] = block_right[:, col_right:col_right + n_r]
                    col_left, col_right = col_left + n_l, col_right + n_r
            perm, spare = spare, perm
        node = child
        open_node = np.repeat(splits, 2, axis=1)
    return _Stage(features, thresholds, None), node, importances, children[:2]


def fit_factor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int, threads: int = 1
) -> tuple[np.ndarray, float, float]:
    """DCI's per-factor fit: (importances (D,), train accuracy, test accuracy); ``threads`` as in :func:`fit_gbt`."""
    model, importance = fit_gbt(x_train, y_train, seed, threads=threads)
    train_acc = float(np.mean(_classes(model, model["train_raw"]) == y_train))  # = predict(model, x_train)
    test_acc = float(np.mean(predict(model, x_test) == y_test))
    return importance, train_acc, test_acc
