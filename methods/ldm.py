"""A latent DDPM on a VQ-f4 first stage (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", CVPR): the frozen DPM of latent DisDiff, trained once per dataset as a component.

The network is LDM's plain ``openaimodel.UNetModel`` (:class:`bench.diffusion.ldm_openai.OpenAIUNet`)
on the ``first_stage`` component's pre-quantisation latents scaled by LDM's ``scale_by_std``
(:class:`methods.latent_space.LatentSpace`), trained with LDM's ``LatentDiffusion.p_losses``:
ε-prediction, t uniform, ``loss_type = "l1"`` (mean |ε − ε_θ(x_t, t)|), LDM's ``linear``
schedule (√β linear from 0.0015 to 0.0155, T = 1000: ``"ldm-linear"``).

``paper`` is DisDiff's shipped latent-DPM config (ThomasMrY/DisDiff
``configs/latent-diffusion/shapes3d-vq-4-16.yaml``, the same for Cars3D, MPI3D and CelebA):
64 channels × [1, 2, 4, 4], 2 residual blocks, attention at 16, 8 and 4 (LDM's ds 1, 2, 4),
8 heads, scale-shift norm, resampling residual blocks, dropout 0 (29,422,467 parameters on
3 × 16 × 16 latents); AdamW (weight decay 0.01) at lr 2e-6 × batch 128 = 2.56e-4, linear
warm-up over 10,000 steps from the factor 1e-6 (``LambdaLinearScheduler``), LitEma 0.9999
with its warm-up, no gradient clipping. The configs train until stopped: 200,000 steps is
this harness's choice. Sampling is LDM's ``log_images`` DDIM (200 steps, η = 1, LDM's
timesteps: ``spacing = "ldm"``); latents are not clipped.

As a model of its own (it is registered, so ``bench run`` can train and score it), ``encode``
is DDPM's: the DDIM-inverted x_T — of the latent, flattened — and ``reconstruct`` inverts and
samples back, decoded by the first stage. ``tiny`` is for CPU tests.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bench.adapter import Component, NotFittedError
from bench.diffusion.ldm_openai import OpenAIUNet
from bench.diffusion.samplers import epsilon_loss
from methods.ddpm import DDPM
from methods.diffusion_base import DIFFUSION_DEFAULTS, DIFFUSION_RANGES, TINY_NET
from methods.diffusion_training import TrainState
from methods.latent_space import LatentSpace

_UNUSED = ("norm_groups", "time_embed_dim", "cond_layout")
LOSS_TYPES = ("l1", "mse")

#: the hyperparameters that define the network and its diffusion (what a dependant checks)
LDM_KEYS = ("base_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout", "num_heads",
            "schedule", "timesteps")

LDM_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in DIFFUSION_DEFAULTS.items() if k not in _UNUSED},
    "base_channels": 64,
    "channel_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attention_resolutions": [16, 8, 4],
    "num_heads": 8,
    "dropout": 0.0,
    "schedule": "ldm-linear",
    "timesteps": 1000,
    "loss_type": "l1",
    "lr": 2.56e-4,
    "weight_decay": 0.01,
    "batch_size": 128,
    "steps": 200_000,
    "warmup_steps": 10_000,
    "grad_clip": 0.0,
    "ema_decay": 0.9999,
    "spacing": "ldm",
    "ddim_steps": 200,
    "ddim_eta": 1.0,
}

#: CPU-test sizes (channels stay multiples of 32: LDM's GroupNorm has 32 groups)
TINY_LDM: dict[str, Any] = {
    **{k: v for k, v in TINY_NET.items() if k not in _UNUSED},
    "base_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [8],
    "num_heads": 4,
    "schedule": "ldm-linear",
    "warmup_steps": 0,
    "ddim_steps": 5,
    "cpu_native_conv": False,
}


class LDM(LatentSpace, DDPM):
    """ε_θ on the scaled latents of a ``vq-f4`` component (see the module docstring)."""

    defaults: ClassVar[dict[str, Any]] = {**LDM_DEFAULTS, "pretrained": "", "keep_live": False}
    #: ``pretrained``: a released checkpoint to convert instead of training (:mod:`bench.released`); its
    #: first stage comes from the same file. ``keep_live``: as :class:`methods.ddpm.DDPM`'s
    added_params: ClassVar[dict[str, Any]] = {"pretrained": "", "keep_live": False}
    ranges = {**DIFFUSION_RANGES, "loss_type": LOSS_TYPES}
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_LDM), "paper": {}}
    capabilities = frozenset({"sample", "reconstruct"})
    components = {"first_stage": Component("vq-f4", params=lambda p: {"pretrained": p["pretrained"]})}
    ema_warmup = True  # LitEma's warm-up (LDM's LatentDiffusion)
    warmup_start = 1e-6  # LambdaLinearScheduler's f_start in the shipped configs
    version = "1"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._check_choice("loss_type", LOSS_TYPES)

    @property
    def code_dim(self) -> int:
        if not hasattr(self, "diffusion_shape"):
            raise NotFittedError("ldm's code dimension is the size of the first stage's latents: fit or load it first")
        return int(np.prod(self.diffusion_shape))

    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
            components: dict[str, Any] | None = None) -> "LDM":
        """Train on ``data`` with ``components={"first_stage": <fitted vq-f4>}`` (the runner passes it)."""
        self._store_components(components)
        self._first_stage()  # a missing first stage fails before any work
        return super().fit(data, seed=seed, device=device, progress=progress)

    def _build(self, input_shape: tuple[int, int, int]) -> None:
        self._set_shapes(input_shape)
        lc, ls = self.diffusion_shape[0], self.diffusion_shape[1]
        self.unet_ = OpenAIUNet(in_channels=lc, out_channels=lc, latent_size=ls, model_channels=self.base_channels,
                                channel_mult=tuple(self.channel_mult), num_res_blocks=self.num_res_blocks,
                                attention_resolutions=tuple(self.attention_resolutions), num_heads=self.num_heads,
                                dropout=self.dropout)
        self.device_ = torch.device("cpu")
        self.emas_ = {}

    def _nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet_}

    def _draw(self, state: TrainState) -> dict[str, torch.Tensor]:
        gen, dev, B = state.generator, state.device, self.batch_size
        x0 = self._to_diffusion(self._draw_images(state))
        t = torch.randint(0, self.timesteps, (B,), generator=gen, device=dev)
        return {"x0": x0, "t": t, "noise": torch.randn(x0.shape, generator=gen, device=dev)}

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """LDM's ``p_losses`` with ε-parameterisation: mean |ε − ε_θ(x_t, t)| (or squared), the batch mean."""
        net = self.unet_
        return epsilon_loss(lambda x, t: net(x, t), self.schedule_, batch["x0"], batch["t"], batch["noise"],
                            self.loss_type).mean()
