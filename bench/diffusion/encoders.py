"""The convolutional semantic encoders of PDAE and DisDiff, z = E(x_0), in plain torch.

* :class:`PDAEEncoder` — PDAE's CelebA-64 encoder (Zhang et al. 2022, §4 "simply stacked
  convolution layers and a linear layer"; ckczzj/PDAE
  ``model/representation_learning/encoder/celeba64.py: CELEBA64Encoder``): 3×3 stride-2
  convs of 64, 128, 128, 128 channels, each after the first preceded by GroupNorm(32) and
  SiLU, 4-head self-attention after the conv whose output side is in
  ``attention_resolutions`` (16 at 64 px: after the second), GroupNorm, SiLU, flatten and
  a linear map to z.
* :class:`DisDiffEncoder` — DisDiff's ``Encoder4`` (Yang et al. 2023; ThomasMrY/DisDiff
  ``ldm/modules/encoders/modules.py``): four 4×4 stride-2 convs of ``d`` channels with
  BatchNorm, ReLU after the first, second and fourth — the reference has none after the
  third, reproduced — then two residual blocks (ReLU, 3×3 conv, BatchNorm, ReLU, 1×1
  conv, identity skip) separated by BatchNorm + ReLU, flatten and a linear map to the
  N·D unit codes.

Both reference encoders hard-code the 64 px flatten width (128 · 4 · 4); here it follows
the image side (``channels · (side / 16)²``), so the same nets run on 32 px test data.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bench.diffusion.unet import AttentionBlock, _group_norm


def _side_after(image_size: int, convs: int, owner: str) -> int:
    side = image_size
    for _ in range(convs):
        if side % 2:
            raise ValueError(f"{owner}: image side {image_size} must be divisible by 2^{convs} = {2 ** convs}")
        side //= 2
    if side < 1:
        raise ValueError(f"{owner}: image side {image_size} is too small for {convs} stride-2 convs")
    return side


class PDAEEncoder(nn.Module):
    """PDAE's conv encoder: stride-2 3×3 convs with GroupNorm/SiLU, attention at 16², Linear → z."""

    def __init__(self, *, in_channels: int, image_size: int, out_dim: int, channels: Sequence[int] = (64, 128, 128, 128),
                 attention_resolutions: Sequence[int] = (16,), norm_groups: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        if not channels:
            raise ValueError("PDAEEncoder: channels must not be empty")
        side = _side_after(image_size, len(channels), "PDAEEncoder")
        layers: list[nn.Module] = []
        now, s = in_channels, image_size
        for i, ch in enumerate(channels):
            if i:
                layers += [_group_norm(norm_groups, now), nn.SiLU()]
            layers.append(nn.Conv2d(now, ch, 3, stride=2, padding=1))
            now, s = ch, s // 2
            if s in attention_resolutions:
                layers.append(AttentionBlock(ch, norm_groups, num_heads))
        layers += [_group_norm(norm_groups, now), nn.SiLU(), nn.Flatten(), nn.Linear(now * side * side, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ResBlock(nn.Module):
    """x + [ReLU, 3×3 conv, BatchNorm, ReLU, 1×1 conv](x) (DisDiff's encoder ``ResBlock`` with bn=True)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                   nn.ReLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(x)


class DisDiffEncoder(nn.Module):
    """DisDiff's ``Encoder4``: 4×4 stride-2 convs with BatchNorm, two residual blocks, Linear → N·D."""

    def __init__(self, *, in_channels: int, image_size: int, out_dim: int, channels: int = 128) -> None:
        super().__init__()
        side = _side_after(image_size, 4, "DisDiffEncoder")
        d = channels

        def conv(cin: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, d, 4, stride=2, padding=1), nn.BatchNorm2d(d)]

        self.net = nn.Sequential(
            *conv(in_channels), nn.ReLU(),
            *conv(d), nn.ReLU(),
            *conv(d),  # no ReLU here in the reference
            *conv(d), nn.ReLU(),
            _ResBlock(d), nn.BatchNorm2d(d), nn.ReLU(), _ResBlock(d),
            nn.Flatten(), nn.Linear(d * side * side, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
