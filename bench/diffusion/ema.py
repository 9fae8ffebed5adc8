"""An exponential moving average of a module's weights (the evaluation weights of DDPM and DiffAE).

θ_ema ← decay · θ_ema + (1 − decay) · θ after every optimiser step (Ho et al. 2020, App. B:
decay 0.9999; DiffAE ``ema_decay = 0.9999``). The update is one fused ``_foreach_lerp_``
on the device, so it adds no host synchronisation to a training step. Buffers (none in
our networks, but GroupNorm-free modules may have them) are copied, not averaged.

``warmup = True`` is latent diffusion's ``LitEma`` (``use_num_upates=True``, the default of
every LDM-based reference: EncDiff, DisDiff): the n-th update uses
min(decay, (1 + n)/(10 + n)), so a short run's average is not dominated by the initial weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds ``shadow``, a frozen copy of ``model`` whose parameters track the moving average."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.num_updates = float(decay), bool(warmup), 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay of the next update (LitEma's warm-up when ``warmup``)."""
        if not self.warmup:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.num_updates += 1
        shadow = [p for p in self.shadow.parameters()]
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(shadow, live, 1.0 - decay)
        for b_shadow, b_live in zip(self.shadow.buffers(), model.buffers()):
            b_shadow.copy_(b_live)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.shadow.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)
