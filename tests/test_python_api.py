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


class Generates(ReadsTheBars):
    """A plain object that also draws images and reconstructs them (no adapter, no capabilities declared)."""

    def sample(self, n, *, seed=0):
        data = TinyBars()
        return data.images(np.random.RandomState(seed).randint(0, len(data), n))

    def reconstruct(self, images):
        return np.asarray(images, np.float32).copy()


def test_sample_and_reconstruct_of_a_plain_object_give_ok_rows(tmp_path, monkeypatch):
    """FID through its sample(n, seed=...), MSE/PSNR/SSIM through its reconstruct(images): ok rows with values
    (FID's network: a randomly initialised InceptionV3 file, as no test downloads the real weights)."""
    import torch

    from bench.metrics.fid_inception import FIDInceptionV3

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = FIDInceptionV3()
    state = {**net.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    weights = tmp_path / "pt_inception.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, weights)
    rows = bench.evaluate(Generates(), TinyBars(), {
        "reconstruction": {"num_samples": 16},
        "fid": {"weights": str(weights), "num_samples": 3, "num_reference": 3, "sample_batch_size": 3, "batch_size": 3,
                "device": "cpu"}}, seed=0).set_index("metric")
    assert set(rows["status"]) == {"ok"}, rows[["status", "reason"]]
    assert {"fid", "mse", "psnr", "ssim"} <= set(rows.index)
    assert rows.loc["mse", "value"] == 0.0 and rows.loc["ssim", "value"] == pytest.approx(1.0)
    assert np.isfinite(rows.loc["fid", "value"]) and rows.loc["fid", "value"] >= 0
