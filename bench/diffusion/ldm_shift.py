"""DisDiff's shift decoder on latent diffusion's UNet (ThomasMrY/DisDiff
``ldm/modules/diffusionmodules/openaimodel_shift.py: UNetModel`` with ``seprate_decoder = True``).

The gradient field G_ψ(x_t, z^c, t) of one latent unit: a new middle block and decoder half
shaped as the frozen :class:`~bench.diffusion.ldm_openai.OpenAIUNet`'s (``shift_middle_block``,
``shift_output_blocks``, ``shift_out``), reading the frozen encoder half's features and skips.
Its residual blocks are ``ResBlockShift``: after the time embedding's scale-shift of the
second GroupNorm, the code embedding gives a second one,

    h ← (GN(h)(1 + s_t) + b_t)(1 + s_z) + b_z,  (s_z, b_z) = Linear(SiLU(repre_embed(z^c)))

with ``repre_embed`` = Linear(unit width → time width). Attention blocks are plain
self-attention (the code acts through the residual blocks only). The output conv starts at
zero, so G ≡ 0 at initialisation. Dropout and heads are the shift decoder's own (the shipped
configs: dropout 0, 8 heads).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.diffusion.ldm_openai import OpenAIUNet, decoder_half
from bench.diffusion.ldm_unet import ResBlock


class ResBlockShift(ResBlock):
    """LDM's residual block with a second scale-shift from the code embedding (``ResBlockShift``)."""

    takes_code = True

    def __init__(self, cin: int, emb_dim: int, dropout: float, cout: int | None = None, up: bool = False) -> None:
        super().__init__(cin, emb_dim, dropout, cout, up=up)
        self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * (cout or cin)))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h, x = self._input(x, emb)
        if cond is not None:
            c_scale, c_shift = self.cond_emb_layers(cond).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + c_scale) + c_shift
        return self.skip(x) + self.out_rest(h)


class LDMShiftDecoder(nn.Module):
    """G_ψ(x_t, z^c, t) over a frozen :class:`OpenAIUNet` (see the module docstring).

    ``forward(h, skips, time_emb, code)`` has the signature of the pixel-space
    :class:`bench.diffusion.unet.ShiftDecoder`, so PDAE/DisDiff drive either.
    """

    def __init__(self, unet: OpenAIUNet, code_dim: int, *, dropout: float | None = None,
                 num_heads: int | None = None) -> None:
        super().__init__()
        arch = dict(unet.arch)
        if dropout is not None:
            arch["dropout"] = dropout
        if num_heads is not None:
            arch["num_heads"] = num_heads
        time_dim = arch["time_dim"]
        self.repre_embed = nn.Linear(code_dim, time_dim)

        def block(cin: int, cout: int, up: bool = False) -> nn.Module:
            return ResBlockShift(cin, time_dim, arch["dropout"], cout, up=up)

        self.shift_middle_block, self.shift_output_blocks, self.shift_out = decoder_half(arch, unet.skip_channels, block)

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], time_emb: torch.Tensor,
                code: torch.Tensor) -> torch.Tensor:
        cond = self.repre_embed(code)
        h = self.shift_middle_block(h, time_emb, cond)
        for i, block in enumerate(self.shift_output_blocks):
            h = block(torch.cat([h, skips[-1 - i]], dim=1), time_emb, cond)
        return self.shift_out(h)
