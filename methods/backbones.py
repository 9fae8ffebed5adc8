"""Image backbones in plain torch (no torchvision): ResNet-18/50 with the small-image stem and WRN-28-k.

* :class:`ResNet` — He et al. 2016, BasicBlock (ResNet-18: [2, 2, 2, 2]) or Bottleneck
  (ResNet-50: [3, 4, 6, 3], expansion 4), BatchNorm after every conv, with the stem that
  google-research/simclr (``resnet.py``, ``cifar_stem``) and solo-learn use for images of at
  most 32 px: one 3×3 stride-1 conv and no max-pool; the larger images keep the 7×7 stride-2
  conv and max-pool. Output: the globally average-pooled features h (512 or 2048).
* :class:`WideResNet` — Zagoruyko & Komodakis 2016, depth 28, widen factor k (WRN-28-2 is
  DRL's and LaplaceNet's encoder): pre-activation blocks (BN, ReLU, conv) with widths
  16, 16k, 32k, 64k, dropout between the convs, BN + ReLU + average pool at the end (output
  64k). With ``time_dim`` the blocks add a per-channel bias ``Dense(SiLU(t_emb))`` after their
  first conv: the time-conditioned encoder E(x_0, t) of DRL's proxy code (sarthmit/traj_drl
  ``models/wrn.py``, ``wide_basic``).
* :class:`ConvBackbone` — the project's conv encoder (methods/nets.py) as a feature
  extractor, for the tiny presets.

``build_backbone(name, in_channels, image_size, **kw)`` returns a module with ``out_dim``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from methods.nets import ConvEncoder

BACKBONES = ("resnet18", "resnet50", "wrn28", "conv")


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.short = nn.Identity() if stride == 1 and cin == planes else nn.Sequential(
            nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.short = nn.Identity() if stride == 1 and cin == out else nn.Sequential(
            nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return F.relu(self.bn3(self.conv3(h)) + self.short(x))


class ResNet(nn.Module):
    """ResNet-18 / ResNet-50 feature extractor with SimCLR's small-image stem (≤ 32 px)."""

    def __init__(self, depth: int, in_channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        layouts = {18: (_Basic, [2, 2, 2, 2]), 50: (_Bottleneck, [3, 4, 6, 3])}
        if depth not in layouts:
            raise ValueError(f"ResNet: depth must be 18 or 50, got {depth}")
        block, counts = layouts[depth]
        if image_size <= 32:  # simclr resnet.py cifar_stem: 3x3 stride 1, no max-pool
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        layers, cin = [], width
        for i, n in enumerate(counts):
            planes = width * 2 ** i
            for j in range(n):
                layers.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))


class _WideBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int, dropout: float, time_dim: int | None) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, planes, 3, 1, 1)
        self.drop = nn.Dropout(dropout)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, stride, 1)
        self.short = nn.Identity() if stride == 1 and cin == planes else nn.Conv2d(cin, planes, 1, stride)
        self.time = None
        if time_dim:
            self.time = nn.Linear(time_dim, planes)
            nn.init.zeros_(self.time.bias)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        if self.time is not None:
            h = h + self.time(F.silu(t_emb))[:, :, None, None]
        h = self.conv2(F.relu(self.bn2(self.drop(h))))
        return h + self.short(x)


class WideResNet(nn.Module):
    """WRN-depth-k feature extractor (output 64·k), optionally time-conditioned (per-block bias)."""

    def __init__(self, in_channels: int, depth: int = 28, widen: int = 2, dropout: float = 0.0,
                 time_dim: int | None = None) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet: depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1)
        blocks, cin = [], widths[0]
        for stage, width in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(_WideBlock(cin, width, 2 if (j == 0 and stage > 0) else 1, dropout, time_dim))
                cin = width
        self.blocks = nn.ModuleList(blocks)
        self.bn = nn.BatchNorm2d(cin, momentum=0.9)  # traj_drl wrn.py: BatchNorm2d(nStages[3], momentum=0.9)
        self.out_dim = cin

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(x)
        for block in self.blocks:
            h = block(h, t_emb)
        return F.relu(self.bn(h)).mean(dim=(2, 3))


class ConvBackbone(nn.Module):
    """The conv encoder of the autoencoder family (4 stride-2 convs, dense ``hidden``) as features."""

    def __init__(self, in_channels: int, image_size: int, channels: Sequence[int], hidden: int) -> None:
        super().__init__()
        self.net = ConvEncoder((in_channels, image_size, image_size), hidden, list(channels), hidden)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def build_backbone(name: str, in_channels: int, image_size: int, *, width: int = 64, widen: int = 2,
                   conv_channels: Sequence[int] = (32, 32, 64, 64), hidden: int = 256, dropout: float = 0.0,
                   time_dim: int | None = None) -> nn.Module:
    """A backbone by name (see :data:`BACKBONES`); ``time_dim`` only for ``wrn28``."""
    if time_dim and name != "wrn28":
        raise ValueError(f"backbone {name!r} cannot be time-conditioned (only 'wrn28' can)")
    if name == "resnet18":
        return ResNet(18, in_channels, image_size, width)
    if name == "resnet50":
        return ResNet(50, in_channels, image_size, width)
    if name == "wrn28":
        return WideResNet(in_channels, 28, widen, dropout, time_dim)
    if name == "conv":
        return ConvBackbone(in_channels, image_size, conv_channels, hidden)
    raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")
