"""FactorVAE (Kim & Mnih 2018): a VAE whose total correlation is estimated by a discriminator.

The VAE objective (Kim & Mnih, eq. 2; disentanglement_lib ``FactorVAE.model_fn``) is the
batch mean of ``reconstruction + KL(q(z|x) ‖ N(0, I)) + γ·(D₀(z) − D₁(z))``, where D is a
classifier of codes with two logits — "drawn from q(z)" (0) and "drawn from Π_j q(z_j)"
(1) — so D₀ − D₁ = log D/(1 − D) estimates the total correlation by the density-ratio
trick. The discriminator is dlib's ``fc_discriminator`` (Kim & Mnih, App. A): six dense
layers of 1,000 units with leaky ReLU (slope 0.2, TensorFlow's default) and a 2-way output,
trained by its own Adam (lr 1e-4, β₁ = 0.5, β₂ = 0.9, ε = 1e-8: the study's
``discriminator/AdamOptimizer``) to maximise ``½ E log softmax₀(D(z)) + ½ E log
softmax₁(D(z̃))``, z̃ being codes whose every dimension is permuted across the batch.

``discriminator_batch`` chooses where z̃ comes from:

* ``"second"`` (default; Kim & Mnih, Algorithm 2): after the VAE step, a second minibatch
  is drawn and encoded, its sampled codes are permuted dimension by dimension, and the
  discriminator takes one step on the first batch's codes (from before the VAE step) vs
  those;
* ``"same"`` (disentanglement_lib): the first batch's own codes, shuffled per dimension
  (``shuffle_codes``); both updates come from the one forward pass.

``paper`` preset: the study's γ sweep is {10, 20, 30, 40, 50, 100}; the preset takes γ = 40
(the profiles sweep the rest).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.vae import _COMMON, VAE

#: dlib's discriminator Adam (unsupervised_study_v1/model_configs/shared.gin)
DISCRIMINATOR_ADAM = {"lr": 1e-4, "betas": (0.5, 0.9), "eps": 1e-8}


class Discriminator(nn.Module):
    """dlib's ``fc_discriminator``: 6 × (dense 1,000, leaky ReLU 0.2), then dense 2 (logits)."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6) -> None:
        super().__init__()
        dims = [latent_dim] + [hidden] * layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.logits = nn.Linear(hidden, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.hidden:
            h = F.leaky_relu(layer(h), negative_slope=0.2)
        return self.logits(h)


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of ``z`` (B, D) permuted across the batch independently (Kim & Mnih, Algorithm 1)."""
    b, d = z.shape
    order = torch.stack([torch.randperm(b, generator=generator) for _ in range(d)], dim=1).to(z.device)
    return torch.gather(z, 0, order)


def discriminator_objective(logits_real: torch.Tensor, logits_permuted: torch.Tensor) -> torch.Tensor:
    """½ E log softmax₀(D(z)) + ½ E log softmax₁(D(z̃)) (dlib's ``discr_loss``; maximised)."""
    return 0.5 * F.log_softmax(logits_real, dim=1)[:, 0].mean() + 0.5 * F.log_softmax(logits_permuted, dim=1)[:, 1].mean()


class FactorVAE(VAE):
    """FactorVAE (Kim & Mnih 2018): VAE + γ·TC, TC from a discriminator trained alternately (see the module)."""

    defaults = {**_COMMON, "gamma": 40.0, "discriminator_batch": "second", "discriminator_hidden": 1000,
                "discriminator_layers": 6}
    ranges = {**VAE.ranges, "gamma": ">= 0", "discriminator_batch": ("second", "same"),
              "discriminator_hidden": ">= 1", "discriminator_layers": ">= 1"}
    presets = {"tiny": {**VAE.presets["tiny"], "discriminator_hidden": 64, "discriminator_layers": 2}, "paper": {}}

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        super()._build(input_shape)
        self.discriminator_ = Discriminator(self.latent_dim, self.discriminator_hidden, self.discriminator_layers)

    def to(self, device: str | torch.device) -> "FactorVAE":
        super().to(device)
        self.discriminator_.to(self.device_)
        return self

    # -- training ----------------------------------------------------------------------
    def _setup_extra(self, dev: torch.device) -> None:
        self.discriminator_optimiser_ = torch.optim.Adam(self.discriminator_.parameters(), **DISCRIMINATOR_ADAM,
                                                         fused=dev.type == "cuda")
        self._codes_for_discriminator: torch.Tensor | None = None

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        logits = self.discriminator_(z)
        tc = (logits[:, 0] - logits[:, 1]).mean()
        self._codes_for_discriminator = z.detach()
        self._tc = tc.detach()
        return self._kl(z, mu, logvar).mean() + self.gamma * tc

    def _after_step(self, data, rng: np.random.Generator, generator: torch.Generator, dev: torch.device) -> None:
        """One discriminator step on this step's codes vs permuted codes (of a second batch, or of this one)."""
        z = self._codes_for_discriminator
        if self.discriminator_batch == "second":
            x2, noise2 = self._draw_batch(data, rng, generator, dev)
            with torch.no_grad():
                mu2, logvar2 = self._posterior(x2)
                z2 = mu2 + (0.5 * logvar2).exp() * noise2
        else:
            z2 = z
        self.discriminator_step(z, permute_dims(z2, generator))

    def discriminator_step(self, z: torch.Tensor, z_permuted: torch.Tensor) -> torch.Tensor:
        """Adam step of the discriminator maximising :func:`discriminator_objective`; returns the objective."""
        objective = discriminator_objective(self.discriminator_(z), self.discriminator_(z_permuted))
        self.discriminator_optimiser_.zero_grad(set_to_none=True)  # also drops the VAE loss's gradient on D
        (-objective).backward()
        self.discriminator_optimiser_.step()
        self._terms = {**getattr(self, "_terms", {}), "tc": self._tc, "discriminator": objective.detach()}
        return objective.detach()

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "discriminator": {k: v.cpu() for k, v in self.discriminator_.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        super().load_state_dict(state, input_shape)
        self.discriminator_.load_state_dict(state["discriminator"])
