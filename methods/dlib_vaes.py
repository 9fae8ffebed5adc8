"""β-TCVAE, DIP-VAE-I/II and AnnealedVAE: the regularised VAEs of Locatello et al.'s study.

Each is the VAE of :mod:`methods.vae` (the study's convolutional encoder/decoder, Bernoulli
decoder, Adam 1e-4, batch 64, 300,000 steps) with the regulariser that
disentanglement_lib adds to the batch-mean reconstruction loss
(``disentanglement_lib/methods/unsupervised/vae.py``, ``BaseVAE.model_fn``: ``loss =
reconstruction_loss + regularizer(kl_loss, z_mean, z_logvar, z_sampled)``), where
``kl_loss`` is the batch mean of KL(q(z|x) ‖ N(0, I)) and ``z_sampled = μ + σ·ε``:

* **β-TCVAE** (Chen et al. 2018, eq. 4 with α = γ = 1, i.e. ELBO + (1 − β)·TC):
  ``kl_loss + (β − 1)·TC``, TC estimated on the batch by minibatch-weighted sampling
  exactly as dlib's ``total_correlation`` (the constant (D − 1)·log(B·N) left out);
* **DIP-VAE-I / II** (Kumar et al. 2018, eqs. 6 and 7): ``kl_loss + λ_od Σ_{i≠j} C_ij² +
  λ_d Σ_i (C_ii − 1)²`` with C the covariance of the mean codes over the batch (I) or of
  the aggregate posterior, E[diag σ²] + Cov[μ] (II); λ_d = ``lambda_d_factor``·λ_od (dlib's
  ``DIPVAE.regularizer``, ``regularize_diag_off_diag_dip``, ``compute_covariance_z_mean``);
* **AnnealedVAE** (Burgess et al. 2018, eq. 8): ``γ·|kl_loss − C|`` with the capacity
  C = min(c_max, c_max·step / iteration_threshold) growing linearly with the optimiser
  steps taken (dlib's ``anneal`` of ``global_step``).

``paper`` presets take the study's fixed settings (``sweep.py: get_default_models``) and one
value of the regularisation strength it sweeps — the value its authors used on dSprites
where there is one — and the profiles sweep the rest: β-TCVAE β ∈ {1, 2, 4, 6, 8, 10}
(preset 6: Chen et al.'s dSprites), DIP-VAE-I λ_od ∈ {1, 2, 5, 10, 20, 50} with
λ_d = 10·λ_od (preset 10: Kumar et al.'s dSprites), DIP-VAE-II the same λ_od with λ_d = λ_od
(preset 10), AnnealedVAE c_max ∈ {5, 10, 25, 50, 75, 100} with γ = 1000 and
iteration_threshold = 100,000 (preset 25: Burgess et al.'s dSprites).
"""

from __future__ import annotations

import math

import torch

from methods.vae import _COMMON, VAE, AutoencoderFamily

#: the study's two presets (InfoDiffusion's baselines are AE, VAE, β-VAE and InfoVAE only)
_PRESETS = {"tiny": AutoencoderFamily.presets["tiny"], "paper": {}}


def gaussian_log_density(samples: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(samples; mean, exp(log_var)) (dlib's ``gaussian_log_density``)."""
    tmp = samples - mean
    return -0.5 * (tmp * tmp * torch.exp(-log_var) + log_var + math.log(2.0 * math.pi))


def total_correlation(z: torch.Tensor, z_mean: torch.Tensor, z_logvar: torch.Tensor) -> torch.Tensor:
    """Minibatch-weighted-sampling estimate of TC on a batch (dlib's ``total_correlation``).

    With ``log q(z_j | x_i)`` per latent l as a (B_j, B_i, D) tensor:
    ``mean_j [ logsumexp_i Σ_l log q(z_jl | x_i) − Σ_l logsumexp_i log q(z_jl | x_i) ]``;
    the constant (D − 1)·log(B·N) does not change the gradient and is left out, as dlib does.
    """
    log_qz_prob = gaussian_log_density(z[:, None, :], z_mean[None, :, :], z_logvar[None, :, :])
    log_qz_product = torch.logsumexp(log_qz_prob, dim=1).sum(dim=1)
    log_qz = torch.logsumexp(log_qz_prob.sum(dim=2), dim=1)
    return (log_qz - log_qz_product).mean()


def covariance_z_mean(z_mean: torch.Tensor) -> torch.Tensor:
    """Cov[μ] over the batch as E[μμᵀ] − E[μ]E[μ]ᵀ (dlib's ``compute_covariance_z_mean``: the biased estimate)."""
    expectation_outer = (z_mean[:, :, None] * z_mean[:, None, :]).mean(dim=0)
    expectation = z_mean.mean(dim=0)
    return expectation_outer - expectation[:, None] * expectation[None, :]


def dip_regulariser(covariance: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)² (dlib's ``regularize_diag_off_diag_dip``)."""
    diagonal = torch.diagonal(covariance)
    off_diagonal = covariance - torch.diag(diagonal)
    return lambda_od * off_diagonal.pow(2).sum() + lambda_d * (diagonal - 1.0).pow(2).sum()


def annealed_capacity(c_max: float, step: int, iteration_threshold: int) -> float:
    """C = min(c_max, c_max · step / iteration_threshold) (dlib's ``anneal``)."""
    return min(c_max * 1.0, c_max * 1.0 * step / iteration_threshold)


class BetaTCVAE(VAE):
    """β-TCVAE (Chen et al. 2018): the batch-mean KL plus (β − 1) times the minibatch-weighted TC estimate."""

    defaults = {**_COMMON, "beta": 6.0}
    presets = dict(_PRESETS)

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        return (self.beta - 1.0) * total_correlation(z, mu, logvar) + self._kl(z, mu, logvar).mean()


class DIPVAEI(VAE):
    """DIP-VAE-I (Kumar et al. 2018, eq. 6): the KL plus the DIP penalty on the covariance of the mean codes."""

    defaults = {**_COMMON, "lambda_od": 10.0, "lambda_d_factor": 10.0}
    ranges = {**VAE.ranges, "lambda_od": ">= 0", "lambda_d_factor": ">= 0"}
    presets = dict(_PRESETS)

    def _covariance(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return covariance_z_mean(mu)

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        lambda_d = self.lambda_d_factor * self.lambda_od
        penalty = dip_regulariser(self._covariance(mu, logvar), self.lambda_od, lambda_d)
        return self._kl(z, mu, logvar).mean() + penalty


class DIPVAEII(DIPVAEI):
    """DIP-VAE-II (Kumar et al. 2018, eq. 7): the DIP penalty on E[diag σ²] + Cov[μ], λ_d = λ_od."""

    defaults = {**_COMMON, "lambda_od": 10.0, "lambda_d_factor": 1.0}

    def _covariance(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return torch.diag(logvar.exp().mean(dim=0)) + covariance_z_mean(mu)


class AnnealedVAE(VAE):
    """AnnealedVAE (Burgess et al. 2018, eq. 8): γ·|KL − C| with the capacity C annealed linearly to c_max."""

    defaults = {**_COMMON, "gamma": 1000.0, "c_max": 25.0, "iteration_threshold": 100_000}
    ranges = {**VAE.ranges, "gamma": ">= 0", "c_max": ">= 0", "iteration_threshold": ">= 1"}
    presets = {**_PRESETS, "tiny": {**_PRESETS["tiny"], "iteration_threshold": 100}}

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        capacity = annealed_capacity(self.c_max, getattr(self, "step_", 0), self.iteration_threshold)
        return self.gamma * (self._kl(z, mu, logvar).mean() - capacity).abs()
