"""DiffAE's latent DDPM network: an MLP with skip connections, ε_ω(z_t, t) for codes z.

Preechakul et al. 2022, §3.3 and App. B ("latent DDIM", Table 8): ``num_layers`` linear
layers of width ``hidden``; every layer after the first also receives the input z_t
concatenated to its input ("skip"); each hidden layer is Linear → scale by
(``condition_bias`` + Linear(SiLU(t_emb))) → LayerNorm → SiLU → dropout; the last layer is
linear. The time embedding is a 64-dim sinusoid through Linear–SiLU–Linear to the code
width. Follows phizaz/diffae ``model/latentnet.py: MLPSkipNet`` (``skip_layers = 1..L−1``,
``use_norm=True``, ``condition_bias=1``, He-normal init of the SiLU layers); the paper's
CelebA-64 setting is 10 layers of width 2048.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.diffusion.unet import timestep_embedding


class _Layer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, cond_dim: int, *, hidden: bool, condition_bias: float, dropout: float) -> None:
        super().__init__()
        self.hidden = hidden
        self.condition_bias = condition_bias
        self.linear = nn.Linear(in_dim, out_dim)
        if hidden:
            self.cond = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, out_dim))
            self.norm = nn.LayerNorm(out_dim)
            self.dropout = nn.Dropout(dropout)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.kaiming_normal_(module.weight, a=0, nonlinearity="relu")

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if not self.hidden:
            return x
        x = x * (self.condition_bias + self.cond(cond))
        return self.dropout(nn.functional.silu(self.norm(x)))


class LatentMLP(nn.Module):
    """ε_ω(z_t, t): (B, dim) codes and (B,) timesteps → (B, dim) predicted noise."""

    def __init__(self, dim: int, hidden: int = 2048, num_layers: int = 10, time_embed_channels: int = 64,
                 condition_bias: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"LatentMLP: num_layers must be >= 2, got {num_layers}")
        self.time_embed_channels = time_embed_channels
        self.time_embed = nn.Sequential(nn.Linear(time_embed_channels, dim), nn.SiLU(), nn.Linear(dim, dim))
        layers = []
        for i in range(num_layers):
            last = i == num_layers - 1
            in_dim = dim if i == 0 else hidden + dim  # layers 1.. get z_t concatenated (the skips)
            layers.append(_Layer(in_dim, dim if last else hidden, dim, hidden=not last,
                                 condition_bias=condition_bias, dropout=dropout))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = self.time_embed(timestep_embedding(t, self.time_embed_channels))
        h = x
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = torch.cat([h, x], dim=1)
            h = layer(h, cond)
        return h
