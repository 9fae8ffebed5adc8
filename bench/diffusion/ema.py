"""An exponential moving average of a module's weights (the evaluation weights of DDPM and DiffAE).

θ_ema ← decay · θ_ema + (1 − decay) · θ after every optimiser step (Ho et al. 2020, App. B:
decay 0.9999; DiffAE ``ema_decay = 0.9999``). The update is one fused ``_foreach_lerp_``
on the device, so it adds no host synchronisation to a training step. Buffers (none in
our networks, but GroupNorm-free modules may have them) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds ``shadow``, a frozen copy of ``model`` whose parameters track the moving average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        shadow = [p for p in self.shadow.parameters()]
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(shadow, live, 1.0 - self.decay)
        for b_shadow, b_live in zip(self.shadow.buffers(), model.buffers()):
            b_shadow.copy_(b_live)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.shadow.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)
