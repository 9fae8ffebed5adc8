"""Latent diffusion's UNet with spatial-transformer cross-attention (Rombach et al. 2022, ``openaimodel.py``
with ``use_spatial_transformer=True``), as EncDiff configures it (SelenaGeRuiqi/EncDiff 596a29d,
``configs/latent-diffusion/*-vq-4-16-encdiff.yaml``, ``openaimodel_enc.py``, ``attention.py``).

* ResBlocks with scale-shift norm (``use_scale_shift_norm``): GN, SiLU, conv; the time
  embedding gives (scale, shift) of the second GN; SiLU, dropout, a zero-initialised conv;
  down/up-sampling *inside* residual blocks (``resblock_updown``: average-pool / nearest
  resize of both paths before the first conv).
* After every residual block at a downsampling factor listed in ``attention_ds`` (EncDiff:
  1, 2, 4) and in the middle block: a :class:`SpatialTransformer` — GroupNorm(32, eps 1e-6),
  1×1 conv in, one :class:`BasicTransformerBlock` (pre-LayerNorm self-attention,
  pre-LayerNorm cross-attention whose keys and values come from the conditioning tokens,
  pre-LayerNorm GEGLU feed-forward of width 4·d, each residual), a zero-initialised 1×1 conv
  out, residual. ``num_heads`` heads of width channels / heads (``num_head_channels = -1``).
  Attention uses ``torch.nn.functional.scaled_dot_product_attention``.
* Time embedding: sinusoidal features of width ``model_channels`` → Linear → SiLU → Linear
  (4·model_channels).
* ``conditioning = "adagn"`` (EncDiff's ablation "w/ AdaGN"): the tokens, flattened, are
  mapped linearly and added to the time embedding, so they act through the scale-shift norms;
  the transformers then attend to the image features only (LDM's ``context=None``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.diffusion.unet import timestep_embedding

CONDITIONINGS = ("crossattn", "adagn")


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-5)  # openaimodel normalization(): GroupNorm32(32, ch)


def zero_init(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, cin: int, emb_dim: int, dropout: float, cout: int | None = None, up: bool = False,
                 down: bool = False) -> None:
        super().__init__()
        cout = cout or cin
        self.in_layers = nn.Sequential(group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.up, self.down = up, down
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.out_norm = group_norm(cout)
        self.out_rest = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_init(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip = nn.Identity() if cout == cin else nn.Conv2d(cin, cout, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def _input(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the time-modulated features before the output layers, the resampled input for the skip)."""
        if self.up or self.down:
            h = self.in_layers[:-1](x)
            h, x = self._resample(h), self._resample(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        return self.out_norm(h) * (1 + scale) + shift, x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h, x = self._input(x, emb)
        return self.skip(x) + self.out_rest(h)


class _Attention(nn.Module):
    """LDM ``CrossAttention``: q from x, k and v from the context (x itself when there is none)."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        inner, context_dim = heads * dim_head, context_dim or dim
        self.heads = heads
        #: when a list, every forward appends its attention weights averaged over heads, (B, N, M)
        self.record: list[torch.Tensor] | None = None
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        B, N, _ = x.shape
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        split = lambda t: t.reshape(B, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v).to(q.dtype)
        if self.record is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # the same attention, with its weights kept (for EncDiff's attention-map figure)
            weights = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
            self.record.append(weights.mean(1).detach())
            out = weights @ v
        return self.to_out(out.transpose(1, 2).reshape(B, N, -1))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn1 = _Attention(dim, heads, dim_head, None, dropout)
        self.attn2 = _Attention(dim, heads, dim_head, context_dim, dropout)
        self.ff_proj = nn.Linear(dim, 4 * dim * 2)  # GEGLU
        self.ff_out = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        h, gate = self.ff_proj(self.norm3(x)).chunk(2, dim=-1)
        return self.ff_out(h * F.gelu(gate)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int | None, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.block = BasicTransformerBlock(inner, heads, dim_head, context_dim, dropout)
        self.proj_out = zero_init(nn.Conv2d(inner, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x))
        h = h.flatten(2).transpose(1, 2)
        h = self.block(h, context)
        h = h.transpose(1, 2).reshape(B, -1, H, W)
        return x + self.proj_out(h)


class _Seq(nn.ModuleList):
    """A TimestepEmbedSequential: residual blocks take the embedding, transformers the context."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            else:
                h = layer(h)
        return h


class CrossAttentionUNet(nn.Module):
    """ε_θ(x_t, t, tokens): see the module docstring; ``tokens`` (B, n_tokens, context_dim)."""

    def __init__(self, *, in_channels: int, out_channels: int, model_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 4, 4), num_res_blocks: int = 2,
                 attention_ds: Sequence[int] = (1, 2, 4), num_heads: int = 8, context_dim: int = 16,
                 n_tokens: int = 20, dropout: float = 0.0, conditioning: str = "crossattn") -> None:
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"CrossAttentionUNet: conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        for mult in channel_mult:
            if (model_channels * mult) % 32 or (model_channels * mult) % num_heads:
                raise ValueError(f"CrossAttentionUNet: {model_channels * mult} channels must divide by 32 (GroupNorm) "
                                 f"and by num_heads={num_heads}")
        self.model_channels, self.conditioning, self.context_dim = model_channels, conditioning, context_dim
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        if conditioning == "adagn":
            self.token_embed = nn.Linear(n_tokens * context_dim, emb)
        ctx = context_dim if conditioning == "crossattn" else None

        def transformer(ch: int) -> SpatialTransformer:
            return SpatialTransformer(ch, num_heads, ch // num_heads, ctx, dropout)

        self.input_blocks = nn.ModuleList([_Seq([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        chans, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, dropout, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_ds:
                    layers.append(transformer(ch))
                self.input_blocks.append(_Seq(layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(_Seq([ResBlock(ch, emb, dropout, ch, down=True)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = _Seq([ResBlock(ch, emb, dropout), transformer(ch), ResBlock(ch, emb, dropout)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, dropout, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_ds:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb, dropout, ch, up=True))
                    ds //= 2
                self.output_blocks.append(_Seq(layers))
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_init(nn.Conv2d(model_channels, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        context: torch.Tensor | None = tokens
        if self.conditioning == "adagn":
            emb = emb + self.token_embed(tokens.flatten(1))
            context = None
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)
