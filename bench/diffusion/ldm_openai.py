"""Latent diffusion's plain UNet: ``openaimodel.UNetModel`` without spatial transformers (Rombach et al. 2022,
CompVis/latent-diffusion ``ldm/modules/diffusionmodules/openaimodel.py``), as DisDiff's latent DPM configures
it (ThomasMrY/DisDiff ``configs/latent-diffusion/*-vq-4-16.yaml``: 64 channels × [1, 2, 4, 4], 2 residual
blocks, attention at downsampling factors 1, 2 and 4, 8 heads, ``use_scale_shift_norm``,
``resblock_updown``; 29,422,467 parameters on the 3-channel VQ-f4 latents).

* Residual blocks are LDM's (:class:`bench.diffusion.ldm_unet.ResBlock`: scale-shift norm,
  down/up-sampling inside the block by average pooling / nearest resize).
* :class:`AttentionBlock` is ``AttentionBlock`` with ``QKVAttentionLegacy`` (``legacy = True``,
  ``num_head_channels = -1``): GroupNorm(32), a 1×1 conv to q, k, v laid out head by head
  (heads × [q, k, v] × d), softmax(q·k/√d), a zero-initialised 1×1 conv out, residual. So a
  state dict of the authors' network loads with key renaming only.
* The network splits as PDAE/DisDiff need it: :meth:`OpenAIUNet.features` runs the time
  embedding and the encoder half (the skips), :meth:`OpenAIUNet.decode_features` the middle
  block, the decoder half and the output; :func:`decoder_half` builds a middle block and a
  decoder half of this shape from any residual-block factory (DisDiff's shift decoder builds
  its own from it, :mod:`bench.diffusion.ldm_shift`).

Attention is placed by downsampling factor in LDM; here by *resolution* like the pixel UNet
(``attention_resolutions`` [16, 8, 4] on 16×16 latents is LDM's [1, 2, 4]).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.diffusion.ldm_unet import ResBlock, group_norm, zero_init
from bench.diffusion.unet import timestep_embedding


class AttentionBlock(nn.Module):
    """LDM's ``AttentionBlock`` with the legacy head layout (see the module docstring)."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"AttentionBlock: {channels} channels do not split into num_heads={num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        flat = x.reshape(B, C, H * W)
        qkv = self.qkv(self.norm(flat)).reshape(B, self.num_heads, 3, C // self.num_heads, H * W)
        q, k, v = (qkv[:, :, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(B, C, H * W)
        return (flat + self.proj_out(out)).reshape(B, C, H, W)


class Steps(nn.ModuleList):
    """LDM's ``TimestepEmbedSequential``: residual blocks take the time embedding (and a shift block the code
    embedding too), attention blocks the features only."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, (AttentionBlock, nn.Conv2d)):
                h = layer(h)
            elif cond is not None and getattr(layer, "takes_code", False):
                h = layer(h, emb, cond)
            else:
                h = layer(h, emb)
        return h


#: a residual block factory: (in channels, out channels, up) -> block
BlockFactory = Callable[..., nn.Module]


def decoder_half(arch: dict, skip_channels: Sequence[int], block: BlockFactory
                 ) -> tuple[Steps, nn.ModuleList, nn.Sequential]:
    """(middle block, decoder-half blocks, output layer) of ``openaimodel.UNetModel`` for ``arch``.

    ``skip_channels`` are the encoder half's output channels in order; ``block(cin, cout, up=...)``
    makes each residual block (the frozen UNet's :class:`ResBlock`, DisDiff's shift block).
    """
    mc, mult, heads = arch["model_channels"], arch["channel_mult"], arch["num_heads"]
    side, attention = arch["latent_size"], set(arch["attention_resolutions"])
    skips = list(skip_channels)
    ch = mc * mult[-1]
    res = side // 2 ** (len(mult) - 1)
    middle = Steps([block(ch, ch), AttentionBlock(ch, heads), block(ch, ch)])
    outputs = nn.ModuleList()
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(arch["num_res_blocks"] + 1):
            layers: list[nn.Module] = [block(ch + skips.pop(), mc * m)]
            ch = mc * m
            if res in attention:
                layers.append(AttentionBlock(ch, heads))
            if level and i == arch["num_res_blocks"]:
                layers.append(block(ch, ch, up=True))
                res *= 2
            outputs.append(Steps(layers))
    out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_init(nn.Conv2d(mc, arch["out_channels"], 3, padding=1)))
    return middle, outputs, out


class OpenAIUNet(nn.Module):
    """ε_θ(x_t, t): LDM's ``openaimodel.UNetModel`` (see the module docstring)."""

    def __init__(self, *, in_channels: int, out_channels: int, latent_size: int, model_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 4, 4), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16, 8, 4), num_heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        factor = 2 ** (len(channel_mult) - 1)
        if latent_size % factor:
            raise ValueError(f"OpenAIUNet: side {latent_size} must be divisible by 2^(levels-1) = {factor} "
                             f"for channel_mult={list(channel_mult)}")
        for m in channel_mult:
            if (model_channels * m) % 32 or (model_channels * m) % num_heads:
                raise ValueError(f"OpenAIUNet: {model_channels * m} channels must divide by 32 (GroupNorm) and by "
                                 f"num_heads={num_heads}")
        time_dim = 4 * model_channels
        self.arch = dict(in_channels=in_channels, out_channels=out_channels, latent_size=latent_size,
                         model_channels=model_channels, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                         attention_resolutions=tuple(attention_resolutions), num_heads=num_heads, dropout=dropout,
                         time_dim=time_dim)
        self.time_embed = nn.Sequential(nn.Linear(model_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.input_blocks = nn.ModuleList([Steps([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        chans, ch, res = [model_channels], model_channels, latent_size
        for level, m in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, time_dim, dropout, m * model_channels)]
                ch = m * model_channels
                if res in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                self.input_blocks.append(Steps(layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Steps([ResBlock(ch, time_dim, dropout, ch, down=True)]))
                chans.append(ch)
                res //= 2
        self.skip_channels = tuple(chans)

        def block(cin: int, cout: int, up: bool = False) -> nn.Module:
            return ResBlock(cin, time_dim, dropout, cout, up=up)

        self.middle_block, self.output_blocks, self.out = decoder_half(self.arch, chans, block)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """The time embedding and the encoder half: (its last features, every block's output, {"t": embedding})."""
        emb = self.time_embed(timestep_embedding(t, self.arch["model_channels"]))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        return h, hs, {"t": emb}

    def decode_features(self, h: torch.Tensor, skips: list[torch.Tensor], conds: dict[str, torch.Tensor]) -> torch.Tensor:
        """The middle block, the decoder half (reading ``skips`` last first) and the output layer."""
        emb = conds["t"]
        h = self.middle_block(h, emb)
        for i, block in enumerate(self.output_blocks):
            h = block(torch.cat([h, skips[-1 - i]], dim=1), emb)
        return self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decode_features(*self.features(x, t))
