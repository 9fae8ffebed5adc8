"""Samplers with one small contract (diffusers' schedulers), the sampling loops and the ε-loss.

Every sampler has

* ``set_timesteps(num_inference_steps)`` — choose the descending sub-sequence τ of
  {0, …, T−1} visited by the reverse chain (``self.timesteps``, a long tensor);
* ``step(eps, t, x_t, generator)`` — one reverse step from timestep ``t`` to the next
  lower one in τ (or to x_0 after the last);
* ``add_noise(x0, noise, t)`` — the forward process q(x_t | x_0) (Ho et al. 2020, eq. 4).

A *denoiser* is any callable ``(x_t, t) -> ε̂`` with ``t`` a (B,) long tensor; conditioning
on a code z, or switching networks along the chain (InfoDiffusion's two-phase sampling),
is done by the callable, never by the sampler.

* :class:`DDPMSampler` — ancestral sampling (Ho et al. 2020, Algorithm 2), on a respaced
  sub-sequence when fewer steps are asked for (Nichol & Dhariwal 2021, §4: β'_i =
  1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}); the variance is the posterior β̃ (eq. 7) or β ("fixed large").
* :class:`DDIMSampler` — DDIM (Song et al. 2021, eq. 12) with step skipping and η
  (eq. 16: σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_prev)); η = 0 is the deterministic ODE
  sampler, η = 1 is DDPM on the same sub-sequence. :meth:`DDIMSampler.inverse_step`
  runs the η = 0 update forwards in time (the ODE inversion of §4.3/§5.4 used by DiffAE to
  infer x_T): ε̂ is evaluated at the current point and the timestep being moved to.
"""

from __future__ import annotations

from typing import Callable

import torch

from bench.diffusion.schedules import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SPACINGS = ("leading", "trailing", "linspace", "ldm")


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Ho et al. 2020, eq. 4); ``t`` is a (B,) long tensor."""
    a = schedule.gather("sqrt_alphas_cumprod", t, x0.ndim).to(x0.dtype)
    s = schedule.gather("sqrt_one_minus_alphas_cumprod", t, x0.ndim).to(x0.dtype)
    return a * x0 + s * noise


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, the inverse of eq. 4 given ε̂ (Song et al. 2021, eq. 12)."""
    a = schedule.gather("sqrt_alphas_cumprod", t, x_t.ndim)
    s = schedule.gather("sqrt_one_minus_alphas_cumprod", t, x_t.ndim)
    return (x_t.float() - s * eps.float()) / a


def epsilon_loss(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    loss_type: str = "mse",
) -> torch.Tensor:
    """Per-item ε-prediction loss ‖ε − ε_θ(x_t, t)‖ averaged over dimensions (Ho et al. 2020, eq. 14).

    ``loss_type="l1"`` uses |ε − ε̂| instead (DiffAE's latent DDPM, ``LossType.l1``).
    Returns a (B,) float32 tensor; the caller averages (or weights) over the batch.
    """
    eps = denoiser(q_sample(schedule, x0, noise, t), t).float()
    diff = eps - noise.float()
    if loss_type == "mse":
        per = diff.pow(2)
    elif loss_type == "l1":
        per = diff.abs()
    else:
        raise ValueError(f"epsilon_loss: loss_type must be 'mse' or 'l1', got {loss_type!r}")
    return per.flatten(1).mean(1)


class Sampler:
    """Shared parts: the schedule, the visited timesteps, and the forward process."""

    def __init__(self, schedule: NoiseSchedule, spacing: str = "leading") -> None:
        if spacing not in SPACINGS:
            raise ValueError(f"{type(self).__name__}: spacing must be one of {SPACINGS}, got {spacing!r}")
        self.schedule = schedule
        self.spacing = spacing
        self.set_timesteps(None)

    def set_timesteps(self, num_inference_steps: int | None = None) -> None:
        """Visit ``num_inference_steps`` timesteps (all T when None), in descending order.

        ``"leading"`` spacing takes τ_i = i·⌊T/S⌋ (DDIM's and DiffAE's uniform skipping, which
        starts at (S−1)·⌊T/S⌋); ``"trailing"`` takes τ_i = round(T − i·T/S) − 1 and so always
        starts at T − 1 (Lin et al. 2024, Table 2). ``"linspace"`` is PDAE's and DisDiff's chain
        (PDAE ``get_ddim_betas_and_timestep_map``): the S + 1 levels ⌊linspace(0, T − 1, S + 1)⌋
        (duplicates merged), the lowest, t = 0, standing for the data — the reverse chain visits
        the other levels and ends at level 0 (``final``), whose ᾱ_0 < 1, and the inversion
        (:func:`ddim_invert`) starts there. Every chain of any S then starts at T − 1.
        ``"ldm"`` is latent diffusion's DDIM (``make_ddim_timesteps``, ``uniform``): τ_i =
        i·⌊T/S⌋ + 1 for i·⌊T/S⌋ < T (⌈T/⌊T/S⌋⌉ steps, S when S divides T) and ``alphas_prev[0] = ᾱ_0``,
        i.e. the chain ends at level 0 (S < T).
        """
        T = self.schedule.num_timesteps
        S = T if num_inference_steps is None else num_inference_steps
        if not isinstance(S, int) or not 1 <= S <= T:
            raise ValueError(f"{type(self).__name__}: num_inference_steps must be an int in [1, {T}], got {num_inference_steps!r}")
        self.final = -1  # the level the reverse chain ends at (-1: clean data, ᾱ = 1)
        if self.spacing == "leading":
            steps = torch.arange(S, dtype=torch.long) * (T // S)
        elif self.spacing == "trailing":
            steps = (torch.round(T - torch.arange(S, dtype=torch.float64) * (T / S)) - 1).long().flip(0)
        elif self.spacing == "linspace":
            levels = sorted({int(v) for v in torch.linspace(0, T - 1, S + 1, dtype=torch.float64).tolist()})
            self.final, steps = levels[0], torch.tensor(levels[1:], dtype=torch.long)
        elif num_inference_steps is None:  # every timestep LDM's offset chain can visit: 1 … T − 1, then level 0
            steps, self.final = torch.arange(1, T, dtype=torch.long), 0
        else:  # range(0, T, T // S) + 1, as make_ddim_timesteps: more than S steps when S does not divide T
            steps = torch.arange(0, T, T // S, dtype=torch.long) + 1
            if int(steps[-1]) >= T:
                raise ValueError(f"{type(self).__name__}: 'ldm' spacing offsets every timestep by +1, so it needs "
                                 f"num_inference_steps < T = {T} (LDM's make_ddim_timesteps), got {S}")
            self.final = 0
        self.timesteps = steps.flip(0)
        self._prev = {int(t): (int(steps[i - 1]) if i > 0 else self.final) for i, t in enumerate(steps.tolist())}

    def alpha_bar(self, t: int) -> float:
        """ᾱ at timestep index ``t``; 1 for ``t = -1`` (clean data)."""
        return 1.0 if t < 0 else float(self.schedule.alphas_cumprod[t])

    def prev_timestep(self, t: int) -> int:
        """The next timestep of the reverse chain after ``t`` (−1 = clean data)."""
        try:
            return self._prev[int(t)]
        except KeyError:
            raise ValueError(f"{type(self).__name__}: timestep {t} is not in the chain {self.timesteps.tolist()}") from None

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device)
        return q_sample(self.schedule, x0, noise, t.to(x0.device))

    @staticmethod
    def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x.device)

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} defines no reverse step")


class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2), optionally on a respaced chain."""

    def __init__(self, schedule: NoiseSchedule, variance: str = "posterior", spacing: str = "leading") -> None:
        if variance not in ("posterior", "beta"):
            raise ValueError(f"DDPMSampler: variance must be 'posterior' (β̃_t) or 'beta' (β_t), got {variance!r}")
        self.variance = variance
        super().__init__(schedule, spacing)

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_{prev} ~ N(μ̃(x_t, x̂_0), σ²): the posterior q(x_prev | x_t, x̂_0) of eq. 7 with x̂_0 from ε̂.

        μ̃ = √ᾱ_prev β'/(1−ᾱ_t) x̂_0 + √(1−β') (1−ᾱ_prev)/(1−ᾱ_t) x_t with β' = 1 − ᾱ_t/ᾱ_prev,
        which equals Algorithm 2's (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t when no step is skipped.
        No noise is added on the last step (to x_0).
        """
        t = int(t)
        prev = self.prev_timestep(t)
        ab_t, ab_prev = self.alpha_bar(t), self.alpha_bar(prev)
        beta = 1.0 - ab_t / ab_prev
        x_t32, eps32 = x_t.float(), eps.float()
        x0 = (x_t32 - (1.0 - ab_t) ** 0.5 * eps32) / ab_t**0.5
        mean = (ab_prev**0.5 * beta / (1.0 - ab_t)) * x0 + ((1.0 - beta) ** 0.5 * (1.0 - ab_prev) / (1.0 - ab_t)) * x_t32
        if prev == self.final:
            return mean
        var = beta * (1.0 - ab_prev) / (1.0 - ab_t) if self.variance == "posterior" else beta
        return mean + var**0.5 * self._noise_like(x_t32, generator)


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, eq. 12) with step skipping, η, optional x̂_0 clipping, and inversion."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, spacing: str = "leading", clip_x0: bool = False) -> None:
        if eta < 0:
            raise ValueError(f"DDIMSampler: eta must be >= 0, got {eta}")
        self.eta = float(eta)
        self.clip_x0 = clip_x0
        super().__init__(schedule, spacing)

    def _x0_eps(self, x_t: torch.Tensor, eps: torch.Tensor, ab_t: float) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = (x_t - (1.0 - ab_t) ** 0.5 * eps) / ab_t**0.5
        if self.clip_x0:  # then ε̂ is recomputed from the clipped x̂_0 (improved-diffusion's convention)
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x_t - ab_t**0.5 * x0) / (1.0 - ab_t) ** 0.5
        return x0, eps

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z (eq. 12, σ of eq. 16)."""
        t = int(t)
        prev = self.prev_timestep(t)
        ab_t, ab_prev = self.alpha_bar(t), self.alpha_bar(prev)
        x0, eps32 = self._x0_eps(x_t.float(), eps.float(), ab_t)
        sigma = self.eta * ((1.0 - ab_prev) / (1.0 - ab_t)) ** 0.5 * (1.0 - ab_t / ab_prev) ** 0.5
        out = ab_prev**0.5 * x0 + max(1.0 - ab_prev - sigma**2, 0.0) ** 0.5 * eps32
        if sigma > 0 and prev >= 0:  # noise on every step that ends at a noisy level (LDM's DDIM: level 0 too)
            out = out + sigma * self._noise_like(out, generator)
        return out

    def inverse_step(self, eps: torch.Tensor, t: int, x_cur: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step *up* the chain, to timestep ``t`` from the level below it.

        The level below ``t`` is ``prev_timestep(t)`` (clean data for the lowest timestep);
        ``eps`` must be ε̂(x_cur, t). x_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε̂ with x̂_0 from x_cur — the η = 0
        update of eq. 12 solved for the later time (Song et al. 2021, §4.3 and eq. 14).
        With ``clip_x0``, x̂_0 is clipped and ε̂ recomputed as in :meth:`step` (PDAE's
        ``ddim_encode``), except from clean data (ᾱ = 1), where x̂_0 is the point itself.
        """
        t = int(t)
        ab_cur, ab_t = self.alpha_bar(self.prev_timestep(t)), self.alpha_bar(t)
        x_cur32, eps32 = x_cur.float(), eps.float()
        if ab_cur < 1.0:
            x0, eps32 = self._x0_eps(x_cur32, eps32, ab_cur)
        else:
            x0 = x_cur32
        return ab_t**0.5 * x0 + (1.0 - ab_t) ** 0.5 * eps32


def _batch_t(t: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def sample_loop(
    denoiser: Denoiser,
    sampler: Sampler,
    x_T: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the reverse chain of ``sampler`` over ``sampler.timesteps`` from ``x_T``; returns x_0 (float32)."""
    x = x_T.float()
    for t in sampler.timesteps.tolist():
        x = sampler.step(denoiser(x, _batch_t(t, x)), t, x, generator)
    return x


def ddim_invert(denoiser: Denoiser, sampler: DDIMSampler, x0: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 → x_T over ``sampler.timesteps`` (ascending).

    The mirror of :func:`sample_loop` with an η = 0 :class:`DDIMSampler`: the same denoiser
    (with the same conditioning, e.g. the code z) must be used in both directions. ε̂ is
    evaluated at the timestep being moved to; with ``"linspace"`` spacing at the current
    level instead, the data standing at level 0 (PDAE's ``ddim_encode_loop``).
    """
    if not isinstance(sampler, DDIMSampler):
        raise TypeError(f"ddim_invert needs a DDIMSampler, got {type(sampler).__name__}")
    x = x0.float()
    for t in sampler.timesteps.flip(0).tolist():
        t_eval = sampler.prev_timestep(t) if sampler.spacing == "linspace" else t
        x = sampler.inverse_step(denoiser(x, _batch_t(t_eval, x)), t, x)
    return x


def switch_denoiser(first: Denoiser, second: Denoiser, switch_t: int) -> Denoiser:
    """``first`` for timesteps t ≥ ``switch_t`` (the early, noisiest part of the reverse chain), ``second`` below.

    InfoDiffusion's two-phase sampling (Wang et al. 2023, §4): a vanilla DDPM lays out the
    coarse image, then the z-conditioned model finishes it. Every item of a batch must be
    at the same timestep (as in :func:`sample_loop`); reading it costs one host sync per step.
    """

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return first(x, t) if int(t[0]) >= switch_t else second(x, t)

    return eps
