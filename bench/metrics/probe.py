"""DRL's downstream protocol (Mittal et al., App. E–F): how well a frozen code predicts the class, per t.

For an encoder whose code depends on the diffusion time (``time_conditioned``: E(x_0, t)),
the code is scored at every t of ``t_values`` ({0, 0.1, …, 1}, App. F), one row per t, and
the best t is reported; any other encoder is scored once (AE, VAE, SimCLR: a flat line in
the report's accuracy-against-t plot, the paper's Figures 4–5).

Two probes on ``num_train`` labelled training images, tested on ``num_test`` others (both
drawn without replacement from the dataset with the evaluation seed):

* ``probe_mlp``: a one-hidden-layer MLP (App. F: "a single layered non-linear MLP network
  for 50 epochs"; scikit-learn's ``MLPClassifier(hidden_layer_sizes=(hidden,),
  max_iter=epochs)``, Adam, ReLU) on standardised codes (scaler fitted on the train rows);
* ``probe_svc<k>``: scikit-learn's ``SVC()`` with default hyperparameters on the standardised
  codes of the first k of the train rows, for each k in ``few_shot`` (App. E: 100 and 1,000
  labels). Standardised (with the scaler of all train rows, which needs no labels): on raw
  codes of small variance — SimCLR's features vary by ~1e-5 per dimension — the default
  RBF SVC stays at chance (measured on Fashion-MNIST: 0.16 raw, 0.72 standardised).

Output keys: ``probe_mlp``, ``probe_svc100``, … and, for a time-conditioned code, the same
with ``_t0.0`` … ``_t1.0`` appended per t plus ``probe_mlp_best_t``; the unsuffixed keys then
hold the best value over t (each probe's own best).
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
                     seed: int = 0) -> dict[str, float]:
    """Test accuracies of the MLP probe and of the few-shot SVCs (see the module docstring)."""
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
    out = {"probe_mlp": float(np.mean(mlp.predict(scaler.transform(test)) == y_test))}
    for k in few_shot:
        k = min(int(k), len(train))
        if len(np.unique(y_train[:k])) < 2:
            out[f"probe_svc{k}"] = float("nan")
            continue
        svc = SVC().fit(scaler.transform(train[:k]), y_train[:k])
        out[f"probe_svc{k}"] = float(np.mean(svc.predict(scaler.transform(test)) == y_test))
    return out


def latent_probe(
    dataset: LabelledDataset,
    encode: Callable,
    random_state,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    hidden: int = 256,
    epochs: int = 50,
    few_shot: list = [100, 1000],  # noqa: B006 - read only; a list so that bench.toml's arrays type-check
    t_values: list = T_GRID,  # noqa: B006
    encode_batch_size: int = 256,
) -> dict[str, float]:
    """The downstream probes of ``encode``'s codes, per t for a time-conditioned encoder (module docstring)."""
    rs = as_random_state(random_state)
    n = len(dataset)
    if num_train + num_test > n:
        num_train = max(2, n * num_train // (num_train + num_test))
        num_test = n - num_train
    idx = rs.choice(n, size=num_train + num_test, replace=False)
    train_idx, test_idx = np.sort(idx[:num_train]), np.sort(idx[num_train:])
    y_train, y_test = np.asarray(dataset.labels(train_idx)), np.asarray(dataset.labels(test_idx))
    seed = int(rs.randint(2**31 - 1))
    timed = getattr(encode, "time_conditioned", False)
    ts = [float(t) for t in t_values] if timed else [None]
    if timed and (not ts or any(not 0.0 <= t <= 1.0 for t in ts)):
        raise ValueError(f"t_values must be times in [0, 1], got {t_values!r}")

    def codes(indices: np.ndarray, t: float | None) -> np.ndarray:
        call = (lambda x: encode(x, t=t)) if timed else encode  # a plain encode function takes no t
        return np.concatenate([np.asarray(call(dataset.images(indices[i:i + encode_batch_size])), np.float64)
                               for i in range(0, len(indices), encode_batch_size)])

    per_t = {t: probe_from_codes(codes(train_idx, t), y_train, codes(test_idx, t), y_test, hidden=hidden,
                                 epochs=epochs, few_shot=few_shot, seed=seed) for t in ts}
    if not timed:
        return per_t[None]
    out: dict[str, float] = {}
    for t, values in per_t.items():
        out.update({f"{k}_t{t:.1f}": v for k, v in values.items()})
    for key in per_t[ts[0]]:
        best = max(ts, key=lambda t: -np.inf if np.isnan(per_t[t][key]) else per_t[t][key])
        out[key] = per_t[best][key]
        if key == "probe_mlp":
            out["probe_mlp_best_t"] = best
    return out
