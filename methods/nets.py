"""The convolutional encoder/decoder shared by the autoencoder family.

Architecture of disentanglement_lib's ``conv_encoder``/``deconv_decoder`` (Locatello et al.
2019, Table 1, itself after Higgins et al. 2017 / Burgess et al. 2018): four 4×4 stride-2
convolutions (32, 32, 64, 64 channels, ReLU), a 256-unit dense layer, then a linear head;
the decoder mirrors it with transposed convolutions. Channel widths are parameters so the
``tiny`` presets can shrink them; the input side must be divisible by 16.
"""

from __future__ import annotations

import torch
from torch import nn


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
