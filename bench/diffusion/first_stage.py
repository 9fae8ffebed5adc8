"""Latent diffusion's first stage (Rombach et al. 2022): the VQ-regularised autoencoder and its losses.

The configuration DisDiff and EncDiff ship (``configs/autoencoder/*_vq_4_16.yaml``, "VQ-f4"):
64×64×3 → 16×16×3, channels 32 with multipliers [1, 2, 4], 2 residual blocks per level, a
middle block with self-attention, GroupNorm(32, eps 1e-6), embedding dimension 3 and a
codebook of 2,048 entries.

* :class:`Encoder` / :class:`Decoder` — LDM's ``diffusionmodules/model.py`` (after taming-
  transformers): pre-activation residual blocks (GN, swish, conv, GN, swish, dropout,
  conv, 1×1 shortcut when the width changes), asymmetric-padding stride-2 conv
  downsampling, nearest ×2 + conv upsampling, single-head attention in the middle.
* :class:`VectorQuantizer` — taming's ``VectorQuantizer2`` with ``legacy=True`` (the LDM
  default): nearest codebook entry, straight-through gradient, loss
  ``‖sg[z_q] − z‖² + β ‖z_q − sg[z]‖²`` with β = 0.25. Because of that documented legacy
  behaviour the *commitment* term (pulling the encoder) has weight 1 and the *codebook*
  term weight 0.25 — the reverse of the VQ-VAE paper's convention; reproduced here.
* :class:`VQAutoencoder` — encoder → 1×1 ``quant_conv`` (the pre-quantisation latent h the
  diffusion model runs on) → quantizer → 1×1 ``post_quant_conv`` → decoder.
* :class:`NLayerDiscriminator` — taming's PatchGAN (3 layers, 64 filters, BatchNorm,
  LeakyReLU 0.2, conv weights N(0, 0.02), BN weights N(1, 0.02)); :func:`hinge_d_loss`;
  :func:`adaptive_weight`, the generator/discriminator balance of
  ``VQLPIPSWithDiscriminator.calculate_adaptive_weight`` (‖∇ L_rec‖ / (‖∇ L_G‖ + 1e-4) at the
  decoder's last layer, clamped to [0, 1e4], times ``disc_weight`` = 0.75).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class _ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.dropout, self.conv2 = _norm(cout), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class _AttnBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        B, C, H, W = h.shape
        q, k, v = (f(h).reshape(B, 1, C, H * W).transpose(-1, -2) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj_out(out)


class _Down(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # LDM: no asymmetric padding in torch conv, must do it ourselves


class _Up(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, *, in_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        blocks: list[nn.Module] = []
        mults = (1, *ch_mult)
        for level in range(len(ch_mult)):
            cin, cout = ch * mults[level], ch * ch_mult[level]
            for _ in range(num_res_blocks):
                blocks.append(_ResnetBlock(cin, cout, dropout))
                cin = cout
            if level != len(ch_mult) - 1:
                blocks.append(_Down(cin))
        self.down = nn.Sequential(*blocks)
        self.mid = nn.Sequential(_ResnetBlock(cin, cin, dropout), _AttnBlock(cin), _ResnetBlock(cin, cin, dropout))
        self.norm_out, self.conv_out = _norm(cin), nn.Conv2d(cin, z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, *, out_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, cin, 3, 1, 1)
        self.mid = nn.Sequential(_ResnetBlock(cin, cin, dropout), _AttnBlock(cin), _ResnetBlock(cin, cin, dropout))
        blocks: list[nn.Module] = []
        for level in reversed(range(len(ch_mult))):
            cout = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResnetBlock(cin, cout, dropout))
                cin = cout
            if level != 0:
                blocks.append(_Up(cin))
        self.up = nn.Sequential(*blocks)
        self.norm_out, self.conv_out = _norm(cin), nn.Conv2d(cin, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """taming ``VectorQuantizer2(n_e, e_dim, beta=0.25, legacy=True)``; see the module docstring."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q with straight-through gradients, the VQ loss, the code indices (B, H, W))."""
        zf = z.permute(0, 2, 3, 1).reshape(-1, self.embed_dim)
        w = self.embedding.weight
        d = zf.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1) - 2 * zf @ w.T
        idx = d.argmin(1)
        zq = self.embedding(idx).view(z.shape[0], z.shape[2], z.shape[3], self.embed_dim).permute(0, 3, 1, 2)
        loss = (zq.detach() - z).pow(2).mean() + self.beta * (zq - z.detach()).pow(2).mean()  # legacy weighting
        zq = z + (zq - z).detach()
        return zq, loss, idx.view(z.shape[0], z.shape[2], z.shape[3])


class VQAutoencoder(nn.Module):
    """VQ-f4 (defaults) or any taming-style VQ autoencoder; images in [−1, 1]."""

    def __init__(self, *, in_channels: int = 3, ch: int = 32, ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 3, embed_dim: int = 3, n_embed: int = 2048, dropout: float = 0.0) -> None:
        super().__init__()
        self.factor = 2 ** (len(ch_mult) - 1)
        self.embed_dim = embed_dim
        self.encoder = Encoder(in_channels=in_channels, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                               z_channels=z_channels, dropout=dropout)
        self.decoder = Decoder(out_channels=in_channels, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                               z_channels=z_channels, dropout=dropout)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.quantize = VectorQuantizer(n_embed, embed_dim)

    def encode_prequant(self, x: torch.Tensor) -> torch.Tensor:
        """h = quant_conv(Enc(x)): the latent the diffusion model runs on (LDM ``VQModelInterface.encode``)."""
        return self.quant_conv(self.encoder(x))

    def decode_latent(self, h: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Images from a pre-quantisation latent: quantised first (LDM ``decode(h, force_not_quantize=False)``)."""
        if quantize:
            h = self.quantize(h)[0]
        return self.decoder(self.post_quant_conv(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zq, qloss, idx = self.quantize(self.encode_prequant(x))
        return self.decoder(self.post_quant_conv(zq)), qloss, idx


class NLayerDiscriminator(nn.Module):
    """taming's PatchGAN discriminator (``n_layers`` strided convs, BatchNorm, LeakyReLU 0.2)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # taming weights_init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float = 0.75) -> torch.Tensor:
    """λ = ‖∇_last L_rec‖ / (‖∇_last L_G‖ + 1e-4), clamped to [0, 1e4], × ``disc_weight`` (no gradient)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return (weight.clamp(0.0, 1e4) * disc_weight).detach()
