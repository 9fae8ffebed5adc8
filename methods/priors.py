"""Latent priors p(z): the standard Gaussian and a fixed mixture of Gaussians.

Shared by the VAE family and (later) InfoDiffusion. Both expose ``sample(n, generator)``
and ``log_prob(z)``; the Gaussian also has a closed-form KL to a diagonal posterior.

Mixture of Gaussians: ``components`` equal-weight components with standard deviation
``component_std``; component ``k`` is centred at ``±spread`` on latent axis ``k // 2``
(sign alternating), i.e. the modes sit on the coordinate axes. The layout is fixed, not
learned, so a run's prior is a pure function of its hyperparameters.
"""

from __future__ import annotations

import math

import torch

PRIORS = ("gaussian", "mog")


class GaussianPrior:
    """N(0, I) over ``dim`` latents."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, self.dim, generator=generator).to(device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)

    @staticmethod
    def kl_from_diagonal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, exp(logvar)) || N(0, I)) per item (Kingma & Welling 2014, App. B)."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


class MixtureOfGaussiansPrior:
    """Equal-weight mixture of isotropic Gaussians with modes on the coordinate axes."""

    def __init__(self, dim: int, components: int = 10, spread: float = 2.0, component_std: float = 0.5) -> None:
        if components < 1 or components > 2 * dim:
            raise ValueError(f"mog prior: components must be in [1, {2 * dim}] for latent_dim={dim}, got {components}")
        self.dim, self.components, self.std = dim, components, component_std
        means = torch.zeros(components, dim)
        for k in range(components):
            means[k, k // 2] = spread if k % 2 == 0 else -spread
        self.means = means

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        which = torch.randint(self.components, (n,), generator=generator)
        z = self.means[which] + self.std * torch.randn(n, self.dim, generator=generator)
        return z.to(device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        means = self.means.to(z.device)
        sq = (z[:, None, :] - means[None]).pow(2).sum(-1) / self.std**2  # (B, K)
        log_comp = -0.5 * sq - self.dim * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return torch.logsumexp(log_comp, dim=1) - math.log(self.components)


def make_prior(name: str, dim: int, **kwargs) -> GaussianPrior | MixtureOfGaussiansPrior:
    if name == "gaussian":
        return GaussianPrior(dim)
    if name == "mog":
        return MixtureOfGaussiansPrior(dim, **kwargs)
    raise ValueError(f"unknown prior {name!r}; expected one of {PRIORS}")
