"""DiffAE: diffusion autoencoder (Preechakul et al. 2022, "Diffusion Autoencoders: Toward a
Meaningful and Decodable Representation", CVPR).

* A semantic encoder z = Enc_φ(x_0) (§3.2) conditions the UNet denoiser through adaptive
  group normalisation (eq. 5); both are trained end to end with the plain ε-loss
  L_simple = E ‖ε_θ(x_t, t, z) − ε‖² (eq. 6). No prior, no KL: z is deterministic.
* ``encode``: z (the deterministic encoder output).
* ``reconstruct``: the stochastic subcode x_T is inferred by deterministic DDIM inversion
  *conditioned on z* (eq. 8), then decoded by DDIM conditioned on the same z (§3.1).
* ``sample``: z from a latent DDPM ε_ω(z_t, t) (§3.3, eq. 9, an MLP with skip connections,
  :class:`bench.diffusion.latent_mlp.LatentMLP`) trained after the autoencoder on codes
  normalised to zero mean and unit variance per dimension ("z-normalisation", App. B),
  then x_T ~ N(0, I) and DDIM decoding conditioned on z.
* ``decode(z)``: DDIM decoding of every code from one shared x_T (drawn with seed 0), so
  that a latent traversal changes the codes and nothing else.

Presets: ``paper`` is DiffAE's CelebA-64 configuration (phizaz/diffae ``templates.py:
celeba64d2c_autoenc`` ← ``ffhq64_autoenc`` ← ``autoenc_base``; ``templates_latent.py:
celeba64d2c_autoenc_latent``): base 64 channels, multipliers (1, 2, 4, 8), attention at 16,
2 residual blocks, dropout 0.1, time embedding 512, z of 512 dimensions; encoder
multipliers (1, 2, 4, 8, 8); T = 1000 linear β; Adam lr 1e-4, batch 32 × 4 GPUs = 128,
72 M images (562,500 steps), gradient clipping 1, EMA 0.9999; DDIM with T_eval = 20 steps.
Latent DDPM: 10 layers of width 2048, constant β = 0.008, L1 ε-loss, AdamW lr 1e-4 weight
decay 0.01, batch 512, 301 M codes (587,890 steps), 20 DDIM steps.

``released-celeba64`` and ``released-ffhq128`` are the networks of DiffAE's released
autoencoders (``templates.py: celeba64d2c_autoenc``, ``ffhq128_autoenc_130M`` ←
``ffhq128_autoenc_base``: base 128, multipliers (1, 1, 2, 3, 4), encoder (1, 1, 2, 3, 4, 4),
at 128 px): ``paper``'s hyperparameters (the training ones unchanged) with ``resample =
"resblock"``, weight-compatible with the checkpoints' ``ema_model`` through
:mod:`bench.released.diffae`.

Deviations: ``paper`` (the default, ``resample = "conv"``) resamples the denoiser and the
encoder with stride-2 / nearest-neighbour convs instead of DiffAE's resampling residual blocks
(see :mod:`bench.diffusion.unet`; the encoder has 19,318,592 parameters at CelebA-64 against
the reference's 19,320,512, the difference being those blocks' GroupNorms, the denoiser
65,572,867 against 71,518,723 — ``released-celeba64`` has the reference's counts);
the latent DDPM is trained on the codes of ``latent_samples`` training images (0 = all);
it keeps its own EMA with the autoencoder's ``ema_decay``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from bench.diffusion.samplers import epsilon_loss
from bench.diffusion.unet import ENCODERS
from methods.diffusion_autoencoding import LATENT_DDPM_DEFAULTS, TINY_LATENT_DDPM, AutoencodingDiffusion
from methods.diffusion_base import DIFFUSION_DEFAULTS, TINY_NET

#: hyperparameters of the semantic encoder and the latent DDPM (values: DiffAE CelebA-64)
AUTOENCODER_DEFAULTS: dict[str, Any] = {
    **LATENT_DDPM_DEFAULTS,
    "encoder": "half_unet",
    "enc_base_channels": 0,  # 0 = base_channels
    "enc_channel_mult": [1, 2, 4, 8, 8],
    "enc_num_res_blocks": 2,
    "enc_attention_resolutions": [16],
    "resample": "conv",  # of the denoiser and the encoder; "resblock": DiffAE's (resblock_updown=True)
}

DIFFAE_DEFAULTS: dict[str, Any] = {
    **DIFFUSION_DEFAULTS,
    "time_embed_dim": 512,
    "cond_layout": "joint",
    "schedule": "linear",
    "weight_decay": 0.0,
    "batch_size": 128,
    "steps": 562_500,
    "ddim_steps": 20,
    **AUTOENCODER_DEFAULTS,
}

TINY_AUTOENCODER: dict[str, Any] = {
    **TINY_NET,
    **TINY_LATENT_DDPM,
    "time_embed_dim": 0,
    "encoder": "half_unet",
    "enc_channel_mult": [1, 2],
    "enc_num_res_blocks": 1,
    "enc_attention_resolutions": [],
}


class DiffAE(AutoencodingDiffusion):
    """Semantic encoder + z-conditioned DDIM decoder + latent DDPM (see the module docstring)."""

    defaults: ClassVar[dict[str, Any]] = {**DIFFAE_DEFAULTS, "pretrained": ""}
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(TINY_AUTOENCODER), "paper": {},
        "released-celeba64": {"resample": "resblock"},
        "released-ffhq128": {"resample": "resblock", "base_channels": 128, "channel_mult": [1, 1, 2, 3, 4],
                             "enc_channel_mult": [1, 1, 2, 3, 4, 4]},
    }
    #: ``resample`` (added for the authors' checkpoints) keeps today's stride-2 / nearest-neighbour convs at "conv";
    #: ``pretrained``: a released last.ckpt to convert instead of training (:mod:`bench.released`)
    added_params: ClassVar[dict[str, Any]] = {"resample": "conv", "pretrained": ""}
    capabilities = frozenset({"sample", "decode", "reconstruct"})
    #: 2: the half-UNet encoder's blocks are DiffAE's (one conv, no dropout; 19.3 M at CelebA-64, was 35.0 M)
    version = "2"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._check_choice("encoder", tuple(ENCODERS))

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        super()._build(input_shape)
        c, h, _ = input_shape
        self.encoder_ = ENCODERS[self.encoder](
            in_channels=c, image_size=h, out_dim=self.latent_dim,
            base_channels=self.enc_base_channels or self.base_channels, channel_mult=tuple(self.enc_channel_mult),
            num_res_blocks=self.enc_num_res_blocks, attention_resolutions=tuple(self.enc_attention_resolutions),
            dropout=self.dropout, norm_groups=self.norm_groups, num_heads=self.num_heads, resample=self.resample,
        )

    def _nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet_, "encoder": self.encoder_}

    # -- training ----------------------------------------------------------------------
    def _encode_train(self, x0: torch.Tensor) -> torch.Tensor:
        return self.encoder_(x0).float()

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_simple with the denoiser conditioned on z = Enc(x_0) (Preechakul et al. 2022, eq. 6)."""
        z = self._encode_train(batch["x0"])
        net = self.unet_
        return epsilon_loss(lambda x, t: net(x, t, z), self.schedule_, batch["x0"], batch["t"], batch["noise"]).mean()
