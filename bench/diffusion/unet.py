"""The UNet denoiser ε_θ(x_t, t, z) and the semantic encoders built from its blocks.

Architecture of DDPM's UNet (Ho et al. 2020, App. B, after PixelCNN++): a 3×3 head conv,
``len(channel_mult)`` resolution levels of ``num_res_blocks`` residual blocks (GroupNorm,
SiLU, 3×3 convs, dropout) with self-attention at the feature-map sides listed in
``attention_resolutions``, a middle of two residual blocks (the first with attention), a
mirrored up path with skip connections, and GroupNorm–SiLU–3×3 conv to ε̂. The timestep
enters through a sinusoidal embedding (Vaswani et al. 2017, §3.5) and an MLP.

Conditioning by **adaptive group normalisation** (AdaGN), with two layouts:

* ``"joint"`` — DiffAE (Preechakul et al. 2022, eq. 5): one normalisation per block,
  ``AdaGN(h, t, z) = (1 + z_s) ⊙ ((1 + t_s) ⊙ GN(h) + t_b)``, with (t_s, t_b) an affine map
  of the time embedding and z_s an affine map of SiLU(z) (phizaz/diffae
  ``model/blocks.py: apply_conditions``, ``TimeStyleSeperateEmbed``: z enters directly).
* ``"separate"`` — InfoDiffusion's reference (isjakewong/InfoDiffusion, dev branch,
  ``modules.py: AuxResBlock``): z is first mapped to the time-embedding width
  (``fc_a``); each block normalises three times, modulating with (t_s, t_b) after the
  first, with (z_s, z_b) after the second, and not at all after the third, each followed
  by SiLU, dropout and a 3×3 conv. Without z it is the reference's 3-conv ``ResBlock``.
* ``"joint-shift"`` — PDAE's and DisDiff's shift blocks (ckczzj/PDAE ``model/module.py:
  ResBlockShift``; ThomasMrY/DisDiff ``openaimodel_shift.py: ResBlockShift``): one
  normalisation, ``(1 + z_s) ⊙ ((1 + t_s) ⊙ GN(h) + t_b) + z_b``, z with scale *and* shift.
* ``"bias"`` — DDPM's original block and DRL's conditioning (Mittal et al., App. D: "each
  channel is provided with a conditional bias determined by the representation and time
  embedding"): after the first conv, ``h + Dense_t(SiLU(t_emb)) + Dense_z(SiLU(z_emb))``,
  with z_emb = a 4-layer MLP of z whose last layer starts at zero (so before training z
  adds nothing), then GN, SiLU, dropout, conv.

The time input is encoded sinusoidally (DDPM) or by Gaussian Fourier features
(``time_encoding = "fourier"``, score_sde's NCSN++: fixed random frequencies of scale 16,
fed log σ(t) by the VE-SDE methods).

A block without time embedding and without z (``time_conditioned=False``) is a plain
pre-activation residual block: the semantic encoders use it.

The last conv of every residual block, the attention output projection and the output
conv start at zero (improved-diffusion's ``zero_module``, DiffAE's
``resnet_use_zero_module``), so every block starts as the identity.

Encoders (z = Enc(x_0)):

* :class:`HalfUNetEncoder` — DiffAE's semantic encoder (``BeatGANsEncoderModel``, pool
  ``adaptivenonzero``): the down path and middle of a UNet, GroupNorm, SiLU, global
  average pooling and a 1×1 conv to the code. Its blocks are DiffAE's unconditioned ones:
  GroupNorm, SiLU and *one* 3×3 conv plus the skip, no dropout (``use_condition=False``
  builds no ``out_layers``).
* :class:`UNetMapEncoder` — InfoDiffusion's reference ``Encoder``: a full UNet without
  time conditioning that outputs a one-channel map, flattened and mapped linearly (H·W →
  latent) to the code. :class:`UNetMapDecoder` is its baseline decoder (code → Linear →
  image-shaped map → time-free UNet), used by the autoencoder family's ``architecture =
  "infodiffusion"``.

Resampling (``resample``): by default (``"conv"``) down/up-sampling is a stride-2 conv /
nearest-neighbour upsampling followed by a 3×3 conv (DDPM, InfoDiffusion); ``"resblock"``
builds the BigGAN-style blocks of PDAE's and DiffAE's reference UNets and DiffAE's encoder
(improved-diffusion's ``resblock_updown=True``: a residual block with the level's
conditioning whose GroupNorm–SiLU output and skip path are 2×2 average-pooled / nearest-
upsampled before its first conv; ckczzj/PDAE ``model/module.py: ResBlock(down=True)``,
phizaz/diffae ``model/blocks.py: ResBlock``). Only ``"resblock"`` is weight-compatible with
the authors' checkpoints (:mod:`bench.released`). Attention is single-head by default and
uses ``F.scaled_dot_product_attention`` with q, k, v split before the heads (the reference's
``QKVAttention``; their default ``QKVAttentionLegacy`` order differs only for several heads,
which the checkpoint converters permute).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = ("joint", "separate", "joint-shift", "bias")
#: how the UNet halves and doubles its side: ``"conv"`` a stride-2 3×3 conv / nearest + 3×3 conv (DDPM,
#: InfoDiffusion); ``"resblock"`` a residual block that resamples inside (BigGAN, improved-diffusion's
#: ``resblock_updown=True``; PDAE ``model/module.py: ResBlock(up/down)``, DiffAE ``model/blocks.py``)
RESAMPLES = ("conv", "resblock")
TIME_ENCODINGS = ("sinusoidal", "fourier")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim): [cos(t ω_i), sin(t ω_i)], ω_i = max_period^(−i/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    if channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels are not divisible by norm_groups={groups}")
    return nn.GroupNorm(groups, channels)


class _Stage(nn.Module):
    """GroupNorm → modulation by the given conditions → SiLU → dropout → 3×3 conv."""

    def __init__(self, channels: int, groups: int, dropout: float, modulations: dict[str, tuple[int, bool]]) -> None:
        super().__init__()
        self.norm = _group_norm(groups, channels)
        # name -> projection SiLU+Linear(in_dim → channels or 2·channels); shift when the flag is set
        self.shifts = {name: shift for name, (_, shift) in modulations.items()}
        self.proj = nn.ModuleDict({
            name: nn.Sequential(nn.SiLU(), nn.Linear(in_dim, channels * (2 if shift else 1)))
            for name, (in_dim, shift) in modulations.items()
        })
        self.rest = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, h: torch.Tensor, conds: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.norm(h)
        for name, proj in self.proj.items():
            out = proj(conds[name]).to(h.dtype)[:, :, None, None]
            if self.shifts[name]:
                scale, shift = out.chunk(2, dim=1)
                h = h * (1 + scale) + shift
            else:
                h = h * (1 + out)
        return self.rest(h)


class ResBlock(nn.Module):
    """Residual block with AdaGN conditioning on the time embedding ("t") and the code ("z")."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        time_dim: int | None,
        cond_dim: int | None,
        dropout: float,
        groups: int,
        layout: str = "joint",
        attention: bool = False,
        num_heads: int = 1,
        single_conv: bool = False,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"ResBlock: layout must be one of {LAYOUTS}, got {layout!r}")
        if single_conv and (time_dim or cond_dim):
            raise ValueError("ResBlock: single_conv blocks take no time embedding and no code")
        if resample not in (None, "down", "up"):
            raise ValueError(f"ResBlock: resample must be None, 'down' or 'up', got {resample!r}")
        if resample and (in_channels != out_channels or attention):
            raise ValueError("ResBlock: a resampling block keeps its channels and has no attention")
        #: ``"down"`` (2×2 average pooling) or ``"up"`` (nearest ×2) of both paths between the input's
        #: GroupNorm–SiLU and the first conv (improved-diffusion's ``resblock_updown``), or None
        self.resample = resample
        self.in_layers = nn.Sequential(
            _group_norm(groups, in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        stages: list[dict[str, tuple[int, bool]]]
        self.biases = nn.ModuleDict()
        if layout == "bias" and not single_conv:
            for name, dim in (("t", time_dim), ("z", cond_dim)):
                if dim:
                    self.biases[name] = nn.Sequential(nn.SiLU(), nn.Linear(dim, out_channels))
                    nn.init.zeros_(self.biases[name][1].bias)
            stages = [{}]
        elif single_conv:  # DiffAE's unconditioned encoder block: in_layers only (model/blocks.py, use_condition=False)
            stages = []
        elif layout in ("joint", "joint-shift"):
            mods: dict[str, tuple[int, bool]] = {}
            if time_dim:
                mods["t"] = (time_dim, True)
            if cond_dim:
                mods["z"] = (cond_dim, layout == "joint-shift")
            stages = [mods]
        else:
            stages = ([{"t": (time_dim, True)}] if time_dim else []) + ([{"z": (cond_dim, True)}] if cond_dim else []) + [{}]
        self.stages = nn.ModuleList(_Stage(out_channels, groups, dropout, m) for m in stages)
        if stages:
            _zero(self.stages[-1].rest[-1])
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.attention = AttentionBlock(out_channels, groups, num_heads) if attention else None

    def forward(self, x: torch.Tensor, conds: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.resample:
            h = _resample(self.in_layers[1](self.in_layers[0](x)), self.resample)
            x = _resample(x, self.resample)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers(x)
        for name, proj in self.biases.items():
            h = h + proj(conds[name]).to(h.dtype)[:, :, None, None]
        for stage in self.stages:
            h = stage(h, conds)
        h = self.skip(x) + h
        return self.attention(h) if self.attention is not None else h


def _resample(x: torch.Tensor, direction: str) -> torch.Tensor:
    """2×2 average pooling (``"down"``) or nearest-neighbour ×2 (``"up"``), the resampling blocks' parameter-free ops."""
    return F.avg_pool2d(x, 2) if direction == "down" else F.interpolate(x, scale_factor=2.0, mode="nearest")


def _check_resample(resample: str, owner: str) -> None:
    if resample not in RESAMPLES:
        raise ValueError(f"{owner}: resample must be one of {RESAMPLES}, got {resample!r}")


def _downsampler(channels: int, resample: str, block_kw: dict) -> nn.Module:
    if resample == "resblock":
        return ResBlock(channels, channels, resample="down", **block_kw)
    return Downsample(channels)


def _upsampler(channels: int, resample: str, block_kw: dict) -> nn.Module:
    if resample == "resblock":
        return ResBlock(channels, channels, resample="up", **block_kw)
    return Upsample(channels)


def _reads_skip(block: nn.Module) -> bool:
    """Whether an up-path block takes the next skip feature (a residual block that does not resample)."""
    return isinstance(block, ResBlock) and block.resample is None


class AttentionBlock(nn.Module):
    """Self-attention over the H·W positions with a residual connection (DDPM's attention block)."""

    def __init__(self, channels: int, groups: int, num_heads: int = 1) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"AttentionBlock: {channels} channels are not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = _group_norm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def check_side(image_size: int, channel_mult: Sequence[int], owner: str) -> None:
    """The side must halve ``len(channel_mult) − 1`` times exactly."""
    factor = 2 ** (len(channel_mult) - 1)
    if image_size % factor:
        raise ValueError(
            f"{owner}: image side {image_size} must be divisible by 2^(levels-1) = {factor} "
            f"for channel_mult={list(channel_mult)}"
        )


class _DownPath(nn.Module):
    """Head conv, the down levels and the middle blocks; returns the skip features too."""

    def __init__(self, in_channels: int, image_size: int, base_channels: int, channel_mult: Sequence[int],
                 num_res_blocks: int, attention_resolutions: Sequence[int], block_kw: dict,
                 resample: str = "conv") -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.skip_channels = [base_channels]
        now, side = base_channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out = base_channels * mult
                self.blocks.append(ResBlock(now, out, attention=side in attention_resolutions, **block_kw))
                now = out
                self.skip_channels.append(now)
            if level != len(channel_mult) - 1:
                self.blocks.append(_downsampler(now, resample, block_kw))
                self.skip_channels.append(now)
                side //= 2
        self.middle = _middle(now, block_kw)
        self.out_channels, self.out_side = now, side

    def encode(self, x: torch.Tensor, conds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Head and down levels: the features entering the middle blocks, and the skip features."""
        h = self.head(x)
        skips = [h]
        for block in self.blocks:
            h = block(h, conds) if isinstance(block, ResBlock) else block(h)
            skips.append(h)
        return h, skips

    def forward(self, x: torch.Tensor, conds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, skips = self.encode(x, conds)
        for block in self.middle:
            h = block(h, conds)
        return h, skips


def _middle(channels: int, block_kw: dict) -> nn.ModuleList:
    """The two middle residual blocks, the first followed by attention."""
    return nn.ModuleList([
        ResBlock(channels, channels, attention=True, **block_kw),
        ResBlock(channels, channels, attention=False, **block_kw),
    ])


def _up_path(skip_channels: Sequence[int], channels: int, side: int, base_channels: int, channel_mult: Sequence[int],
             num_res_blocks: int, attention_resolutions: Sequence[int], block_kw: dict,
             resample: str = "conv") -> tuple[nn.ModuleList, int]:
    """The decoder half: per level ``num_res_blocks + 1`` blocks reading one skip each, then an upsample."""
    skips = list(skip_channels)
    now, up = channels, nn.ModuleList()
    for level, mult in reversed(list(enumerate(channel_mult))):
        for _ in range(num_res_blocks + 1):
            out = base_channels * mult
            up.append(ResBlock(skips.pop() + now, out, attention=side in attention_resolutions, **block_kw))
            now = out
        if level != 0:
            up.append(_upsampler(now, resample, block_kw))
            side *= 2
    return up, now


def _run_up(up: nn.ModuleList, h: torch.Tensor, skips: list[torch.Tensor], conds: dict[str, torch.Tensor]) -> torch.Tensor:
    skips = list(skips)
    for block in up:
        if _reads_skip(block):
            h = block(torch.cat([h, skips.pop()], dim=1), conds)
        else:
            h = block(h, conds) if isinstance(block, ResBlock) else block(h)
    return h


class GaussianFourierProjection(nn.Module):
    """[sin 2π x W, cos 2π x W] with fixed W ~ N(0, scale²) (score_sde ``layerspp.GaussianFourierProjection``)."""

    def __init__(self, embedding_size: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("W", torch.randn(embedding_size) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x.float()[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def code_mlp(in_dim: int, width: int, layers: int = 4) -> nn.Sequential:
    """DRL's code path (App. D: "four dense layers map the latent code back"): the last layer starts at zero."""
    mods: list[nn.Module] = [nn.Linear(in_dim, width)]
    for _ in range(layers - 1):
        mods += [nn.SiLU(), nn.Linear(width, width)]
    _zero(mods[-1])
    return nn.Sequential(*mods)


class UNet(nn.Module):
    """ε_θ(x_t, t[, z]): the denoiser; ``cond_dim`` > 0 adds AdaGN conditioning on a code z.

    ``time_conditioned=False`` drops the timestep (used by :class:`UNetMapEncoder`).
    ``time_embed_dim`` defaults to 4 × ``base_channels`` (DDPM; DiffAE uses 512).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        image_size: int,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        norm_groups: int = 32,
        time_embed_dim: int | None = None,
        cond_dim: int | None = None,
        cond_layout: str = "joint",
        time_conditioned: bool = True,
        num_heads: int = 1,
        time_encoding: str = "sinusoidal",
        resample: str = "conv",
    ) -> None:
        super().__init__()
        check_side(image_size, channel_mult, "UNet")
        _check_resample(resample, "UNet")
        if cond_layout not in LAYOUTS:
            raise ValueError(f"UNet: cond_layout must be one of {LAYOUTS}, got {cond_layout!r}")
        if time_encoding not in TIME_ENCODINGS:
            raise ValueError(f"UNet: time_encoding must be one of {TIME_ENCODINGS}, got {time_encoding!r}")
        self.time_encoding = time_encoding
        self.base_channels = base_channels
        self.time_conditioned = time_conditioned
        self.cond_dim = cond_dim or None
        time_dim = (time_embed_dim or 4 * base_channels) if time_conditioned else None
        if time_dim:
            if time_encoding == "fourier":
                self.fourier = GaussianFourierProjection(base_channels // 2)
            self.time_embed = nn.Sequential(nn.Linear(2 * (base_channels // 2) if time_encoding == "fourier"
                                                      else base_channels, time_dim),
                                            nn.SiLU(), nn.Linear(time_dim, time_dim))
        # "separate" maps z to the time width once (InfoDiffusion's fc_a); "joint" feeds z as is (DiffAE);
        # "bias" through DRL's 4-layer code MLP
        if self.cond_dim and cond_layout == "bias":
            width = time_dim or 4 * base_channels
            self.cond_embed = code_mlp(self.cond_dim, width)
            block_cond = width
        elif self.cond_dim and cond_layout == "separate":
            width = time_dim or 4 * base_channels
            self.cond_embed: nn.Module = nn.Linear(self.cond_dim, width)
            block_cond = width
        else:
            self.cond_embed = nn.Identity()
            block_cond = self.cond_dim
        block_kw = dict(time_dim=time_dim, cond_dim=block_cond, dropout=dropout, groups=norm_groups,
                        layout=cond_layout, num_heads=num_heads)
        self.down = _DownPath(in_channels, image_size, base_channels, channel_mult, num_res_blocks,
                              attention_resolutions, block_kw, resample)
        self.up, now = _up_path(self.down.skip_channels, self.down.out_channels, self.down.out_side, base_channels,
                                channel_mult, num_res_blocks, attention_resolutions, block_kw, resample)
        self.out = nn.Sequential(_group_norm(norm_groups, now), nn.SiLU(), _zero(nn.Conv2d(now, out_channels, 3, padding=1)))
        #: what a decoder half mirroring this one needs (:class:`ShiftDecoder`)
        self.arch = dict(base_channels=base_channels, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                         attention_resolutions=tuple(attention_resolutions), dropout=dropout, norm_groups=norm_groups,
                         num_heads=num_heads, time_dim=time_dim, out_channels=out_channels, resample=resample)

    def conditions(self, t: torch.Tensor | None, z: torch.Tensor | None) -> dict[str, torch.Tensor]:
        conds: dict[str, torch.Tensor] = {}
        if self.time_conditioned:
            if t is None:
                raise ValueError("UNet: this network is time conditioned; pass the timesteps t")
            features = self.fourier(t) if self.time_encoding == "fourier" else timestep_embedding(t, self.base_channels)
            conds["t"] = self.time_embed(features)
        if self.cond_dim:
            if z is None:
                raise ValueError(f"UNet: this network is conditioned on a code z of dimension {self.cond_dim}; pass z")
            conds["z"] = self.cond_embed(z)
        elif z is not None:
            raise ValueError("UNet: this network has no code conditioning (cond_dim=None) but z was given")
        return conds

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode_features(*self.features(x, t, z))

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None, z: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """The encoder half: (features entering the middle blocks, skip features, conditions)."""
        conds = self.conditions(t, z)
        h, skips = self.down.encode(x, conds)
        return h, skips, conds

    def decode_features(self, h: torch.Tensor, skips: list[torch.Tensor], conds: dict[str, torch.Tensor]) -> torch.Tensor:
        """Middle blocks, the decoder half and the output layer on the results of :meth:`features`."""
        for block in self.down.middle:
            h = block(h, conds)
        return self.out(_run_up(self.up, h, skips, conds))


class ShiftDecoder(nn.Module):
    """A gradient estimator G(x_t, z, t) over a frozen UNet's encoder half (PDAE, DisDiff).

    PDAE (Zhang et al. 2022, §3.3, Fig. 2; ckczzj/PDAE ``model/shift_unet.py: ShiftUNet``):
    new, trainable middle blocks, decoder-half blocks and output layer, shaped as the frozen
    UNet's, read the frozen encoder half's skip features and time embedding; the code enters
    through ``code_embed`` (PDAE's ``label_emb``, DisDiff's ``repre_embed``: Linear(z → time
    width)) and the ``"joint-shift"`` AdaGN of every block. The output conv starts at zero,
    so G ≡ 0 at initialisation and the model starts as the frozen DPM.
    """

    def __init__(self, unet: UNet, code_dim: int, *, dropout: float | None = None, num_heads: int | None = None) -> None:
        """``dropout`` and ``num_heads`` default to the frozen UNet's (PDAE); DisDiff's shift UNet sets its own."""
        super().__init__()
        arch = unet.arch
        if not arch["time_dim"]:
            raise ValueError("ShiftDecoder: the frozen UNet must be time conditioned")
        time_dim = arch["time_dim"]
        self.code_embed = nn.Linear(code_dim, time_dim)
        block_kw = dict(time_dim=time_dim, cond_dim=time_dim, dropout=arch["dropout"] if dropout is None else dropout,
                        groups=arch["norm_groups"], layout="joint-shift",
                        num_heads=arch["num_heads"] if num_heads is None else num_heads)
        self.middle = _middle(unet.down.out_channels, block_kw)
        self.up, now = _up_path(unet.down.skip_channels, unet.down.out_channels, unet.down.out_side,
                                arch["base_channels"], arch["channel_mult"], arch["num_res_blocks"],
                                arch["attention_resolutions"], block_kw, arch["resample"])
        self.out = nn.Sequential(_group_norm(arch["norm_groups"], now), nn.SiLU(),
                                 _zero(nn.Conv2d(now, arch["out_channels"], 3, padding=1)))

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], time_emb: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """G from the frozen encoder half's ``h`` and ``skips`` (:meth:`UNet.features`), a time embedding and a code."""
        conds = {"t": time_emb, "z": self.code_embed(code)}
        for block in self.middle:
            h = block(h, conds)
        return self.out(_run_up(self.up, h, skips, conds))


class HalfUNetEncoder(nn.Module):
    """DiffAE's semantic encoder: UNet down path + middle, GN, SiLU, global mean pool, 1×1 conv → z."""

    def __init__(self, *, in_channels: int, image_size: int, out_dim: int, base_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 4, 8, 8), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16,), dropout: float = 0.1, norm_groups: int = 32,
                 num_heads: int = 1, resample: str = "conv") -> None:
        super().__init__()
        check_side(image_size, channel_mult, "HalfUNetEncoder")
        _check_resample(resample, "HalfUNetEncoder")
        block_kw = dict(time_dim=None, cond_dim=None, dropout=dropout, groups=norm_groups, layout="joint",
                        num_heads=num_heads, single_conv=True)
        self.down = _DownPath(in_channels, image_size, base_channels, channel_mult, num_res_blocks,
                              attention_resolutions, block_kw, resample)
        ch = self.down.out_channels
        self.out = nn.Sequential(_group_norm(norm_groups, ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Conv2d(ch, out_dim, 1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.down(x, {})
        return self.out(h)


class UNetMapEncoder(nn.Module):
    """InfoDiffusion's reference encoder: a time-free UNet → one-channel map → Linear(H·W → z)."""

    def __init__(self, *, in_channels: int, image_size: int, out_dim: int, base_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 4, 8), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16,), dropout: float = 0.1, norm_groups: int = 32,
                 num_heads: int = 1, resample: str = "conv") -> None:
        super().__init__()
        self.unet = UNet(in_channels=in_channels, out_channels=1, image_size=image_size, base_channels=base_channels,
                         channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                         attention_resolutions=attention_resolutions, dropout=dropout, norm_groups=norm_groups,
                         time_conditioned=False, num_heads=num_heads, resample=resample)
        # the reference initialises its output conv with gain 1e-5, not 0: a zero map would give
        # every image the same code, and the linear map below would get no gradient
        nn.init.xavier_uniform_(self.unet.out[-1].weight, gain=1e-5)
        self.fc = nn.Linear(image_size * image_size, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.unet(x).flatten(1))


class UNetMapDecoder(nn.Module):
    """InfoDiffusion's reference baseline ``Decoder``: Linear(z → C·H·W) → reshape → time-free UNet → image.

    isjakewong/InfoDiffusion ``models.py: Decoder`` (main and dev branches): the code is mapped
    linearly to an image-shaped tensor, which a UNet of the encoder's shape (no time
    embedding) turns into the reconstruction; the output conv starts with xavier gain 1e-5
    as the reference's (our blocks' last convs start at zero, the reference's at gain 1e-5).
    """

    def __init__(self, *, out_channels: int, image_size: int, in_dim: int, base_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 4, 8), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16,), dropout: float = 0.1, norm_groups: int = 32,
                 num_heads: int = 1) -> None:
        super().__init__()
        self.shape = (out_channels, image_size, image_size)
        self.fc = nn.Linear(in_dim, out_channels * image_size * image_size)
        self.unet = UNet(in_channels=out_channels, out_channels=out_channels, image_size=image_size,
                         base_channels=base_channels, channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                         attention_resolutions=attention_resolutions, dropout=dropout, norm_groups=norm_groups,
                         time_conditioned=False, num_heads=num_heads)
        nn.init.xavier_uniform_(self.unet.out[-1].weight, gain=1e-5)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.unet(self.fc(z).view(z.shape[0], *self.shape))


ENCODERS = {"half_unet": HalfUNetEncoder, "unet_map": UNetMapEncoder}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
