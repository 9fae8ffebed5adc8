"""Reconstruction quality: MSE, PSNR and SSIM between images and their reconstructions.

All three are computed per image on float images in [0, 1] (data range 1) and averaged
over images:

* **MSE**: mean squared error over all pixels and channels of an image.
* **PSNR**: ``10 log10(1 / MSE)`` dB per image. An exact reconstruction has MSE 0 and an
  infinite PSNR; the per-image MSE is floored at ``1e-10`` (PSNR <= 100 dB) so that one
  perfect image cannot turn the mean into infinity.
* **SSIM**: the structural similarity index of Wang, Bovik, Sheikh & Simoncelli (2004),
  "Image quality assessment: from error visibility to structural similarity", IEEE TIP 13(4),
  eq. (13) with the settings of §III-C and the authors' ``ssim_index.m``: an 11×11 circular
  Gaussian window with sigma 1.5 (normalised to sum 1), ``K1 = 0.01``, ``K2 = 0.03``,
  ``L = 1``, local statistics over the *valid* part of the image only (no padding; the
  local (co)variances are the window-weighted, biased ones), the SSIM map averaged over
  positions and channels (colour images: each channel separately, as the common
  RGB implementations do). Images need at least 11 pixels per side.

The registered wrapper :func:`reconstruction` draws ``num_samples`` items of a dataset
without replacement and scores the adapter's ``reconstruct``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import ImageDataset
from bench.metrics.sampling import RandomStateLike, as_random_state

#: Wang et al. (2004), §III-C
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: per-image MSE floor for PSNR (caps PSNR at 100 dB for data range 1)
MSE_FLOOR = 1e-10


def mse_per_image(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean squared error of each image pair, shape (n,) float64."""
    a, b = _pair(x, y)
    return ((a - b) ** 2).flatten(1).mean(dim=1).numpy()


def psnr_per_image(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` of each pair in dB, (n,)."""
    mse = np.maximum(mse_per_image(x, y), MSE_FLOOR)
    return 10.0 * np.log10(data_range**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The 1-D Gaussian (size,) float64 whose outer product is Wang et al.'s window; sums to 1."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim_per_image(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    data_range: float = 1.0,
    *,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> np.ndarray:
    """Mean SSIM of each image pair (Wang et al. 2004, eq. 13), shape (n,) float64.

    The local means, variances and covariance are Gaussian-weighted averages over the
    ``window`` x ``window`` neighbourhood; the separable window is applied as two 1-D
    convolutions without padding ("valid"), in float64.
    """
    a, b = _pair(x, y)
    n, c, h, w = a.shape
    if h < window or w < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {h}x{w}")
    g = gaussian_window(window, sigma)
    kernel_h = g.view(1, 1, window, 1).repeat(c, 1, 1, 1)
    kernel_w = g.view(1, 1, 1, window).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=c), kernel_w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(dim=1).numpy()


def reconstruction_from_images(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> dict[str, float]:
    """``{"mse", "psnr", "ssim"}`` averaged over the image pairs of ``x`` and ``y`` (n, C, H, W)."""
    return {
        "mse": float(np.mean(mse_per_image(x, y))),
        "psnr": float(np.mean(psnr_per_image(x, y))),
        "ssim": float(np.mean(ssim_per_image(x, y))),
    }


def reconstruction(
    dataset: ImageDataset,
    reconstruct,
    random_state: RandomStateLike,
    *,
    num_samples: int = 1000,
    batch_size: int = 256,
) -> dict[str, float]:
    """Reconstruct ``num_samples`` random items of ``dataset`` and score MSE, PSNR and SSIM.

    Args:
        dataset: any image dataset (float images in [0, 1]).
        reconstruct: images (n, C, H, W) -> reconstructions of the same shape.
        random_state: seed or random state; draws the items (without replacement; all
            items when the dataset is smaller than ``num_samples``).
        num_samples: number of items scored.
        batch_size: images per ``reconstruct`` call (speed and memory only).
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
    rs = as_random_state(random_state)
    n = min(num_samples, len(dataset))
    indices = rs.choice(len(dataset), size=n, replace=False)
    parts: dict[str, list[np.ndarray]] = {"mse": [], "psnr": [], "ssim": []}
    for start in range(0, n, batch_size):
        originals = dataset.images(indices[start : start + batch_size])
        recon = np.asarray(reconstruct(originals))
        if recon.shape != originals.shape:
            raise ValueError(f"reconstruct returned shape {recon.shape} for images of shape {originals.shape}")
        parts["mse"].append(mse_per_image(originals, recon))
        parts["psnr"].append(psnr_per_image(originals, recon))
        parts["ssim"].append(ssim_per_image(originals, recon))
    return {key: float(np.mean(np.concatenate(vals))) for key, vals in parts.items()}


def _pair(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (n, C, H, W) float64 tensors of equal shape."""
    a = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach().cpu()).to(torch.float64)
    b = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y.detach().cpu()).to(torch.float64)
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"expected two image batches of equal shape (n, C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b
