"""DRL's downstream protocol (Mittal et al., App. E–F): how well a frozen code predicts the class, per t.

For an encoder whose code depends on the diffusion time (``time_conditioned``: E(x_0, t)),
the code is scored at every t of ``t_values`` ({0, 0.1, …, 1}, App. F), one row per t, and
the headline is the test accuracy at the t that scores best on a held-out **validation**
split of ``num_val`` images (never the test split: the best of 11 test accuracies would be
biased upwards); any other encoder is scored once (AE, VAE, SimCLR: a flat line in the
report's accuracy-against-t plot, the paper's Figures 4–5) and needs no validation split.

Two probes on ``num_train`` labelled training images, tested on ``num_test`` others (all
splits drawn without replacement from the dataset with the evaluation seed, see
:func:`probe_splits`):

* ``probe_mlp``: a one-hidden-layer MLP (App. F: "a single layered non-linear MLP network
  for 50 epochs"; scikit-learn's ``MLPClassifier(hidden_layer_sizes=(hidden,),
  max_iter=epochs)``, Adam, ReLU) on standardised codes (scaler fitted on the train rows);
* ``probe_svc<k>``: scikit-learn's ``SVC()`` with default hyperparameters on the standardised
  codes of the first k of the train rows, for each k in ``few_shot`` (App. E: 100 and 1,000
  labels). Standardised (with the scaler of all train rows, which needs no labels): on raw
  codes of small variance — SimCLR's features vary by ~1e-5 per dimension — the default
  RBF SVC stays at chance (measured on Fashion-MNIST: 0.16 raw, 0.72 standardised).

Output keys: ``probe_mlp``, ``probe_svc100``, … and, for a time-conditioned code, the same
with ``_t0.0`` … ``_t1.0`` appended per t (test accuracies) plus ``probe_mlp_best_t``; the
unsuffixed keys then hold each probe's test accuracy at its own validation-best t.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from bench.data.base import LabelledDataset
from bench.metrics.sampling import as_random_state

T_GRID = [round(0.1 * i, 1) for i in range(11)]


class TimedEncoder:
    """What the runner hands a time-sweep metric: ``encode(x, t=None)`` and whether t matters."""

    def __init__(self, encode: Callable, time_conditioned: bool) -> None:
        self.encode, self.time_conditioned = encode, bool(time_conditioned)

    def __call__(self, x: np.ndarray, t: float | None = None) -> np.ndarray:
        if t is None or not self.time_conditioned:
            return self.encode(x)
        return self.encode(x, t=t)


def probe_from_codes(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, *,
                     hidden: int = 256, epochs: int = 50, few_shot: Sequence[int] = (100, 1000),
                     seed: int = 0, per_item: bool = False) -> dict:
    """Test accuracies of the MLP probe and of the few-shot SVCs (see the module docstring);
    with ``per_item`` each probe's 0/1 correctness per test row instead of the mean."""
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"codes must be (n, D) arrays of one width, got {train.shape} and {test.shape}")
    if len(np.unique(y_train)) < 2:
        raise ValueError("the probe needs at least two classes among the training labels")
    scaler = StandardScaler().fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=epochs, random_state=seed)
        mlp.fit(scaler.transform(train), y_train)
    score = (lambda pred: (pred == y_test).astype(np.float64)) if per_item else (lambda pred: float(np.mean(pred == y_test)))
    out = {"probe_mlp": score(mlp.predict(scaler.transform(test)))}
    for k in few_shot:
        k = min(int(k), len(train))
        if len(np.unique(y_train[:k])) < 2:
            out[f"probe_svc{k}"] = np.full(len(test), np.nan) if per_item else float("nan")
            continue
        svc = SVC().fit(scaler.transform(train[:k]), y_train[:k])
        out[f"probe_svc{k}"] = score(svc.predict(scaler.transform(test)))
    return out


def probe_splits(n: int, random_state, num_train: int, num_test: int,
                 num_val: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint sorted (train, test, validation) indices of a dataset of ``n`` images.

    Train and test are drawn first (so a static encoder's rows do not depend on ``num_val``),
    validation from the rest; when the dataset is too small, all three shrink in proportion.
    """
    rs = as_random_state(random_state)
    want = num_train + num_test + num_val
    if want > n:
        num_train = max(2, n * num_train // want)
        num_val = n * num_val // want
        num_test = n - num_train - num_val
    idx = rs.choice(n, size=num_train + num_test, replace=False)
    if num_val:
        idx = np.concatenate([idx, rs.choice(np.setdiff1d(np.arange(n), idx), size=num_val, replace=False)])
    return np.sort(idx[:num_train]), np.sort(idx[num_train:num_train + num_test]), np.sort(idx[num_train + num_test:])


def latent_probe(
    dataset: LabelledDataset,
    encode: Callable,
    random_state,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    num_val: int = 2000,
    hidden: int = 256,
    epochs: int = 50,
    few_shot: list = [100, 1000],  # noqa: B006 - read only; a list so that bench.toml's arrays type-check
    t_values: list = T_GRID,  # noqa: B006
    encode_batch_size: int = 256,
) -> dict[str, float]:
    """The downstream probes of ``encode``'s codes, per t for a time-conditioned encoder (module docstring)."""
    rs = as_random_state(random_state)
    timed = getattr(encode, "time_conditioned", False)
    ts = [float(t) for t in t_values] if timed else [None]
    if timed and (not ts or any(not 0.0 <= t <= 1.0 for t in ts)):
        raise ValueError(f"t_values must be times in [0, 1], got {t_values!r}")
    if timed and num_val < 1:
        raise ValueError(f"num_val must be >= 1 for a time-conditioned encoder (t is chosen on it), got {num_val}")
    train_idx, test_idx, val_idx = probe_splits(len(dataset), rs, num_train, num_test, num_val if timed else 0)
    y_train, y_test = np.asarray(dataset.labels(train_idx)), np.asarray(dataset.labels(test_idx))
    seed = int(rs.randint(2**31 - 1))

    def codes(indices: np.ndarray, t: float | None) -> np.ndarray:
        call = (lambda x: encode(x, t=t)) if timed else encode  # a plain encode function takes no t
        return np.concatenate([np.asarray(call(dataset.images(indices[i:i + encode_batch_size])), np.float64)
                               for i in range(0, len(indices), encode_batch_size)])

    if not timed:
        return probe_from_codes(codes(train_idx, None), y_train, codes(test_idx, None), y_test, hidden=hidden,
                                epochs=epochs, few_shot=few_shot, seed=seed)
    y_val = np.asarray(dataset.labels(val_idx))
    per_t, val_t = {}, {}
    for t in ts:
        train, test, val = codes(train_idx, t), codes(test_idx, t), codes(val_idx, t)
        # one fit per t, scored on both held-out splits (the test rows never steer the choice of t)
        both = probe_from_codes(train, y_train, np.concatenate([val, test]), np.concatenate([y_val, y_test]),
                                hidden=hidden, epochs=epochs, few_shot=few_shot, seed=seed, per_item=True)
        val_t[t] = {k: float(np.mean(v[:len(val)])) for k, v in both.items()}
        per_t[t] = {k: float(np.mean(v[len(val):])) for k, v in both.items()}
    out: dict[str, float] = {}
    for t, values in per_t.items():
        out.update({f"{k}_t{t:.1f}": v for k, v in values.items()})
    for key in per_t[ts[0]]:
        best = max(ts, key=lambda t: -np.inf if np.isnan(val_t[t][key]) else val_t[t][key])  # first of ties
        out[key] = per_t[best][key]
        if key == "probe_mlp":
            out["probe_mlp_best_t"] = best
    return out
