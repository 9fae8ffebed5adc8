"""EncDiff (Yang et al. 2024, "Diffusion Model with Cross Attention as an Inductive Bias for
Disentanglement"; official code SelenaGeRuiqi/EncDiff, first commit 596a29d).

**Model.** An image encoder E (DisDiff's ``Encoder4``: four 4×4 stride-2 convs with
BatchNorm — the third without its ReLU, reproduced — two residual blocks and a linear map
to ``n_units`` = 20 scalars) whose every scalar s_i goes through its own MLP
1 → 64 → 128 → 16 (ELU) to a *concept token* of width ``context_dim`` = 16. The tokens
condition a latent-diffusion UNet only through cross-attention
(:class:`bench.diffusion.ldm_unet.CrossAttentionUNet`: 64 channels × [1, 2, 4, 4], 2 blocks,
spatial transformers at factors 1, 2, 4 and in the middle, 8 heads, scale-shift norm,
resblock up/down). Trained end to end with the ε-loss (L1, ``loss_type: l1``) on the frozen
first stage's latents and *no regulariser*: the paper's claim is that cross-attention plus
the diffusion bottleneck disentangle by themselves.

**Latent space.** The ``first_stage`` component (``vq-f4``, trained once per dataset) maps
64×64×3 images to 16×16×3 pre-quantisation latents; the diffusion model runs on them scaled
by 1/std of the first training batch (LDM's ``scale_by_std``; a random batch, drawn with the seed, as the
reference's shuffled loader gives); decoded images are quantised
then decoded (LDM ``decode_first_stage``). ``space = "pixel"`` — the paper's pixel-space
EncDiff — diffuses the images themselves (no component).

**Optimisation** (the shipped configs): AdamW (LDM's default weight decay 0.01), lr =
2e-6 × batch = 2.56e-4 at 128, linear warm-up from 1e-6 × lr over 10,000 steps (LDM's
``LambdaLinearScheduler``), EMA 0.9999 with LitEma's warm-up min(0.9999, (1 + n)/(10 + n))
on the UNet only (the reference's ``use_ema`` averages ``self.model``; the encoder is not
averaged), T = 1000. **Schedule:** the ``paper`` preset uses the cosine schedule, the
paper's stated default ("We adopt the cosine as the variance schedule by default"), because
Table 1's numbers come from it and the reported-values file compares against them; the
shipped configs use LDM's "linear" (``ldm-linear``: √β linear 0.0015 → 0.0155), which is the
"linear" row of the paper's schedule ablation (Shapes3D .999 / .930) — select it with
``schedule = "ldm-linear"``. The batch (128) and rate are the shipped configs' (the paper's
text says batch 64).

**Variants** (hyperparameters): ``token_mode = "vector"`` — EncDiff-V: the encoder's linear
map gives 20 × 16 values used directly as tokens, and ``encode`` returns the 20 units of 16
(``latent_units``; the runner reduces each unit to its first principal component for the
factor metrics, the paper's protocol); ``conditioning = "adagn"`` — the ablation "w/ AdaGN":
the tokens reach the UNet through its scale-shift norms instead of cross-attention.

**Inference.** ``encode`` = the 20 scalars (the representation the paper scores);
``reconstruct`` = DDIM conditioned on the image's tokens (``ddim_steps`` = 200, η = 1.0, from
seeded noise, as the reference's ``log_images``); ``decode(z)``: the tokens of codes z, DDIM
from one fixed x_T; ``sample``: EncDiff has no prior over its codes, so they are drawn from a
latent DDPM trained on the codes afterwards (DiffAE's, :mod:`methods.diffusion_autoencoding`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bench.adapter import Component
from bench.diffusion.encoders import DisDiffEncoder
from bench.diffusion.ldm_unet import CONDITIONINGS, CrossAttentionUNet
from bench.diffusion.samplers import Denoiser, epsilon_loss
from methods.diffusion_autoencoding import LATENT_DDPM_DEFAULTS, TINY_LATENT_DDPM, AutoencodingDiffusion
from methods.diffusion_base import DIFFUSION_DEFAULTS, DIFFUSION_RANGES, TINY_NET
from methods.diffusion_training import TrainState
from methods.latent_space import LatentSpace, first_stage_needed

SPACES = ("latent", "pixel")
TOKEN_MODES = ("scalar", "vector")
_UNUSED = ("attention_resolutions", "norm_groups", "time_embed_dim", "cond_layout")

ENCDIFF_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in DIFFUSION_DEFAULTS.items() if k not in _UNUSED},
    **LATENT_DDPM_DEFAULTS,
    "space": "latent",
    # UNet (openaimodel_enc.UNetModel as configured)
    "base_channels": 64,
    "channel_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attention_ds": [1, 2, 4],
    "num_heads": 8,
    "dropout": 0.0,
    "conditioning": "crossattn",
    # concept tokens
    "n_units": 20,
    "context_dim": 16,
    "token_mode": "scalar",
    "enc_channels": 128,
    # diffusion
    "schedule": "cosine",
    "timesteps": 1000,
    "loss_type": "l1",
    # optimisation
    "lr": 2.56e-4,
    "weight_decay": 0.01,
    "batch_size": 128,
    "steps": 200_000,
    "warmup_steps": 10_000,
    "ema_decay": 0.9999,
    "grad_clip": 0.0,
    # inference: log_images' DDIM (LDM's DDIMSampler: timesteps i·T/S + 1, alphas_prev[0] = ᾱ_0)
    "spacing": "ldm",
    "ddim_steps": 200,
    "ddim_eta": 1.0,
    # latent DDPM over the codes
    "latent_dim": 0,        # 0: the code width, n_units (scalar tokens) or n_units x context_dim (vector)
    "latent_hidden": 512,
    "latent_steps": 100_000,
}
ENCDIFF_RANGES: dict[str, Any] = {
    **DIFFUSION_RANGES, "latent_dim": ">= 0", "space": SPACES, "attention_ds": "each >= 1", "conditioning": CONDITIONINGS, "n_units": ">= 1",
    "context_dim": ">= 1", "token_mode": TOKEN_MODES, "enc_channels": ">= 1", "loss_type": ("l1", "mse"),
}
TINY_ENCDIFF: dict[str, Any] = {
    **{k: v for k, v in TINY_NET.items() if k not in _UNUSED},
    **TINY_LATENT_DDPM,
    "base_channels": 32,
    "channel_mult": [1, 2],
    "attention_ds": [2],
    "num_heads": 4,
    "n_units": 4,
    "context_dim": 8,
    "enc_channels": 16,
    "latent_dim": 0,
    "warmup_steps": 0,
    "ddim_steps": 5,
    "schedule": "ldm-linear",
}


class EncDiffEncoder(nn.Module):
    """E(x) → codes (scalar: n_units values; vector: n_units · context_dim) and the codes → concept tokens."""

    def __init__(self, *, in_channels: int, image_size: int, n_units: int, context_dim: int, channels: int,
                 mode: str) -> None:
        super().__init__()
        self.n_units, self.context_dim, self.mode = n_units, context_dim, mode
        out = n_units if mode == "scalar" else n_units * context_dim
        self.trunk = DisDiffEncoder(in_channels=in_channels, image_size=image_size, out_dim=out, channels=channels)
        if mode == "scalar":  # openaimodel_enc.Encoder4.net: one non-shared MLP per unit
            self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(1, 64), nn.ELU(True), nn.Linear(64, 128), nn.ELU(True),
                                                    nn.Linear(128, context_dim)) for _ in range(n_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, n_units, context_dim) concept tokens of the codes."""
        if self.mode == "vector":
            return codes.reshape(codes.shape[0], self.n_units, self.context_dim)
        return torch.stack([mlp(codes[:, i:i + 1]) for i, mlp in enumerate(self.mlps)], dim=1)


class EncDiff(LatentSpace, AutoencodingDiffusion):
    """Concept tokens by cross-attention into a latent-diffusion UNet (see the module docstring)."""

    # 2: scale_by_std from a random first batch (was pool[:B] in dataset order), LitEma's warm-up,
    # LDM's DDIM timesteps (spacing "ldm")
    version = "2"
    ema_warmup = True  # LitEma's warm-up (LDM's LatentDiffusion)
    warmup_start = 1e-6  # LambdaLinearScheduler's f_start in the shipped configs
    latent_spacing = "leading"  # the harness's latent DDPM over codes is not LDM's sampler
    defaults: ClassVar[dict[str, Any]] = {**ENCDIFF_DEFAULTS, "pretrained": ""}
    #: ``pretrained``: a released checkpoint to convert instead of training (:mod:`bench.released`); its
    #: first stage comes from the same file
    added_params: ClassVar[dict[str, Any]] = {"pretrained": ""}
    ranges = ENCDIFF_RANGES
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_ENCDIFF), "paper": {}}
    capabilities = frozenset({"sample", "decode", "reconstruct"})
    components = {"first_stage": Component("vq-f4", params=lambda p: {"pretrained": p["pretrained"]},
                                           when=first_stage_needed)}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        merged = super().check_params(params)
        if merged["latent_dim"] == 0:  # the code width follows the token mode
            units = merged["n_units"]
            merged["latent_dim"] = units if merged["token_mode"] == "scalar" else units * merged["context_dim"]
        return merged

    choices = {**{k: v for k, v in AutoencodingDiffusion.choices.items() if k != "cond_layout"},
               "space": SPACES, "token_mode": TOKEN_MODES, "conditioning": CONDITIONINGS}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)  # EncDiff conditions by attention: no AdaGN layout to check
        expected = self.n_units if self.token_mode == "scalar" else self.n_units * self.context_dim
        if self.latent_dim != expected:
            raise ValueError(f"{type(self).__name__}: latent_dim (the code width the latent DDPM models) must be "
                             f"{expected} for token_mode={self.token_mode!r} with n_units={self.n_units}, got "
                             f"{self.latent_dim}")
        caps = {"sample", "decode", "reconstruct"} | ({"latent_units"} if self.token_mode == "vector" else set())
        self.capabilities = frozenset(caps)

    @property
    def latent_unit_dim(self) -> int:
        return self.context_dim if self.token_mode == "vector" else 1

    # -- the first stage ---------------------------------------------------------------
    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
            components: dict[str, Any] | None = None) -> "EncDiff":
        """Train on ``data``; latent space needs ``components={"first_stage": <fitted vq-f4>}`` (the runner passes it)."""
        self._store_components(components)
        self._first_stage()  # a missing first stage fails before any work
        return super().fit(data, seed=seed, device=device, progress=progress)

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        c, h, _ = input_shape
        self._set_shapes(input_shape)
        self.unet_ = CrossAttentionUNet(in_channels=self.diffusion_shape[0], out_channels=self.diffusion_shape[0],
                                        model_channels=self.base_channels, channel_mult=tuple(self.channel_mult),
                                        num_res_blocks=self.num_res_blocks, attention_ds=tuple(self.attention_ds),
                                        num_heads=self.num_heads, context_dim=self.context_dim, n_tokens=self.n_units,
                                        dropout=self.dropout, conditioning=self.conditioning)
        self.encoder_ = EncDiffEncoder(in_channels=c, image_size=h, n_units=self.n_units, context_dim=self.context_dim,
                                       channels=self.enc_channels, mode=self.token_mode)
        self.device_ = torch.device("cpu")
        self.emas_ = {}
        self.latent_net_ = None
        self.latent_ema_ = None

    def _nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet_, "encoder": self.encoder_}

    def _averaged(self) -> tuple[str, ...]:
        return ("unet",)  # LDM's model_ema averages the UNet only

    def _cond_dim(self) -> int | None:
        return None

    # -- training ----------------------------------------------------------------------
    def _draw(self, state: TrainState) -> dict[str, torch.Tensor]:
        gen, dev, B = state.generator, state.device, self.batch_size
        img = self._draw_images(state)
        x0 = self._to_diffusion(img)
        t = torch.randint(0, self.timesteps, (B,), generator=gen, device=dev)
        return {"img": img, "x0": x0, "t": t, "noise": torch.randn(x0.shape, generator=gen, device=dev)}

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.encoder_.tokens(self.encoder_(batch["img"]))
        net = self.unet_
        return epsilon_loss(lambda x, t: net(x, t, tokens), self.schedule_, batch["x0"], batch["t"], batch["noise"],
                            self.loss_type).mean()

    # -- inference ---------------------------------------------------------------------
    def _denoiser(self, z: torch.Tensor | None = None) -> Denoiser:
        """ε̂(x_t, t) conditioned on the tokens of codes ``z`` (evaluation weights)."""
        net, encoder = self._inference_net(self._eval_net("unet")), self._eval_net("encoder")
        tokens = encoder.tokens(z.float())

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with self._amp():
                return net(x, t, tokens).float()

        return eps

    @torch.no_grad()
    def attention_maps(self, x: np.ndarray) -> np.ndarray:
        """(N, n_units, s, s): each concept token's cross-attention weight at every position of the finest UNet
        level that has cross-attention (16×16 on the VQ-f4 latents of 64×64 images with ``attention_ds`` ∋ 1),
        averaged over heads, that level's transformers and the DDIM steps of a reconstruction (the paper's
        Figure 9); at every position the weights over the tokens sum to 1."""
        if self.conditioning != "crossattn":
            raise ValueError(f"{type(self).__name__}: conditioning={self.conditioning!r} has no cross-attention maps")
        net = self._eval_net("unet")
        modules = [m.block.attn2 for m in net.modules() if hasattr(m, "block")]
        for m in modules:
            m.record = []
        compile_ = self._params["compile"]
        # recording is a Python side effect per call: a compiled UNet would be traced again at every step
        self._params["compile"] = False
        try:
            self.reconstruct(x)
            recorded = [w for m in modules for w in m.record]
        finally:
            self._params["compile"] = compile_
            for m in modules:
                m.record = None
        positions = max(w.shape[1] for w in recorded)
        side = int(round(positions ** 0.5))
        mean = torch.stack([w for w in recorded if w.shape[1] == positions]).mean(0)  # (N, s*s, n_units)
        return mean.transpose(1, 2).reshape(len(x), self.n_units, side, side).cpu().numpy()

    def extra_figures(self, originals: np.ndarray) -> dict[str, np.ndarray]:
        """The runner's extra panels: ``attention`` (images, tokens, 1, s, s), each map rescaled to [0, 1]."""
        if self.conditioning != "crossattn":
            return {}
        maps = self.attention_maps(originals[:4])
        lo, hi = maps.min(axis=(2, 3), keepdims=True), maps.max(axis=(2, 3), keepdims=True)
        return {"attention": ((maps - lo) / np.maximum(hi - lo, 1e-12))[:, :, None]}

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """DDIM (``ddim_steps``, η = ``ddim_eta``) from seeded noise, conditioned on the image's tokens."""
        x = self._images(x)
        generator = torch.Generator().manual_seed(0)
        z = self._codes(x)
        return self._render(z, self._x_T(len(x), generator), generator, self._denoiser)
