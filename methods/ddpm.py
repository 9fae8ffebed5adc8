"""Vanilla DDPM on the shared diffusion machinery of :mod:`methods.diffusion_base`.

DDPM (Ho et al. 2020): a UNet ε_θ(x_t, t) trained with the simplified objective
L_simple = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖² (eq. 14), t uniform. Images
are mapped from [0, 1] to [−1, 1] for the model and back (clipped) for the caller.

What a vanilla DDPM's ``encode`` returns: a DDPM has no encoder, and its only latent is
x_T. ``encode`` returns the deterministic DDIM inversion x_0 → x_T (Song et al. 2021,
§5.4 "the latent encoding of a DDIM": the η = 0 ODE run forwards in time) flattened to
C·H·W numbers, so ``code_dim`` is C·H·W. It is what InfoDiffusion's evaluation compares
against ("latent variables x_T", isjakewong/InfoDiffusion README) and what PDAE/DisDiff
start from. ``reconstruct`` inverts and samples back; ``decode`` is not declared (a
traversal over C·H·W pixel-shaped latents would mean nothing).

Presets, named for what they are:

* ``paper`` — InfoDiffusion's vanilla network (isjakewong/InfoDiffusion, dev branch,
  ``models.py: Diff``/``UNet``: base channels 64, multipliers [1, 2, 4, 8], attention at
  16×16, 2 residual blocks of three convs, dropout 0.1, T = 1000 with β linear 1e-5 → 1e-2,
  AdamW lr 1e-4 weight decay 1e-5, gradient clipping 1) trained as DDPM trains (Ho et al.
  2020, App. B: 250,000 steps at batch 128, EMA 0.9999) — *not* how InfoDiffusion trains it;
* ``infodiffusion-vanilla`` — the same network trained as InfoDiffusion's ``run_diff.sh``
  does (``--epochs 50 --batch_size 128``): 63,600 steps at batch 128 (50 epochs of CelebA's
  162,770 training images, 1,272 batches each), no EMA,
  the reference's learning-rate schedule (``lr_schedule = "infodiffusion"``) — the model its
  two-phase sampling and its prior-sampled FID rows come from;
* ``released-pdae-celeba64`` — the network of PDAE's released CelebA-64 DPM (ckczzj/PDAE
  ``pre-trained-dpms/celeba64``, loaded by ``trainer/train_representation_learning.py`` from
  ``ema_denoise_fn``; ``model/unet.py: UNet`` with base 64, multipliers [1, 2, 4, 8], 2 blocks,
  attention at downsample rate 4 = 16×16, 1 head, dropout 0.1, time embedding 4 · 64, linear β,
  T = 1000) with ``resample = "resblock"``: weight-compatible with that checkpoint through
  :mod:`bench.released.pdae` (63,958,019 parameters, equal to the reference's);
* ``tiny`` (CPU tests) — a ~45k-parameter net (base 8 channels, two levels, one block each,
  no attention) with T = 50.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from bench.adapter import NotFittedError
from methods.diffusion_base import DIFFUSION_DEFAULTS, TINY_NET, DiffusionFamily
from methods.diffusion_training import native_convs


class DDPM(DiffusionFamily):
    """Vanilla DDPM (Ho et al. 2020); codes are DDIM-inverted x_T (see the module docstring)."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(TINY_NET),
        "paper": {},
        "infodiffusion-vanilla": {"batch_size": 128, "steps": 63_600, "ema_decay": 0.0, "lr_schedule": "infodiffusion"},
        "released-pdae-celeba64": {"cond_layout": "joint", "schedule": "linear", "resample": "resblock"},
    }
    defaults: ClassVar[dict[str, Any]] = {**DIFFUSION_DEFAULTS, "resample": "conv", "pretrained": "", "keep_live": False}
    #: ``resample`` (added for the authors' checkpoints) keeps today's stride-2 / nearest-neighbour convs at "conv";
    #: ``pretrained``: a released checkpoint to convert instead of training (:mod:`bench.released`: PDAE's
    #: pre-trained DPM, or the frozen DPM inside a PDAE checkpoint); ``keep_live``: the checkpoint also holds the
    #: live (non-EMA) weights (a DisDiff ``frozen_weights = "live"`` DPM)
    added_params: ClassVar[dict[str, Any]] = {"resample": "conv", "pretrained": "", "keep_live": False}
    capabilities = frozenset({"sample", "reconstruct"})

    @property
    def code_dim(self) -> int:
        if not hasattr(self, "input_shape"):
            raise NotFittedError("DDPM's code dimension is C*H*W of the training images: fit or load it first")
        return int(np.prod(self.input_shape))

    @torch.no_grad()
    @native_convs
    def encode(self, x: np.ndarray, *, stochastic: bool = False, seed: int | None = None) -> np.ndarray:
        """x_T from deterministic DDIM inversion (``ddim_steps`` steps), flattened: (N, C·H·W)."""
        if stochastic:
            raise TypeError("DDPM's codes (DDIM-inverted x_T) are deterministic; stochastic=True is not available")
        x = self._images(x)
        out = [self._invert(x[part]).flatten(1).cpu().numpy() for part in self._chunks(len(x))]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.code_dim), np.float32)
