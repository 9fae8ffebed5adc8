"""MSE, PSNR and SSIM: exact values and an independent SSIM computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate2d

from bench.metrics.reconstruction import (
    mse_per_image,
    psnr_per_image,
    reconstruction,
    reconstruction_from_images,
    ssim_per_image,
)


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. (2004) written out per channel with a 2-D window and scipy ('valid')."""
    coords = np.arange(11) - 5.0
    g = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for a, b in zip(x, y):
        mu_a, mu_b = correlate2d(a, w, mode="valid"), correlate2d(b, w, mode="valid")
        s_aa = correlate2d(a * a, w, mode="valid") - mu_a**2
        s_bb = correlate2d(b * b, w, mode="valid") - mu_b**2
        s_ab = correlate2d(a * b, w, mode="valid") - mu_a * mu_b
        maps.append(((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)))
    return float(np.mean(maps))


def test_ssim_of_an_image_with_itself_is_one():
    x = np.random.RandomState(0).rand(3, 3, 16, 20)
    np.testing.assert_allclose(ssim_per_image(x, x), 1.0, atol=1e-12)


def test_ssim_matches_a_direct_computation():
    rs = np.random.RandomState(1)
    x = rs.rand(2, 3, 24, 19)
    y = np.clip(x + 0.1 * rs.randn(*x.shape), 0, 1)
    expected = [_reference_ssim(x[i], y[i]) for i in range(2)]
    np.testing.assert_allclose(ssim_per_image(x, y), expected, atol=1e-10)
    assert 0.0 < expected[0] < 0.99


def test_ssim_of_constant_images_follows_the_stabilising_constants():
    # mu_a = 0.2, mu_b = 0.6, no variance: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b = np.full((1, 1, 12, 12), 0.2), np.full((1, 1, 12, 12), 0.6)
    c1 = 0.01**2
    assert ssim_per_image(a, b)[0] == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1))


def test_psnr_known_values():
    x = np.zeros((2, 1, 4, 4))
    y = x.copy()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] += 0.01  # MSE 1e-4 -> 40 dB
    np.testing.assert_allclose(mse_per_image(x, y), [0.01, 1e-4])
    np.testing.assert_allclose(psnr_per_image(x, y), [20.0, 40.0])
    assert psnr_per_image(x, x)[0] == pytest.approx(100.0)  # MSE floored at 1e-10


def test_reconstruction_from_images_and_shape_errors():
    x = np.random.RandomState(2).rand(4, 1, 12, 12)
    out = reconstruction_from_images(x, x)
    assert out["mse"] == 0.0 and out["ssim"] == pytest.approx(1.0) and out["psnr"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="equal shape"):
        reconstruction_from_images(x, x[:, :, :10])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_per_image(x[:, :, :8, :8], x[:, :, :8, :8])


def test_registered_wrapper_on_a_dataset(tiny_data):
    def halve(images):
        return images * 0.5

    out = reconstruction(tiny_data, halve, 0, num_samples=8, batch_size=3)
    rs = np.random.RandomState(0)
    idx = rs.choice(len(tiny_data), size=8, replace=False)
    expected = reconstruction_from_images(tiny_data.images(idx), tiny_data.images(idx) * 0.5)
    assert out == pytest.approx(expected)
    with pytest.raises(ValueError, match="reconstruct returned shape"):
        reconstruction(tiny_data, lambda im: im[:, :, :4], 0, num_samples=2)
