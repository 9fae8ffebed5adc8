"""Continuous-time diffusions (Song et al. 2021, "Score-Based Generative Modeling through SDEs").

Two forward SDEs dx = f(x, t) dt + g(t) dw on t ∈ [0, 1]:

* :class:`VESDE` — variance exploding, σ(t) = σ_min (σ_max / σ_min)^t, f = 0,
  g(t) = σ(t) √(2 log(σ_max / σ_min)) (Song et al. eq. 30; DRL's choice, Mittal et al. §2,
  σ_min = 0.01, σ_max = 50). Its perturbation kernel is score_sde's N(x_0, σ²(t) I)
  (``VESDE.marginal_prob``). The variance the SDE adds from t = 0 is σ²(t) − σ²(0); that
  exact form drives the score's scale to infinity at t → 0 and makes the probability-flow ODE
  stiff near t_eps (in ``tests/test_drl_simclr.py``'s round trip with the exact score, 20 Heun steps
  gave RMSE 7.35/255 with that kernel, 0.0066/255 with score_sde's), so the kernel is score_sde's,
  whose std never falls below σ_min.
* :class:`VPSDE` — variance preserving, β(t) = β_min + t (β_max − β_min), f = −½ β(t) x,
  g = √β(t) (eq. 32; β_min = 0.1, β_max = 20), kernel N(α(t) x_0, (1 − α(t)²) I) with
  log α(t) = −¼ t² (β_max − β_min) − ½ t β_min. DRL's ablation (§3.1, eq. 11).

Objective: denoising score matching with λ(t) = std(t)² (DRL eq. 4 with λ(t) = σ²(t),
score_sde ``get_sde_loss_fn`` with ``likelihood_weighting=False``):
``½ Σ_pixels (std(t) · s_θ(x_t, t) + ε)²`` per image, x_t = mean(t) + std(t) ε.

Samplers (conditioned on whatever the score function closes over):

* :func:`pc_sample` — predictor–corrector (score_sde ``sampling.py``): reverse-diffusion
  predictor on the SDE's discretisation and one Langevin corrector step per level with
  signal-to-noise ratio ``snr`` (0.16 for CIFAR-10); the last step returns the mean (noise
  removal);
* :func:`ode_solve` — the probability-flow ODE dx/dt = f − ½ g² s_θ between any two times:
  from t = 1 to ε it samples, from ε to 1 it encodes x_0 → x_T (the deterministic map
  reconstructions and ``decode`` use). ``solver = "rk45"`` follows score_sde
  (``sampling.get_ode_sampler``, ``likelihood.py``): scipy's adaptive Dormand–Prince RK45 with
  rtol = atol = 1e-5 on the whole batch flattened into one state (so the step sizes are the
  batch's, as there); ``"heun"`` is a fixed-step 2nd-order grid of ``steps`` steps, uniform
  in t (in log σ for the VE SDE), kept as a cheaper option.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy import integrate

#: s_θ(x, t) with t a (B,) float tensor in [0, 1]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SDES = ("ve", "vp")


def _b(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1)))


class VESDE:
    """Variance exploding SDE with a geometric noise schedule σ(t) = σ_min (σ_max/σ_min)^t."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VESDE: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of x_t | x_0: x_0 and σ(t) per item (score_sde's ``VESDE.marginal_prob``)."""
        return x0, self.sigma(t)

    def drift_diffusion(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(x), self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def prior(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """x_1 ~ N(0, σ_max² I), drawn on the CPU."""
        return torch.randn(shape, generator=generator) * self.sigma_max

    def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_i, G_i) of the step t − dt → t: 0 and √(σ²(t) − σ²(t − dt)) (SMLD's chain)."""
        g2 = self.sigma(t) ** 2 - self.sigma((t - dt).clamp_min(0)) ** 2
        return torch.zeros_like(x), g2.clamp_min(0).sqrt()

    def langevin_alpha(self, t: torch.Tensor, dt: float) -> torch.Tensor:
        return torch.ones_like(t)


class VPSDE:
    """Variance preserving SDE with a linear β(t) (the continuous DDPM)."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError(f"VPSDE: need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_alpha = -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return _b(log_alpha.exp(), x0) * x0, (1 - (2 * log_alpha).exp()).clamp_min(0).sqrt()

    def drift_diffusion(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta = self.beta(t)
        return -0.5 * _b(beta, x) * x, beta.sqrt()

    def prior(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
        """DDPM's chain: β_i = β(t) dt, f_i = (√(1 − β_i) − 1) x, G_i = √β_i."""
        beta_i = (self.beta(t) * dt).clamp(max=0.999)
        return (_b((1 - beta_i).sqrt(), x) - 1) * x, beta_i.sqrt()

    def langevin_alpha(self, t: torch.Tensor, dt: float) -> torch.Tensor:
        return 1 - (self.beta(t) * dt).clamp(max=0.999)


def make_sde(name: str, *, sigma_min: float = 0.01, sigma_max: float = 50.0, beta_min: float = 0.1,
             beta_max: float = 20.0) -> VESDE | VPSDE:
    if name == "ve":
        return VESDE(sigma_min, sigma_max)
    if name == "vp":
        return VPSDE(beta_min, beta_max)
    raise ValueError(f"unknown SDE {name!r}; expected one of {SDES}")


def dsm_loss(score: ScoreFn, sde: VESDE | VPSDE, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-image ½ Σ (std · s_θ(x_t, t) + ε)², i.e. λ(t) = std(t)² (score_sde, ``reduce_mean=False``)."""
    mean, std = sde.marginal(x0, t)
    x_t = mean + _b(std, x0) * noise
    out = score(x_t, t)
    return 0.5 * (out * _b(std, x0) + noise).pow(2).flatten(1).sum(1)


@torch.no_grad()
def pc_sample(score: ScoreFn, sde: VESDE | VPSDE, x_T: torch.Tensor, steps: int, *, snr: float = 0.16,
              corrector_steps: int = 1, eps: float = 1e-5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Predictor–corrector sampling from t = 1 to ``eps`` in ``steps`` levels; returns the final mean."""
    device = x_T.device
    times = torch.linspace(1.0, eps, steps, dtype=torch.float64)
    dt = (1.0 - eps) / steps
    x, x_mean = x_T, x_T

    def noise_like(v: torch.Tensor) -> torch.Tensor:
        return torch.randn(v.shape, generator=generator).to(device)

    for time in times:
        t = torch.full((x.shape[0],), float(time), device=device)
        for _ in range(corrector_steps):  # Langevin corrector (score_sde LangevinCorrector)
            grad = score(x, t)
            z = noise_like(x)
            grad_norm = grad.flatten(1).norm(dim=-1).mean()
            noise_norm = z.flatten(1).norm(dim=-1).mean()
            step = (snr * noise_norm / grad_norm.clamp_min(1e-12)) ** 2 * 2 * _b(sde.langevin_alpha(t, dt), x)
            x_mean = x + step * grad
            x = x_mean + (2 * step).sqrt() * z
        f, g = sde.discretize(x, t, dt)  # reverse-diffusion predictor
        x_mean = x - f + _b(g ** 2, x) * score(x, t)
        x = x_mean + _b(g, x) * noise_like(x)
    return x_mean


ODE_SOLVERS = ("rk45", "heun")


@torch.no_grad()
def ode_solve(score: ScoreFn, sde: VESDE | VPSDE, x: torch.Tensor, t_from: float, t_to: float, *,
              solver: str = "rk45", steps: int = 100, rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """Integrate the probability-flow ODE dx/dt = f − ½ g² s_θ from ``t_from`` to ``t_to``.

    ``solver = "rk45"``: scipy's adaptive RK45 with ``rtol``/``atol`` (score_sde's ODE sampler
    and likelihood); ``"heun"``: ``steps`` fixed Heun steps.
    """
    if solver not in ODE_SOLVERS:
        raise ValueError(f"ode_solve: solver must be one of {ODE_SOLVERS}, got {solver!r}")

    def velocity(v: torch.Tensor, time: float) -> torch.Tensor:
        t = torch.full((v.shape[0],), time, device=v.device)
        f, g = sde.drift_diffusion(v, t)
        return f - 0.5 * _b(g ** 2, v) * score(v, t)

    if solver == "rk45":
        return _rk45(velocity, x, t_from, t_to, rtol, atol)
    if steps < 1:
        raise ValueError(f"ode_solve: steps must be >= 1, got {steps}")
    grid = torch.linspace(t_from, t_to, steps + 1, dtype=torch.float64)
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist()):
        h = b - a
        d1 = velocity(x, a)
        x_pred = x + h * d1
        d2 = velocity(x_pred, b)
        x = x + 0.5 * h * (d1 + d2)
    return x


def _rk45(velocity: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, t_from: float, t_to: float,
          rtol: float, atol: float) -> torch.Tensor:
    """score_sde's ``solve_ivp(..., method="RK45")`` on the flattened batch; the network runs on ``x``'s device."""
    if len(x) == 0:
        return x
    shape, device, dtype = x.shape, x.device, x.dtype

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(y).to(device=device, dtype=dtype).reshape(shape)
        return velocity(v, float(t)).double().cpu().numpy().reshape(-1)

    sol = integrate.solve_ivp(rhs, (t_from, t_to), x.double().cpu().numpy().reshape(-1), rtol=rtol, atol=atol,
                              method="RK45")
    if not sol.success:
        raise RuntimeError(f"ode_solve: RK45 from t={t_from} to t={t_to} failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).to(device=device, dtype=dtype).reshape(shape)
