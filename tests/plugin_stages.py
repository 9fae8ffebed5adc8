"""Registration lines for the stage tests, loaded in worker processes too (``BENCH_PLUGINS=tests.plugin_stages``).

* ``tiny-bars``: the 16×16 factor dataset of the tests;
* ``tiny-shared``: an autoencoder that declares a shared component — an ``ae`` trained once per
  dataset — and is fine-tuned from the component's weights;
* ``tiny-pca``: a deterministic method with none of the usual training settings (no ``lr``,
  ``steps``, ``batch_size``, ``log_every``): the conformance suite must accept it;
* with ``BENCH_TEST_FIT_LOG`` set, every fit of the autoencoder family appends
  ``<class> <seed> <pid>`` to that file (to count fits across processes), and with
  ``BENCH_TEST_SLOW_FIT=<class>`` that class sleeps ``BENCH_TEST_SLOW_SECONDS`` inside fit
  (only the first time when ``BENCH_TEST_SLOW_ONCE`` names a marker file).
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

import numpy as np
import torch

from bench.registry import DATASETS, METHODS

if "tiny-bars" not in DATASETS:
    DATASETS.register("tiny-bars", "tests.conftest:TinyBars", "16x16 test bars (tests only)")
if "tiny-shared" not in METHODS:
    METHODS.register("tiny-shared", "tests.plugin_stages:TinyShared", "AE fine-tuned from a shared AE component (tests only)")
if "tiny-pca" not in METHODS:
    METHODS.register("tiny-pca", "tests.plugin_stages:TinyPCA", "PCA of the pixels: deterministic, no training loop (tests only)")


def _first_time(marker: str | None) -> bool:
    """True without a marker; with one, True for exactly one caller across processes (atomic create)."""
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _counted(fit):
    def wrapper(self, data, *, seed=0, **kwargs):
        log = os.environ.get("BENCH_TEST_FIT_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{type(self).__name__} {seed} {os.getpid()}\n")
        if os.environ.get("BENCH_TEST_SLOW_FIT") == type(self).__name__ and _first_time(os.environ.get("BENCH_TEST_SLOW_ONCE")):
            time.sleep(float(os.environ.get("BENCH_TEST_SLOW_SECONDS", "30")))
        return fit(self, data, seed=seed, **kwargs)

    wrapper.__wrapped__ = fit
    return wrapper


def _install() -> None:
    from methods.vae import AutoencoderFamily

    if not hasattr(AutoencoderFamily.fit, "__wrapped__"):
        AutoencoderFamily.fit = _counted(AutoencoderFamily.fit)


_install()

from bench.adapter import Adapter, Component, as_images  # noqa: E402
from methods.vae import AE  # noqa: E402


class TinyShared(AE):
    """An AE fine-tuned from a shared ``ae`` component: its networks start from the component's weights."""

    defaults: ClassVar[dict[str, Any]] = {**AE.defaults, "base_lr": 1e-3, "base_steps": 6}
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(AE.presets["tiny"]), "paper": {}}
    ranges = {**AE.ranges, "base_lr": "> 0", "base_steps": ">= 1"}
    components = {"base": Component("ae", params=lambda p: {"lr": p["base_lr"], "steps": p["base_steps"],
                                                             "batch_size": p["batch_size"], "log_every": p["log_every"]})}

    def fit(self, data, *, seed=0, device="cpu", progress=False, components=None):
        self._start_from = components["base"]
        try:
            return super().fit(data, seed=seed, device=device, progress=progress)
        finally:
            del self._start_from

    def _build(self, input_shape):
        super()._build(input_shape)
        base = self.__dict__.get("_start_from")
        if base is not None:  # training: start from the component (loading a checkpoint: not)
            self.encoder_.load_state_dict(base.encoder_.state_dict())
            self.decoder_.load_state_dict(base.decoder_.state_dict())


class TinyPCA(Adapter):
    """PCA of the flattened pixels (on ``fit_images`` images drawn with the seed); deterministic given its data."""

    defaults: ClassVar[dict[str, Any]] = {"latent_dim": 4, "fit_images": 64}
    ranges = {"latent_dim": ">= 1", "fit_images": ">= 2"}
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "paper": {"fit_images": 10_000}}
    capabilities = frozenset({"reconstruct", "decode"})

    def fit(self, data, *, seed=0, device="cpu", progress=False):
        self.input_shape = tuple(data.image_shape)
        n = min(self.fit_images, len(data))
        idx = np.sort(np.random.RandomState(0).choice(len(data), size=n, replace=False))  # the same for every seed
        x = data.images(idx).reshape(n, -1).astype(np.float64)
        self.mean_ = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_pca_ = vt[: self.latent_dim]
        self._fitted = True
        return self

    def encode(self, x, *, stochastic=False, seed=None):
        if stochastic:
            raise TypeError("TinyPCA encodes deterministically")
        self.check_fitted()
        x = as_images(x, self.input_shape)
        return ((x.reshape(len(x), -1) - self.mean_) @ self.components_pca_.T).astype(np.float32)

    def decode(self, z):
        self.check_fitted()
        flat = np.asarray(z, np.float64) @ self.components_pca_ + self.mean_
        return np.clip(flat, 0, 1).reshape(len(flat), *self.input_shape).astype(np.float32)

    def reconstruct(self, x):
        return self.decode(self.encode(x))

    def state_dict(self):
        return {"mean": torch.from_numpy(self.mean_), "components": torch.from_numpy(self.components_pca_)}

    def load_state_dict(self, state, input_shape):
        self.input_shape = tuple(input_shape)
        self.mean_, self.components_pca_ = state["mean"].numpy(), state["components"].numpy()
