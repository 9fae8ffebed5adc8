"""Noise schedules β_1..β_T and the products every sampler needs, precomputed as tensors.

Timestep convention (DDPM's code and every reference since): the network sees an index
``t ∈ {0, …, T−1}``; index ``t`` is the paper's step ``t + 1``, so ``alphas_cumprod[t]``
is ᾱ_{t+1} = ∏_{s ≤ t+1} (1 − β_s) and ``alphas_cumprod_prev[t]`` is ᾱ_t (1 for t = 0).

Named schedules (each defined for T = 1000; for another T the β's are multiplied by
1000 / T, the rule of Nichol & Dhariwal's ``get_named_beta_schedule``, also used by
DiffAE, so that ᾱ_T stays close to the T = 1000 value and small-T ``tiny`` presets still
end in noise):

* ``"linear"`` — DDPM (Ho et al. 2020, §4): β linear from 1e-4 to 0.02.
* ``"linear-infodiffusion"`` — InfoDiffusion's reference code (isjakewong/InfoDiffusion,
  ``run.py``: ``--beta1 1e-5 --betaT 1e-2``): β linear from 1e-5 to 1e-2.
* ``"scaled-linear"`` — Latent Diffusion's "sqrt-linear" schedule (Rombach et al. 2022,
  ``make_beta_schedule('linear')``: ``linspace(√β_start, √β_end, T)²``) with the Stable
  Diffusion endpoints 8.5e-4 → 1.2e-2 (diffusers calls it ``scaled_linear``).
* ``"ldm-linear"`` — the same "sqrt-linear" form with Latent Diffusion's own endpoints
  1.5e-3 → 1.55e-2 (``linear_start: 0.0015, linear_end: 0.0155`` of every LDM config, and
  of DisDiff's and EncDiff's latent-diffusion configs).
* ``"cosine"`` — Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = f(t)/f(0),
  f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008, β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at
  0.999 (defined for any T; not rescaled).
* ``"const-0.008"`` — a constant β = 0.008, the schedule of DiffAE's latent DDPM
  (phizaz/diffae ``templates_latent.py``: ``latent_beta_scheduler = 'const0.008'``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: schedule name -> (kind, start, end) at T = 1000
_NAMED: dict[str, tuple[str, float, float]] = {
    "linear": ("linear", 1e-4, 0.02),
    "linear-infodiffusion": ("linear", 1e-5, 1e-2),
    "scaled-linear": ("sqrt-linear", 8.5e-4, 1.2e-2),
    "ldm-linear": ("sqrt-linear", 1.5e-3, 1.55e-2),
    "cosine": ("cosine", 0.008, 0.999),
    "const-0.008": ("const", 0.008, 0.008),
}
SCHEDULES = tuple(_NAMED)


class NoiseSchedule:
    """β_1..β_T (float64) and the derived quantities of DDPM (Ho et al. 2020, eqs. 4, 6, 7).

    Attributes (all (T,) float64 CPU tensors, index t = paper step t + 1):
    ``betas``, ``alphas`` (1 − β), ``alphas_cumprod`` (ᾱ_t), ``alphas_cumprod_prev``
    (ᾱ_{t−1}, 1 at the first step), ``sqrt_alphas_cumprod``,
    ``sqrt_one_minus_alphas_cumprod``, ``posterior_variance`` (β̃_t of eq. 7).
    """

    def __init__(self, betas: torch.Tensor | np.ndarray, name: str = "custom") -> None:
        betas = torch.as_tensor(np.asarray(betas, dtype=np.float64))
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"noise schedule {name!r}: betas must be a non-empty 1-D array, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            bad = betas[(betas <= 0) | (betas >= 1)]
            raise ValueError(
                f"noise schedule {name!r} with T={betas.numel()}: every beta must lie in (0, 1), got {bad[:3].tolist()}; "
                "use more timesteps or the 'cosine' schedule"
            )
        self.name = name
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self._device_cache: dict[tuple[str, str], torch.Tensor] = {}

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.numel())

    def gather(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """``getattr(self, name)[t]`` as float32 on ``t``'s device, shaped (B, 1, …, 1) with ``ndim`` dims.

        The float32 copy is cached per device, so a training step does no host transfer.
        """
        key = (name, str(t.device))
        table = self._device_cache.get(key)
        if table is None:
            table = getattr(self, name).to(dtype=torch.float32, device=t.device)
            self._device_cache[key] = table
        return table[t].reshape(-1, *([1] * (ndim - 1)))

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, T={self.num_timesteps})"


def make_schedule(name: str, num_timesteps: int = 1000) -> NoiseSchedule:
    """The named schedule (see the module docstring) with ``num_timesteps`` steps."""
    if name not in _NAMED:
        from bench.registry import did_you_mean

        raise ValueError(f"unknown noise schedule {name!r}{did_you_mean(name, SCHEDULES)}; available: {', '.join(SCHEDULES)}")
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"noise schedule {name!r}: num_timesteps must be a positive int, got {num_timesteps!r}")
    kind, start, end = _NAMED[name]
    T = num_timesteps
    scale = 1000.0 / T
    if kind == "linear":
        betas = np.linspace(scale * start, scale * end, T, dtype=np.float64)
    elif kind == "sqrt-linear":
        betas = scale * np.linspace(math.sqrt(start), math.sqrt(end), T, dtype=np.float64) ** 2
    elif kind == "const":
        betas = np.full(T, scale * start, dtype=np.float64)
    else:  # cosine, eq. 17 of Nichol & Dhariwal 2021 with offset s = start and clip = end
        betas = cosine_betas(T, s=start, max_beta=end)
    return NoiseSchedule(betas, name=name)


def cosine_alpha_bar(t: np.ndarray | float, s: float = 0.008) -> np.ndarray:
    """f(t)/f(0) of Nichol & Dhariwal 2021, eq. 17, for continuous t ∈ [0, 1]."""
    f = lambda u: np.cos((np.asarray(u, dtype=np.float64) + s) / (1.0 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0.0)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """β_t = min(1 − ᾱ(t/T)/ᾱ((t−1)/T), max_beta), t = 1..T (Nichol & Dhariwal 2021, §3.2)."""
    steps = np.arange(T + 1, dtype=np.float64) / T
    alpha_bar = cosine_alpha_bar(steps, s)
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)
