"""bench.evaluate: any object with encode(images) scored with the grid's metrics, no adapter."""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.registry import UnknownNameError
from tests.conftest import TinyBars

SMALL = {"factorvae": {"batch_size": 16, "num_train": 60, "num_eval": 40, "num_variance_estimate": 16},
         "dci": {"num_train": 64, "num_test": 32}}


class ReadsTheBars:
    """The oracle: a code that is exactly (row, column) of the bar — a perfectly disentangled model."""

    def encode(self, images):
        x = np.asarray(images)[:, 0]
        rows = x.reshape(len(x), 4, 4, 16).sum(axis=(2, 3)).argmax(1)
        cols = x.reshape(len(x), 16, 4, 4).sum(axis=(1, 3)).argmax(1)
        return np.stack([rows, cols], 1).astype(np.float32)


class Noise:
    def encode(self, images):
        return np.random.default_rng(len(images)).normal(size=(len(images), 2)).astype(np.float32)


def test_a_perfect_code_scores_one_and_noise_does_not():
    rows = bench.evaluate(ReadsTheBars(), TinyBars(), SMALL, seed=0)
    ok = rows[rows["status"] == "ok"].set_index("metric")["value"]
    assert ok["factorvae"] == 1.0 and ok["dci_disentanglement"] == pytest.approx(1.0, abs=1e-6)
    assert set(rows["method"]) == {"ReadsTheBars"} and set(rows["dataset"]) == {"tiny-bars"}
    noise = bench.evaluate(Noise(), TinyBars(), SMALL, seed=0).set_index("metric")["value"]
    assert noise["factorvae"] < 0.8 and noise["dci_disentanglement"] < 0.5


def test_what_the_model_cannot_do_is_a_skipped_row_with_the_reason():
    rows = bench.evaluate(ReadsTheBars(), TinyBars(), ["fid", "reconstruction"]).set_index("metric")
    assert set(rows["status"]) == {"skipped"} and "'sample'" in rows.loc["fid", "reason"]


def test_bad_names_and_parameters_fail_before_any_work():
    class Spy(ReadsTheBars):
        calls = 0

        def encode(self, images):
            Spy.calls += 1
            return super().encode(images)

    with pytest.raises(UnknownNameError, match="factorvea"):
        bench.evaluate(Spy(), TinyBars(), ["factorvae", "factorvea"])
    with pytest.raises(ValueError, match="num_trian"):
        bench.evaluate(Spy(), TinyBars(), {"dci": {"num_trian": 10}})
    with pytest.raises(ValueError, match="udr"):
        bench.evaluate(Spy(), TinyBars(), ["udr"])
    with pytest.raises(TypeError, match="encode"):
        bench.evaluate(object(), TinyBars(), ["dci"])
    assert Spy.calls == 0
