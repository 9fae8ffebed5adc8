"""Registration lines for the stage tests, loaded in worker processes too (``BENCH_PLUGINS=tests.plugin_stages``).

* ``tiny-bars``: the 16×16 factor dataset of the tests;
* ``tiny-shared``: an autoencoder that declares a shared component — an ``ae`` trained once per
  dataset — and is fine-tuned from the component's weights;
* with ``BENCH_TEST_FIT_LOG`` set, every fit of the autoencoder family appends
  ``<class> <seed> <pid>`` to that file (to count fits across processes), and with
  ``BENCH_TEST_SLOW_FIT=<class>`` that class sleeps ``BENCH_TEST_SLOW_SECONDS`` inside fit
  (only the first time when ``BENCH_TEST_SLOW_ONCE`` names a marker file).
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from bench.registry import DATASETS, METHODS

if "tiny-bars" not in DATASETS:
    DATASETS.register("tiny-bars", "tests.conftest:TinyBars", "16x16 test bars (tests only)")
if "tiny-shared" not in METHODS:
    METHODS.register("tiny-shared", "tests.plugin_stages:TinyShared", "AE fine-tuned from a shared AE component (tests only)")


def _counted(fit):
    def wrapper(self, data, *, seed=0, **kwargs):
        log = os.environ.get("BENCH_TEST_FIT_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{type(self).__name__} {seed} {os.getpid()}\n")
        once = os.environ.get("BENCH_TEST_SLOW_ONCE")  # a marker file: slow only the first time
        if os.environ.get("BENCH_TEST_SLOW_FIT") == type(self).__name__ and not (once and os.path.exists(once)):
            if once:
                open(once, "w").close()
            time.sleep(float(os.environ.get("BENCH_TEST_SLOW_SECONDS", "30")))
        return fit(self, data, seed=seed, **kwargs)

    wrapper.__wrapped__ = fit
    return wrapper


def _install() -> None:
    from methods.vae import AutoencoderFamily

    if not hasattr(AutoencoderFamily.fit, "__wrapped__"):
        AutoencoderFamily.fit = _counted(AutoencoderFamily.fit)


_install()

from bench.adapter import Component  # noqa: E402
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
