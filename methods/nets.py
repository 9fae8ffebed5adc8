"""The convolutional encoder/decoder shared by the autoencoder family.

Architecture of disentanglement_lib's ``conv_encoder``/``deconv_decoder`` (Locatello et al.
2019, Table 1, itself after Higgins et al. 2017 / Burgess et al. 2018): four 4×4 stride-2
convolutions (32, 32, 64, 64 channels, ReLU), a 256-unit dense layer, then a linear head;
the decoder mirrors it with transposed convolutions. Channel widths are parameters so the
``tiny`` presets can shrink them; the input side must be divisible by 16.

:class:`InfoDiffusionBaselineEncoder` and :class:`~bench.diffusion.unet.UNetMapDecoder` are the
networks of InfoDiffusion's own AE/VAE/β-VAE/InfoVAE baselines (``architecture =
"infodiffusion"``, isjakewong/InfoDiffusion ``models.py: Encoder, Decoder``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bench.diffusion.unet import UNetMapDecoder, UNetMapEncoder


def _check_side(channels: int, side: int, depth: int) -> None:
    if side % (2**depth) != 0:
        raise ValueError(f"image side {side} must be divisible by {2**depth} for a {depth}-layer conv encoder")


class ConvEncoder(nn.Module):
    """x (B, C, H, W) → (B, out_dim): conv stack, dense ``hidden``, linear head."""

    def __init__(self, in_shape: tuple[int, int, int], out_dim: int, channels: list[int], hidden: int) -> None:
        super().__init__()
        c, h, w = in_shape
        _check_side(c, h, len(channels))
        layers: list[nn.Module] = []
        prev = c
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            prev = ch
        self.conv = nn.Sequential(*layers)
        flat = prev * (h // 2 ** len(channels)) * (w // 2 ** len(channels))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class ConvDecoder(nn.Module):
    """z (B, D) → logits (B, C, H, W): dense ``hidden``, dense to a feature map, transposed convs."""

    def __init__(self, out_shape: tuple[int, int, int], in_dim: int, channels: list[int], hidden: int) -> None:
        super().__init__()
        c, h, w = out_shape
        _check_side(c, h, len(channels))
        rev = list(reversed(channels))
        self.start = (rev[0], h // 2 ** len(channels), w // 2 ** len(channels))
        self.fc = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, rev[0] * self.start[1] * self.start[2]), nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i, ch in enumerate(rev):
            out = rev[i + 1] if i + 1 < len(rev) else c
            layers.append(nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1))
            if i + 1 < len(rev):
                layers.append(nn.ReLU(inplace=True))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(z.shape[0], *self.start))


class InfoDiffusionBaselineEncoder(nn.Module):
    """InfoDiffusion's reference ``Encoder``: time-free UNet → 1-channel map → ``fc_a`` (H·W → D),
    then the heads ``fc_mu`` and ``fc_var`` (D → D each) on the features ``a``.

    ``forward`` returns ``a`` for a deterministic model (the reference's AE decodes ``a``) and
    ``cat(μ, log σ²)`` for a stochastic one (its VAE and InfoVAE decode μ + σ·ε). The heads
    exist in both cases, as in the reference, so parameter counts agree.
    """

    def __init__(self, *, in_channels: int, image_size: int, latent_dim: int, stochastic: bool,
                 base_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 attention_resolutions: Sequence[int], dropout: float, norm_groups: int = 32) -> None:
        super().__init__()
        self.stochastic = stochastic
        self.features = UNetMapEncoder(in_channels=in_channels, image_size=image_size, out_dim=latent_dim,
                                       base_channels=base_channels, channel_mult=channel_mult,
                                       num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
                                       dropout=dropout, norm_groups=norm_groups)
        self.fc_mu = nn.Linear(latent_dim, latent_dim)
        self.fc_var = nn.Linear(latent_dim, latent_dim)
        for head in (self.features.fc, self.fc_mu, self.fc_var):  # the reference's initialize()
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        if not self.stochastic:
            return a
        return torch.cat([self.fc_mu(a), self.fc_var(a)], dim=1)


def infodiffusion_baseline_decoder(*, out_shape: tuple[int, int, int], latent_dim: int, base_channels: int,
                                   channel_mult: Sequence[int], num_res_blocks: int,
                                   attention_resolutions: Sequence[int], dropout: float,
                                   norm_groups: int = 32) -> UNetMapDecoder:
    """InfoDiffusion's reference baseline ``Decoder`` for images of ``out_shape``."""
    c, h, w = out_shape
    if h != w:
        raise ValueError(f"the InfoDiffusion baseline decoder needs square images, got {h}x{w}")
    return UNetMapDecoder(out_channels=c, image_size=h, in_dim=latent_dim, base_channels=base_channels,
                          channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                          attention_resolutions=attention_resolutions, dropout=dropout, norm_groups=norm_groups)
