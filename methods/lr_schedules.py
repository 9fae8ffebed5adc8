"""Learning-rate schedules shared by the adapters: InfoDiffusion's per-epoch warm-up + cosine.

InfoDiffusion (isjakewong/InfoDiffusion, ``run.py``, dev branch) trains its diffusion models
and its AE/VAE baselines with the same schedule: ×2 warm-up over the first epoch, then a
cosine decay stepped once per epoch (:func:`infodiffusion_lr_factor`). The diffusion adapters
(``lr_schedule = "infodiffusion"``, :mod:`methods.diffusion_training`) and the VAE family
(:mod:`methods.vae`) both use :func:`infodiffusion_scheduler`, so it lives here, apart from
either of them.
"""

from __future__ import annotations

import math

import torch

#: the names ``lr_schedule`` accepts
LR_SCHEDULES = ("constant", "infodiffusion")


def infodiffusion_lr_factor(step: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning-rate factor of InfoDiffusion's ``run.py`` (dev branch) during optimiser step ``step`` (0-based).

    ``GradualWarmupScheduler(multiplier=2, warm_epoch=1)`` followed by
    ``CosineAnnealingLR(T_max=epochs, eta_min=0)``, both stepped once per epoch: epoch 0 runs
    at the base rate, epoch 1 at twice it, and epoch e ≥ 2 at 2 · (1 + cos(π (e − 2) / epochs)) / 2
    (the cosine starts from the doubled rate when the warm-up hands over, one epoch late).
    """
    epoch = step // steps_per_epoch
    if epoch == 0:
        return 1.0
    if epoch == 1:
        return 2.0
    return 1.0 + math.cos(math.pi * (epoch - 2) / epochs)


def infodiffusion_scheduler(optimizer: torch.optim.Optimizer, n_items: int, batch_size: int,
                            steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`infodiffusion_lr_factor` as a per-step scheduler; an epoch = one pass over ``n_items`` at ``batch_size``."""
    per_epoch = max(1, math.ceil(n_items / batch_size))
    epochs = max(1, math.ceil(steps / per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: infodiffusion_lr_factor(s, per_epoch, epochs))
