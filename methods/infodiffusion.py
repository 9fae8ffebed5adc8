"""InfoDiffusion (Wang et al. 2023, "InfoDiffusion: Representation Learning Using Information
Maximizing Diffusion Models", ICML).

**Model** (§3, the auxiliary-variable diffusion model): p(x_{0:T}, z) = p(z) p(x_T)
∏_t p_θ(x_{t−1} | x_t, z), with an encoder q_φ(z | x_0) = N(μ_φ(x_0), diag σ²_φ(x_0)) and the
denoiser ε_θ(x_t, t, z) conditioned on z by adaptive group normalisation.

**Objective** (§3, the regularised ELBO, written as InfoVAE's, Zhao et al. 2019, eq. 6):
maximising the ELBO plus ζ·I_q(x_0; z) and minus λ·D(q(z) ‖ p(z)) gives the loss

    L = E_{x_0} [ E_{q(z|x_0)} L_simple(x_0, z) + (1 − ζ) · KL(q(z | x_0) ‖ p(z)) ] + (λ + ζ − 1) · D(q(z) ‖ p(z)),

with L_simple the ε-loss of DDPM (Ho et al. 2020, eq. 14) conditioned on z; ζ weighs the
mutual information, λ the prior; q(z) is the aggregate posterior seen through a batch.

* ``divergence="mmd"`` (default, the paper's choice): D is the biased MMD² with InfoVAE's
  kernel exp(−mean_d (x_d − y_d)² / D) (:func:`methods.vae.mmd_infovae`, as the reference
  ``utils.compute_mmd``), between the batch's codes and as many prior draws.
* ``divergence="kl"``: D(q(z) ‖ p(z)) is replaced by its standard upper bound
  E_{x_0} KL(q(z | x_0) ‖ p(z)), so both terms are per-item KLs with total weight λ (a β-VAE
  -style bound; KL in closed form for the Gaussian prior, a one-sample Monte-Carlo estimate
  log q(z|x) − log p(z) for the mixture).
* Both weights must be ≥ 0 (ζ ≤ 1, λ ≥ 1 − ζ); a negative weight would *reward* divergence.
* The encoder is stochastic (z ~ q(z|x_0), reparameterised) exactly when a KL term has a
  non-zero weight; otherwise z is the posterior mean (the reference feeds its
  deterministic features to the decoder in that case too). The paper's setting is ζ = 1,
  λ = 0.1 (MMD only, reference ``--mmd_weight 0.1``).
* **ζ = 1, λ = 0 reproduces DiffAE exactly**: both regulariser weights vanish, the encoder
  is deterministic, and the loss, the parameters and the random draws are DiffAE's
  (``tests/test_diffusion_methods.py`` checks the trajectories step by step).

Priors p(z): ``"gaussian"`` N(0, I) or ``"mog"``, the fixed mixture of
:mod:`methods.priors`.

**Sampling** (``sample``), §4: z from the prior (``sample_z="prior"``) or from a latent DDPM
trained on the codes (``"latent"``, the paper's "w/ learned latent"; the same network as
DiffAE's), then x_T ~ N(0, I) and DDIM decoding conditioned on z. **Two-phase sampling**
(``two_phase_t`` > 0): a vanilla DDPM, trained alongside on the same data, runs the first
part of the reverse chain (timesteps ≥ ``two_phase_t``) and the z-conditioned model the
rest. Two defects of the reference code are not reproduced: its two-phase sampler never
switches models (the step counter is frozen inside its generator), and its DDIM
inversion drops z; here the switch happens at ``two_phase_t`` and ``reconstruct`` inverts
with the image's own z (as DiffAE does).

Presets: ``paper`` is the reference's 64×64 architecture (isjakewong/InfoDiffusion, dev
branch ``models.py: InfoDiff`` with ``AuxiliaryUNet`` and ``Encoder``, ``run.py``,
``README``'s CelebA command): denoiser base 64 channels, multipliers [1, 2, 4, 8],
attention at 16×16, 2 residual blocks (four convs each, z by AdaGN with scale and shift),
dropout 0.1; encoder: a time-free UNet of the same shape to a one-channel map and a
linear map to z; latent dimension 32; T = 1000 with β linear 1e-5 → 1e-2; AdamW lr 1e-4,
weight decay 1e-5, gradient clipping 1, batch 32, ≈ 50 epochs of CelebA's 162,770 images
(254,000 steps); no EMA; ζ = 1, λ = 0.1, MMD, Gaussian prior. Latent DDPM (when used): the
reference's ``LatentUNet``, 10 layers of width 4·32, dropout 0.1, trained with the MSE
ε-loss on the image schedule.

The learning rate follows the reference's schedule (``lr_schedule = "infodiffusion"``: ×2
warm-up over the first epoch, then cosine decay per epoch, ``run.py``).

Deviations: its extra reconstruction term
‖x̂_0 − x_0‖²/T (computed from the ε̂ of a random t as if it were the first step) is
dropped; q(z|x_0) has the encoder output as its mean and one linear head for log σ²
(the reference has two heads on top of the features, and decodes the features themselves
when the encoder is deterministic, which is what we do); images are sampled with 100
DDIM steps. The reference's FID images come from its 1000-step ancestral DDPM loop (its DDIM
path with η = 0.01 is used only with ``--deterministic``, which no FID command passes): the
FID metric's ``sampler = "ancestral-1000"`` reproduces that protocol.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from bench.diffusion.samplers import Denoiser, epsilon_loss, switch_denoiser
from methods.ddpm import DDPM
from methods.diffae import DIFFAE_DEFAULTS, TINY_AUTOENCODER, DiffAE
from methods.diffusion_training import TrainState
from methods.priors import PRIORS, GaussianPrior, MixtureOfGaussiansPrior, make_prior
from methods.vae import mmd_infovae

DIVERGENCES = ("mmd", "kl")
SAMPLE_Z = ("prior", "latent")

INFODIFFUSION_DEFAULTS: dict[str, Any] = {
    **DIFFAE_DEFAULTS,
    # denoiser and encoder: the reference's 64x64 architecture
    "time_embed_dim": 0,
    "cond_layout": "separate",
    "schedule": "linear-infodiffusion",
    "latent_dim": 32,
    "encoder": "unet_map",
    "enc_channel_mult": [1, 2, 4, 8],
    "weight_decay": 1e-5,
    "batch_size": 32,
    "steps": 254_000,
    "ema_decay": 0.0,
    "lr_schedule": "infodiffusion",
    "ddim_steps": 100,
    # latent DDPM ("w/ learned latent"): the reference's LatentUNet
    "latent_hidden": 128,
    "latent_dropout": 0.1,
    "latent_schedule": "linear-infodiffusion",
    "latent_loss": "mse",
    "latent_weight_decay": 1e-5,
    "latent_steps": 100_000,
    "latent_ddim_steps": 1000,
    # the regularised objective and the prior
    "zeta": 1.0,
    "lambda_": 0.1,
    "divergence": "mmd",
    "prior": "gaussian",
    "mog_components": 10,
    "mog_spread": 2.0,
    "mog_std": 0.5,
    # sampling
    "sample_z": "prior",
    "two_phase_t": 0,
}

#: CPU-test sizes; like every tiny preset it uses the "joint" layout and the half-UNet encoder (cheaper)
TINY_INFODIFFUSION: dict[str, Any] = {**TINY_AUTOENCODER, "latent_dropout": 0.0, "latent_ddim_steps": 5,
                                      "lr_schedule": "constant"}


class InfoDiffusion(DiffAE):
    """Auxiliary-variable diffusion with the ζ/λ-regularised objective (see the module docstring)."""

    defaults: ClassVar[dict[str, Any]] = dict(INFODIFFUSION_DEFAULTS)
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_INFODIFFUSION), "paper": {}}
    capabilities = frozenset({"sample", "decode", "reconstruct"})
    #: 2: a half-UNet encoder (the tiny preset's) has DiffAE's one-conv blocks
    version = "2"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._check_choice("divergence", DIVERGENCES)
        self._check_choice("prior", PRIORS)
        self._check_choice("sample_z", SAMPLE_Z)
        kl_w, div_w = self.weights()
        if kl_w < 0 or div_w < 0:
            raise ValueError(
                f"InfoDiffusion: the loss weights (1 - zeta) = {kl_w:g} on KL(q(z|x)||p(z)) and "
                f"(lambda_ + zeta - 1) = {div_w:g} on D(q(z)||p(z)) must both be >= 0 "
                f"(zeta <= 1 and lambda_ >= 1 - zeta); got zeta={self.zeta}, lambda_={self.lambda_}. "
                "DiffAE is zeta=1, lambda_=0; the paper's setting is zeta=1, lambda_=0.1"
            )
        if not 0 <= self.two_phase_t < self.timesteps:
            raise ValueError(f"InfoDiffusion: two_phase_t must be in [0, timesteps={self.timesteps}) (0 = off), "
                             f"got {self.two_phase_t}")
        self.prior_ = make_prior(self.prior, self.latent_dim, **self._prior_kwargs())

    def _prior_kwargs(self) -> dict[str, Any]:
        if self.prior != "mog":
            return {}
        return {"components": self.mog_components, "spread": self.mog_spread, "component_std": self.mog_std}

    def weights(self) -> tuple[float, float]:
        """(1 − ζ, λ + ζ − 1): the weights of KL(q(z|x_0) ‖ p(z)) and of D(q(z) ‖ p(z))."""
        return 1.0 - self.zeta, self.lambda_ + self.zeta - 1.0

    def stochastic_encoder(self) -> bool:
        """z ~ q(z|x_0) during training iff a per-item KL term has a non-zero weight."""
        kl_w, div_w = self.weights()
        return kl_w > 0 or (self.divergence == "kl" and div_w > 0)

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        super()._build(input_shape)
        # created outside the global RNG stream, so that every other initialisation and every
        # dropout mask is the one DiffAE draws (the zeta = 1, lambda_ = 0 equivalence is exact)
        with torch.random.fork_rng(devices=[]):
            self.logvar_head_ = nn.Linear(self.latent_dim, self.latent_dim)
        self.vanilla_: DDPM | None = None

    def _nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet_, "encoder": self.encoder_, "logvar_head": self.logvar_head_}

    # -- training ----------------------------------------------------------------------
    def _draw(self, state: TrainState) -> dict[str, torch.Tensor]:
        batch = super()._draw(state)
        gen, dev, B = state.generator, state.device, self.batch_size
        if self.stochastic_encoder():
            batch["eps_z"] = torch.randn((B, self.latent_dim), generator=gen, device=dev)
        if self.divergence == "mmd" and self.weights()[1] > 0:
            batch["prior_z"] = self._prior_draw(B, gen, dev)
        return batch

    def _prior_draw(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """n draws from p(z) made on ``device`` from ``generator`` (the layouts of :mod:`methods.priors`)."""
        if isinstance(self.prior_, GaussianPrior):
            return torch.randn((n, self.latent_dim), generator=generator, device=device)
        prior: MixtureOfGaussiansPrior = self.prior_
        which = torch.randint(prior.components, (n,), generator=generator, device=device)
        noise = torch.randn((n, self.latent_dim), generator=generator, device=device)
        return prior.means.to(device)[which] + prior.std * noise

    def _kl(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Per-item KL(q(z|x) ‖ p(z)): closed form for N(0, I), one-sample estimate for the mixture."""
        if isinstance(self.prior_, GaussianPrior):
            return GaussianPrior.kl_from_diagonal(mu, logvar)
        log_q = -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)
        return log_q - self.prior_.log_prob(z)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The objective's terms on one batch: ``denoise`` (L_simple), and ``kl`` / ``mmd`` when weighted."""
        mu = self._encode_train(batch["x0"])
        kl_w, div_w = self.weights()
        if self.stochastic_encoder():
            logvar = self.logvar_head_(mu).float()
            z = mu + (0.5 * logvar).exp() * batch["eps_z"]
        else:
            logvar, z = None, mu
        net = self.unet_
        terms = {"denoise": epsilon_loss(lambda x, t: net(x, t, z), self.schedule_, batch["x0"], batch["t"],
                                         batch["noise"]).mean()}
        if logvar is not None:
            terms["kl"] = self._kl(z, mu, logvar).mean()
        if self.divergence == "mmd" and div_w > 0:
            terms["mmd"] = mmd_infovae(z, batch["prior_z"])
        return terms

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_simple + (1 − ζ) KL(q(z|x)‖p) + (λ + ζ − 1) D(q(z)‖p); zero-weight terms are not computed."""
        terms = self.loss_terms(batch)
        kl_w, div_w = self.weights()
        loss = terms["denoise"]
        if self.divergence == "kl":
            if kl_w + div_w > 0:
                loss = loss + (kl_w + div_w) * terms["kl"]
        else:
            if kl_w > 0:
                loss = loss + kl_w * terms["kl"]
            if div_w > 0:
                loss = loss + div_w * terms["mmd"]
        return loss

    def _after_fit(self, data, state: TrainState, seed: int, progress: bool) -> None:
        if self.sample_z == "latent":
            self._fit_latent_ddpm(state, seed, progress)
        if self.two_phase_t > 0:
            self.vanilla_ = self._make_vanilla()
            self.vanilla_.set_logger(lambda phase, step, values: self.log_scalars(step, phase="vanilla", **values))
            self.vanilla_.fit(data, seed=seed, device=state.device, progress=progress)
            self.vanilla_.to(self.device_)

    def _make_vanilla(self) -> DDPM:
        """The vanilla DDPM of two-phase sampling: this model's denoiser hyperparameters, no z."""
        return DDPM(**{k: v for k, v in self._params.items() if k in DDPM.defaults})

    # -- inference ---------------------------------------------------------------------
    def _sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.sample_z == "latent":
            return self._latent_samples(n, generator)
        return self.prior_.sample(n, generator).to(self.device_)

    def _sampling_denoiser(self, z: torch.Tensor) -> Denoiser:
        """Two-phase when ``two_phase_t`` > 0: vanilla DDPM for t ≥ two_phase_t, then ε_θ(·, ·, z)."""
        conditional = self._denoiser(z)
        if not self.two_phase_t:
            return conditional
        if self.vanilla_ is None:
            raise RuntimeError("InfoDiffusion: two-phase sampling needs the vanilla DDPM trained by fit()")
        return switch_denoiser(self.vanilla_._denoiser(), conditional, self.two_phase_t)

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.vanilla_ is not None:
            state["vanilla"] = self.vanilla_.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        super().load_state_dict(state, input_shape)
        if "vanilla" in state:
            self.vanilla_ = self._make_vanilla()
            self.vanilla_.load_state_dict(state["vanilla"], input_shape)
            self.vanilla_.input_shape = tuple(input_shape)
            self.vanilla_._fitted = True

    def to(self, device: str | torch.device) -> "InfoDiffusion":
        super().to(device)
        if getattr(self, "vanilla_", None) is not None:
            self.vanilla_.to(device)
        return self
