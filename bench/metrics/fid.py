"""Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update
Rule Converge to a Local Nash Equilibrium", NeurIPS, §3 eq. (6)), as pytorch-fid computes it.

``FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` between Gaussians fitted to the
2048-d pool3 features of the standard TF Inception network (``inception-2015-12-05``) on
real and generated images.

Three modules: the network, pytorch-fid's ``fid_inception_v3`` in plain torch
(:mod:`bench.metrics.fid_inception`); its weights, searched, loaded and converted, with
:class:`~bench.metrics.fid_weights.FIDUnavailableError` when there are none
(:mod:`bench.metrics.fid_weights`); and here the features, statistics, distance and metric.

**Statistics.** Features in float32, ``mu`` = mean, ``Sigma`` = ``np.cov(rowvar=False)`` in
float64; ``Tr(sqrtm(Sigma1 Sigma2))`` by two symmetric eigendecompositions, the same trace as
pytorch-fid's ``scipy.linalg.sqrtm`` to 2e-8 relative in a quarter of the time (see :func:`frechet_distance`).
Reference statistics are cached per dataset (name, version), split, resolution, number
of reference images and network (a hash of its weights).

Documented choices (pytorch-fid reads image files, so these make in-memory images match):

* images are clipped to [0, 1] and rounded to 8 bits (``quantize=True``), as saving the
  samples to PNG for pytorch-fid does;
* single-channel images are repeated to three channels (pytorch-fid converts files to RGB);
* the reference set is ``min(num_reference, len(dataset))`` items drawn without replacement
  with the fixed seed ``reference_seed`` (not the cell's seed, so all cells share one cache).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn as nn

from bench.data.base import ImageDataset
from bench.metrics.fid_weights import cache_dir, load_inception
from bench.metrics.sampling import RandomStateLike, as_random_state


class FeatureExtractor(Protocol):
    """Images (n, 3, H, W) float in [0, 1] -> features (n, F); an nn.Module in practice."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def network_fingerprint(model: nn.Module) -> str:
    """A short hash of a network's class and tensors, part of the statistics cache key."""
    h = hashlib.sha1(type(model).__name__.encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def prepare_images(images: np.ndarray | torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """(n, C, H, W) -> float32 (n, 3, H, W) in [0, 1]: clipped, optionally rounded to 8 bits,
    grey images repeated to three channels."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images.detach().cpu())
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"FID needs images of shape (n, 1 or 3, H, W), got {tuple(x.shape)}")
    x = x.to(torch.float32).clamp(0.0, 1.0)
    if quantize:
        x = torch.round(x * 255.0) / 255.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def extract_features(
    images: np.ndarray | torch.Tensor,
    model: FeatureExtractor,
    *,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    quantize: bool = True,
) -> np.ndarray:
    """Features (n, F) float32 of ``images`` (n, C, H, W) in [0, 1], in batches."""
    parts = []
    for start in range(0, len(images), batch_size):
        x = prepare_images(images[start : start + batch_size], quantize=quantize).to(device)
        parts.append(model(x).float().cpu().numpy())
    return np.concatenate(parts)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mu`` (F,) and ``Sigma`` (F, F) in float64, as pytorch-fid (``np.cov(rowvar=False)``)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least two feature vectors of shape (n, F), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): pytorch-fid's quantity.

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 sigma2))`` in float64. pytorch-fid
    takes ``scipy.linalg.sqrtm`` of the product (a Schur decomposition of a non-symmetric 2048² matrix:
    8.7-9.5 s on 2 cores). Only the trace is needed, and for covariances (symmetric, positive
    semi-definite) ``sigma1 sigma2`` is similar to ``A sigma2 A`` with ``A = sigma1^(1/2)``, which is
    symmetric PSD: ``Tr(sqrtm(sigma1 sigma2)) = sum_i sqrt(lambda_i(A sigma2 A))``. Two symmetric
    eigendecompositions instead: 2.1-2.4 s there (``benchmarks/fid_distance_speed.py``). Against
    pytorch-fid's recipe on the same statistics the values differ by 4e-15 relative for full-rank
    covariances and by 1e-8 to 2e-8 for rank-deficient ones (fewer samples than features, where
    ``sqrtm`` warns that the product is singular); ``tests/test_metrics_fid.py`` checks this against
    the recipe. Eigenvalues below zero (rounding) count as zero; if a decomposition fails, ``eps`` is
    added to both diagonals, as pytorch-fid does when its square root is not finite.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, sigma1, mu2, sigma2)):
        raise ValueError("FID: the feature statistics are not finite")
    diff = mu1 - mu2
    try:
        trace_sqrt = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        offset = np.eye(sigma1.shape[0]) * eps
        trace_sqrt = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr(sqrtm(sigma1 sigma2))`` of two symmetric PSD matrices: ``sum sqrt(eig(A sigma2 A))``, ``A = sigma1^(1/2)``."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2.0)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root @ sigma2 @ root
    lam = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def reference_statistics(
    dataset: ImageDataset,
    model: nn.Module,
    *,
    num_reference: int = 50000,
    reference_seed: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    quantize: bool = True,
    cache: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the dataset's features, read from or written to the statistics cache.

    The cache file name holds the dataset name, version, split (``dataset.split`` or
    ``"all"``), resolution, number of reference images, quantisation and the network's
    fingerprint, so none of them can be mixed up.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    n = min(num_reference, len(dataset))
    c, h, w = dataset.image_shape
    split = getattr(dataset, "split", None) or "all"
    key = (f"{dataset.name}-v{dataset.version}-{split}-{h}x{w}-n{n}-seed{reference_seed}"
           f"-{'q8' if quantize else 'float'}-{network_fingerprint(model)}")
    path = folder / "stats" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return stored["mu"], stored["sigma"]
    indices = np.sort(np.random.RandomState(reference_seed).choice(len(dataset), size=n, replace=False))
    features = np.concatenate([
        extract_features(dataset.images(indices[s : s + batch_size]), model, batch_size=batch_size,
                         device=device, quantize=quantize)
        for s in range(0, n, batch_size)
    ])
    mu, sigma = feature_statistics(features)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma)
    os.replace(tmp, path)
    return mu, sigma


def fid_with_extractor(
    dataset: ImageDataset,
    sample: Callable[..., np.ndarray],
    random_state: RandomStateLike,
    model: nn.Module,
    *,
    num_samples: int = 10000,
    sample_batch_size: int = 500,
    num_reference: int = 50000,
    reference_seed: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    quantize: bool = True,
    cache: str | os.PathLike | None = None,
) -> dict[str, float]:
    """FID between ``num_samples`` images from ``sample`` and the dataset, with any extractor.

    ``sample(n, seed=s)`` is called in batches of ``sample_batch_size``, each with its own
    seed drawn from ``random_state``.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    rs = as_random_state(random_state)
    model = model.to(device).eval()
    mu_ref, sigma_ref = reference_statistics(
        dataset, model, num_reference=num_reference, reference_seed=reference_seed, batch_size=batch_size,
        device=device, quantize=quantize, cache=cache,
    )
    parts, done = [], 0
    while done < num_samples:
        n = min(sample_batch_size, num_samples - done)
        images = np.asarray(sample(n, seed=int(rs.randint(2**31 - 1))))
        if images.shape[0] != n or images.shape[1:] != tuple(dataset.image_shape):
            raise ValueError(f"sample({n}) returned shape {images.shape}; expected ({n}, *{tuple(dataset.image_shape)})")
        parts.append(extract_features(images, model, batch_size=batch_size, device=device, quantize=quantize))
        done += n
    mu, sigma = feature_statistics(np.concatenate(parts))
    return {"fid": frechet_distance(mu, sigma, mu_ref, sigma_ref)}


def fid(
    dataset: ImageDataset,
    sample: Callable[..., np.ndarray],
    random_state: RandomStateLike,
    *,
    num_samples: int = 10000,
    weights: str | None = None,
    sample_batch_size: int = 500,
    num_reference: int = 50000,
    reference_seed: int = 0,
    batch_size: int = 100,
    device: str = "auto",
    quantize: bool = True,
    sampler: str = "model",
) -> dict[str, float]:
    """FID of a generative model's samples against ``dataset`` with the standard Inception.

    ``sampler`` names the sampling protocol of the images (``"model"``: the adapter's own
    setting; ``"ancestral-1000"``: 1000-step ancestral DDPM, InfoDiffusion's and DiffAE's FID
    protocol; ``"ddim-N"``). The runner applies it to the adapter (``using_sampler``) before
    ``sample`` reaches this function; here the name is only checked, before any work. A method
    that samples in one decoder pass (the autoencoder family) has no protocols: it samples the
    same way under every name.

    Raises:
        FIDUnavailableError: no Inception weights on this machine (see :mod:`bench.metrics.fid_weights`).
    """
    from bench.diffusion.protocols import parse_sampling_protocol

    parse_sampling_protocol(sampler)
    model = load_inception(weights)
    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    return fid_with_extractor(
        dataset, sample, random_state, model, num_samples=num_samples, sample_batch_size=sample_batch_size,
        num_reference=num_reference, reference_seed=reference_seed, batch_size=batch_size, device=resolved,
        quantize=quantize,
    )
