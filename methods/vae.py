"""The autoencoder family: AE, VAE, β-VAE and InfoVAE on one convolutional encoder/decoder.

Objectives (per image, averaged over the batch; reconstruction summed over pixels as in
disentanglement_lib, Bernoulli decoder by default):

* AE: ``rec(x, dec(enc(x)))``.
* VAE (Kingma & Welling 2014, eq. 10): ``rec + KL(q(z|x) || p(z))``.
* β-VAE (Higgins et al. 2017, eq. 4): ``rec + β · KL(q(z|x) || p(z))``.
* InfoVAE (Zhao et al. 2019, eq. 6 with the MMD divergence, "MMD-VAE"):
  ``rec + (1 − α) · KL(q(z|x) || p(z)) + (α + λ − 1) · MMD(q(z), p(z))``, where q(z) is the
  aggregate posterior seen through a batch of sampled codes and MMD uses the kernel of the
  authors' reference code (ShengjiaZhao/MMD-Variational-Autoencoder):
  ``k(x, y) = exp(−mean_d (x_d − y_d)² / D)`` with the biased (V-statistic) estimator.

Priors: ``"gaussian"`` (closed-form KL) or ``"mog"`` (a fixed mixture of Gaussians, see
:mod:`methods.priors`; KL by a one-sample Monte-Carlo estimate ``log q(z|x) − log p(z)``).

Presets: ``paper`` follows Locatello et al. 2019 (disentanglement_lib's unsupervised study:
conv architecture of Table 1, latent 10, Adam lr 1e-4 β1=0.9 β2=0.999 ε=1e-8, batch 64,
300,000 steps, Bernoulli decoder), with β = 4 for β-VAE (Higgins et al. 2017, dSprites) and
α = 0, λ = 1000 for InfoVAE (Zhao et al. 2019, §6). ``tiny`` shrinks widths and steps so a
fit takes seconds on a CPU (used by the tests).

``infodiffusion`` is InfoDiffusion's own baselines (Wang et al. 2023, Tables 3–4;
isjakewong/InfoDiffusion ``models.py: VAE, Encoder, Decoder``, ``run.py``, ``data.py``):
``architecture = "infodiffusion"`` (a time-free UNet → one-channel map → linear to z, with
linear heads μ and log σ² on those features; decoder Linear(z → C·H·W) → UNet; widths
``unet_*``), z = 32, ``reconstruction = "mse-mean"`` (the squared error averaged over the
pixels of images in [−1, 1]: the decoder outputs images in [−1, 1], not logits), AdamW lr
1e-4 with weight decay 1e-5, gradient clipping 1, the reference's ×2 warm-up + cosine schedule
(``lr_schedule = "infodiffusion"``), batch 32, 50 epochs of 60,000 images. Its VAE has β = 1,
its β-VAE β = 4 (the paper does not state it), its "InfoVAE" is MMD only with weight 0.1
(α = 1, λ = 0.1) on z = μ + σ·ε (the main branch), and its AE decodes N(0, I) draws
(``code_sampler = "prior"``) and codes with the features themselves. ``hflip`` flips half
of every training batch (the reference flips Fashion-MNIST, CIFAR-10 and CelebA).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.adapter import Adapter, DivergedError, as_images, resolve_device, seed_everything
from methods.lr_schedules import infodiffusion_scheduler
from methods.nets import ConvDecoder, ConvEncoder, InfoDiffusionBaselineEncoder, infodiffusion_baseline_decoder
from methods.priors import GaussianPrior, make_prior

_COMMON: dict[str, Any] = {
    "latent_dim": 10,
    "channels": [32, 32, 64, 64],
    "hidden": 256,
    "lr": 1e-4,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_eps": 1e-8,
    "batch_size": 64,
    "steps": 300_000,
    "reconstruction": "bernoulli",
    "prior": "gaussian",
    "mog_components": 10,
    "mog_spread": 2.0,
    "mog_std": 0.5,
    "log_every": 100,
}
#: options added after the default grid's models were stored, at the values that keep the earlier
#: behaviour (Adapter.added_params: left out of a model's identity while they hold them)
_ADDED: dict[str, Any] = {
    "architecture": "conv",
    # the UNet networks of architecture = "infodiffusion" (InfoDiffusion's models.py: Encoder, Decoder)
    "unet_channels": 32,
    "unet_channel_mult": [1, 2, 4, 8],
    "unet_res_blocks": 2,
    "unet_attention_resolutions": [8],
    "unet_norm_groups": 32,
    "dropout": 0.1,
    # optimisation options of InfoDiffusion's run.py
    "weight_decay": 0.0,
    "grad_clip": 0.0,
    "lr_schedule": "constant",
    "hflip": False,
}
_COMMON.update(_ADDED)
ARCHITECTURES = ("conv", "infodiffusion")
_RECONSTRUCTIONS = ("bernoulli", "gaussian", "mse-mean")
#: valid ranges (bench.params), checked with the types before anything trains
_RANGES: dict[str, Any] = {
    "latent_dim": ">= 1", "channels": "each >= 1", "hidden": ">= 1", "lr": "> 0",
    "adam_beta1": "[0, 1)", "adam_beta2": "[0, 1)", "adam_eps": "> 0", "batch_size": ">= 1", "steps": ">= 1",
    "reconstruction": _RECONSTRUCTIONS, "prior": ("gaussian", "mog"), "mog_components": ">= 1",
    "mog_spread": ">= 0", "mog_std": "> 0", "log_every": ">= 1", "beta": ">= 0", "lambda_": ">= 0", "alpha": "<= 1",
    "architecture": ARCHITECTURES, "unet_channels": ">= 1", "unet_channel_mult": "each >= 1", "unet_res_blocks": ">= 1",
    "unet_attention_resolutions": "each >= 1", "unet_norm_groups": ">= 1", "dropout": "[0, 1)", "weight_decay": ">= 0",
    "grad_clip": ">= 0", "lr_schedule": ("constant", "infodiffusion"),
}
_TINY: dict[str, Any] = {"channels": [16, 16, 32, 32], "hidden": 64, "lr": 1e-3, "steps": 200, "batch_size": 32}
#: InfoDiffusion's own baselines (isjakewong/InfoDiffusion, main 75c7b31 / dev 759f79c: models.py ``VAE`` with
#: ``Encoder``/``Decoder``, run.py, data.py): the UNet networks at Fashion-MNIST's width (encoder_channels 32,
#: 32 px, multipliers [1, 2, 4, 8], attention at level 2 = 8x8, dropout 0.1), z = 32, MSE averaged over the
#: pixels of images in [-1, 1], AdamW lr 1e-4 with weight decay 1e-5, gradient clipping 1, its warm-up +
#: cosine schedule, 50 epochs at batch 32 of 60,000 images (the README's baseline command), no flips here
#: (the reference flips Fashion-MNIST, CIFAR-10 and CelebA: the profiles turn ``hflip`` on for those)
_INFODIFFUSION: dict[str, Any] = {
    "architecture": "infodiffusion", "latent_dim": 32, "reconstruction": "mse-mean", "lr": 1e-4,
    "weight_decay": 1e-5, "grad_clip": 1.0, "lr_schedule": "infodiffusion", "batch_size": 32, "steps": 93_750,
}


def mmd_infovae(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased MMD² between samples ``x`` and ``y`` (B, D) with InfoVAE's Gaussian kernel."""
    dim = x.shape[1]

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(a[:, None, :] - b[None, :, :]).pow(2).mean(-1) / dim)

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


class AutoencoderFamily(Adapter):
    """Shared machinery: networks, training loop, encode/decode/sample, checkpoints."""

    defaults: ClassVar[dict[str, Any]] = dict(_COMMON)
    ranges = _RANGES
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(_TINY), "paper": {}, "infodiffusion": dict(_INFODIFFUSION)}
    added_params: ClassVar[dict[str, Any]] = dict(_ADDED)
    capabilities = frozenset({"sample", "decode", "reconstruct"})
    #: whether the encoder outputs (mu, logvar) rather than a point code
    stochastic: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)  # checks every range, reconstruction's choices among them
        self.prior_ = make_prior(self.prior, self.latent_dim, **self._prior_kwargs())

    def _prior_kwargs(self) -> dict[str, Any]:
        if self.prior != "mog":
            return {}
        return {"components": self.mog_components, "spread": self.mog_spread, "component_std": self.mog_std}

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        self.input_shape = tuple(input_shape)
        if self.architecture == "infodiffusion":
            unet = dict(base_channels=self.unet_channels, channel_mult=list(self.unet_channel_mult),
                        num_res_blocks=self.unet_res_blocks, attention_resolutions=list(self.unet_attention_resolutions),
                        dropout=self.dropout, norm_groups=self.unet_norm_groups)
            self.encoder_ = InfoDiffusionBaselineEncoder(in_channels=self.input_shape[0], image_size=self.input_shape[1],
                                                         latent_dim=self.latent_dim, stochastic=self.stochastic, **unet)
            self.decoder_ = infodiffusion_baseline_decoder(out_shape=self.input_shape, latent_dim=self.latent_dim, **unet)
        else:
            out = 2 * self.latent_dim if self.stochastic else self.latent_dim
            self.encoder_ = ConvEncoder(self.input_shape, out, list(self.channels), self.hidden)
            self.decoder_ = ConvDecoder(self.input_shape, self.latent_dim, list(self.channels), self.hidden)
        self.device_ = torch.device("cpu")

    def to(self, device: str | torch.device) -> "AutoencoderFamily":
        self.device_ = torch.device(device)
        self.encoder_.to(self.device_)
        self.decoder_.to(self.device_)
        return self

    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.encoder_(x)
        if not self.stochastic:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def _reconstruction_loss(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image loss of the decoder output ``out`` against ``x`` in [0, 1]."""
        if self.reconstruction == "mse-mean":  # InfoDiffusion: (rec - x)^2 averaged over pixels, images in [-1, 1]
            return (out - (2 * x - 1)).pow(2).flatten(1).mean(1)
        if self.reconstruction == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            per_pixel = (torch.sigmoid(out) - x).pow(2)
        return per_pixel.flatten(1).sum(1)

    def _images_out(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output → mean image in [0, 1]: sigmoid of logits, or [-1, 1] images mapped back."""
        if self.reconstruction == "mse-mean":
            return ((out + 1) / 2).clamp(0, 1)
        return torch.sigmoid(out)

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        """Per-batch regulariser added to the mean reconstruction loss (0 for the AE)."""
        return z.new_zeros(())

    def _kl(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Per-item KL(q(z|x) || p(z)): closed form for N(0, I), one-sample estimate otherwise."""
        if isinstance(self.prior_, GaussianPrior):
            return GaussianPrior.kl_from_diagonal(mu, logvar)
        log_q = -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)
        return log_q - self.prior_.log_prob(z)

    # -- training ----------------------------------------------------------------------
    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> "AutoencoderFamily":
        """Train for ``steps`` Adam steps on uniformly drawn minibatches of ``data``."""
        dev = resolve_device(device)
        generator = seed_everything(seed)
        rng = np.random.default_rng(seed)
        self._build(data.image_shape)
        self.to(dev)
        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        # Adam, or AdamW when weight_decay > 0 (InfoDiffusion's run.py: AdamW, weight decay 1e-5)
        opt_cls = torch.optim.AdamW if self.weight_decay > 0 else torch.optim.Adam
        optimiser = opt_cls(
            params, lr=self.lr, betas=(self.adam_beta1, self.adam_beta2), eps=self.adam_eps,
            fused=dev.type == "cuda", **({"weight_decay": self.weight_decay} if self.weight_decay > 0 else {}),
        )
        scheduler = None
        if self.lr_schedule == "infodiffusion":  # per epoch, an epoch = one pass over the training set
            scheduler = infodiffusion_scheduler(optimiser, len(data), self.batch_size, self.steps)
        self.history_: list[tuple[int, float]] = []
        nonfinite = torch.zeros((), dtype=torch.bool, device=dev)
        bar = tqdm(range(1, self.steps + 1), desc=f"fit {type(self).__name__}", disable=not progress, leave=False)
        self._setup_extra(dev)
        for step in bar:
            self.step_ = step - 1  # the optimiser steps taken before this one (disentanglement_lib's global_step)
            x, noise = self._draw_batch(data, rng, generator, dev)
            loss = self._loss(x, noise, generator)
            nonfinite |= ~torch.isfinite(loss)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            lr = optimiser.param_groups[0]["lr"]
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            self._after_step(data, rng, generator, dev)
            if step % self.log_every == 0 or step == self.steps:
                value = float(loss.detach())  # the only host sync, every log_every steps
                self.history_.append((step, value))
                terms = {k: float(v) for k, v in getattr(self, "_terms", {}).items()}
                self.log_scalars(step, loss=value, lr=lr, **terms)
                bar.set_postfix(loss=f"{value:.2f}")
                if bool(nonfinite):
                    raise DivergedError(
                        f"{type(self).__name__}: loss became NaN/inf by step {step} "
                        f"(lr={self.lr}, batch_size={self.batch_size}); lower the learning rate"
                    )
        self._fitted = True
        self._after_fit(data, rng)
        return self

    def _draw_batch(self, data, rng: np.random.Generator, generator: torch.Generator,
                    dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform minibatch of ``data`` on ``dev`` (flipped at random with ``hflip``) and its N(0, I) noise."""
        idx = rng.integers(0, len(data), size=self.batch_size)
        x = torch.from_numpy(data.images(idx)).to(dev, non_blocking=True)
        if self.hflip:  # random horizontal flips (InfoDiffusion's data.py flips its training images)
            flip = torch.from_numpy(rng.random(x.shape[0]) < 0.5).to(dev)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        noise = torch.randn(x.shape[0], self.latent_dim, generator=generator).to(dev, non_blocking=True)
        return x, noise

    def _setup_extra(self, dev: torch.device) -> None:
        """Hook run once before the first step, after the networks are built (FactorVAE's discriminator)."""

    def _after_step(self, data, rng: np.random.Generator, generator: torch.Generator, dev: torch.device) -> None:
        """Hook run after every optimiser step of the encoder and decoder (FactorVAE's discriminator update)."""

    def _loss(self, x: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mu, logvar = self._posterior(x)
        z = mu if logvar is None else mu + (0.5 * logvar).exp() * noise
        rec = self._reconstruction_loss(self.decoder_(z), x).mean()
        reg = self._regulariser(z, mu, logvar)
        self._terms = {"reconstruction": rec.detach(), "regulariser": reg.detach()}  # read every log_every steps
        return rec + reg

    def _after_fit(self, data, rng: np.random.Generator) -> None:
        """Hook run once after training (the AE fits its sampling Gaussian here)."""

    # -- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: np.ndarray, *, stochastic: bool = False, seed: int | None = None, batch_size: int = 512) -> np.ndarray:
        """Mean codes μ(x) (N, latent_dim); ``stochastic=True`` draws z ~ q(z|x) instead."""
        self.check_fitted()
        if stochastic and "stochastic_encode" not in self.capabilities:
            raise TypeError(f"{type(self).__name__} has a deterministic encoder; stochastic=True is not available")
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        out = []
        for mu, logvar in self._posterior_batches(x, batch_size):
            if stochastic:
                eps = torch.randn(mu.shape, generator=generator).to(self.device_)
                mu = mu + (0.5 * logvar).exp() * eps
            out.append(mu.float().cpu().numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.latent_dim), np.float32)

    @torch.no_grad()
    def encode_posterior(self, x: np.ndarray, *, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(μ(x), log σ²(x)) of the Gaussian posterior q(z|x), each (N, latent_dim).

        Part of the ``stochastic_encode`` capability (used by UDR's per-latent KL filter).
        """
        self.check_fitted()
        if "stochastic_encode" not in self.capabilities:
            raise TypeError(f"{type(self).__name__} has a deterministic encoder; it has no posterior")
        mus, logvars = [], []
        for mu, logvar in self._posterior_batches(x, batch_size):
            mus.append(mu.float().cpu().numpy())
            logvars.append(logvar.float().cpu().numpy())
        empty = np.zeros((0, self.latent_dim), np.float32)
        return (np.concatenate(mus) if mus else empty), (np.concatenate(logvars) if logvars else empty)

    def _posterior_batches(self, x: np.ndarray, batch_size: int):
        """(μ, log σ²) per batch of ``x`` with the encoder in eval mode (log σ² None if deterministic)."""
        x = as_images(x, self.input_shape)
        self.encoder_.eval()
        try:
            for start in range(0, x.shape[0], batch_size):
                yield self._posterior(torch.from_numpy(x[start:start + batch_size]).to(self.device_))
        finally:
            self.encoder_.train()

    @torch.no_grad()
    def decode(self, z: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
        """Decoder mean images for codes ``z`` (N, latent_dim), in [0, 1]."""
        self.check_fitted()
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__}.decode: z must have shape (N, {self.latent_dim}), got {z.shape}")
        self.decoder_.eval()
        out = []
        for start in range(0, z.shape[0], batch_size):
            logits = self.decoder_(torch.from_numpy(z[start:start + batch_size]).to(self.device_))
            out.append(self._images_out(logits).float().cpu().numpy())
        self.decoder_.train()
        return np.concatenate(out, axis=0)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """Decode ``n`` codes drawn from the prior."""
        self.check_fitted()
        z = self._sample_codes(n, torch.Generator().manual_seed(seed))
        return self.decode(z.numpy())

    def _sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.prior_.sample(n, generator)

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "encoder": {k: v.cpu() for k, v in self.encoder_.state_dict().items()},
            "decoder": {k: v.cpu() for k, v in self.decoder_.state_dict().items()},
            "history": [list(h) for h in self.history_],
        }

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        self._build(input_shape)
        self.encoder_.load_state_dict(state["encoder"])
        self.decoder_.load_state_dict(state["decoder"])
        self.history_ = [tuple(h) for h in state.get("history", [])]


class AE(AutoencoderFamily):
    """Deterministic autoencoder (reconstruction only).

    An AE has no prior, so :meth:`sample` decodes draws from a full-covariance Gaussian
    fitted to the codes of 2,048 training images after training (``code_sampler =
    "fitted"``, a common, documented baseline choice; see README "Deviations"), or from
    N(0, I) (``"prior"``, InfoDiffusion's reference: ``run.py`` decodes ``torch.randn`` codes
    for every baseline; its ``infodiffusion`` preset).
    """

    defaults = {**_COMMON, "code_sampler": "fitted"}
    ranges = {**_RANGES, "code_sampler": ("fitted", "prior")}
    added_params = {**_ADDED, "code_sampler": "fitted"}
    presets = {**AutoencoderFamily.presets, "infodiffusion": {**_INFODIFFUSION, "code_sampler": "prior"}}

    def _after_fit(self, data, rng: np.random.Generator) -> None:
        idx = rng.integers(0, len(data), size=min(2048, len(data)))
        codes = self.encode(data.images(idx)).astype(np.float64)
        self.code_mean_ = torch.from_numpy(codes.mean(0))
        cov = np.cov(codes, rowvar=False) + 1e-6 * np.eye(codes.shape[1])
        self.code_chol_ = torch.from_numpy(np.linalg.cholesky(cov))

    def _sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.code_sampler == "prior":
            return super()._sample_codes(n, generator)
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)
        return (self.code_mean_ + eps @ self.code_chol_.T).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "code_mean": self.code_mean_, "code_chol": self.code_chol_}

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        super().load_state_dict(state, input_shape)
        self.code_mean_, self.code_chol_ = state["code_mean"], state["code_chol"]


class VAE(AutoencoderFamily):
    """Variational autoencoder with a diagonal Gaussian posterior; β weights the KL term."""

    defaults = {**_COMMON, "beta": 1.0}
    capabilities = frozenset({"sample", "decode", "reconstruct", "stochastic_encode"})
    stochastic = True

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        return self.beta * self._kl(z, mu, logvar).mean()


class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017): the VAE with β > 1 (default 4, their dSprites value)."""

    defaults = {**_COMMON, "beta": 4.0}


class InfoVAE(VAE):
    """InfoVAE (Zhao et al. 2019) with the MMD divergence between q(z) and p(z).

    Its ``infodiffusion`` preset is InfoDiffusion's "InfoVAE" baseline: MMD only with weight
    0.1 (α = 1, λ = 0.1: ``--mmd_weight 0.1``), on codes z = μ + σ·ε as the reference's main
    branch decodes and regularises them (``models.py: VAE.forward``).
    """

    defaults = {**_COMMON, "alpha": 0.0, "lambda_": 1000.0}
    presets = {**AutoencoderFamily.presets, "infodiffusion": {**_INFODIFFUSION, "alpha": 1.0, "lambda_": 0.1}}

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        # prior draws come from torch's global RNG, seeded once in fit (deterministic per seed)
        prior_z = self.prior_.sample(z.shape[0], None).to(z.device)
        kl = self._kl(z, mu, logvar).mean()
        return (1.0 - self.alpha) * kl + (self.alpha + self.lambda_ - 1.0) * mmd_infovae(z, prior_z)
