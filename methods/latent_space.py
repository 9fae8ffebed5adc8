"""Diffusion in the latent space of a first-stage autoencoder (Rombach et al. 2022, latent diffusion).

The mixin every latent-diffusion adapter shares (EncDiff, the ``ldm`` latent DPM, latent
DisDiff): the ``first_stage`` component (a fitted ``vq-f4``, :mod:`methods.vqgan`) maps
images in [0, 1] to its pre-quantisation latents; the diffusion model runs on them scaled by
``scale_factor_`` = 1 / std of the latents of the first training batch (LDM's
``scale_by_std``: ``on_train_batch_start`` of the first step; the reference's loader
shuffles, so the batch is a random one, drawn here with the seed); decoded latents are
quantised then decoded (LDM ``decode_first_stage``). Latents are not bounded, so the DDIM
sampler does not clip x̂_0 (LDM's ``DDIMSampler`` has no clipping).

A host says whether it runs in latent space through :meth:`LatentSpace._in_latent_space`
(default: always; EncDiff and DisDiff: ``space == "latent"``) and keeps its diffusion's
shape in ``diffusion_shape``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from bench.diffusion.samplers import DDIMSampler, DDPMSampler
from bench.diffusion.schedules import make_schedule
from methods.diffusion_training import TrainState


def first_stage_needed(params: dict[str, Any]) -> bool:
    """A ``Component(..., when=...)`` test: the cell diffuses in latent space."""
    return params.get("space", "latent") == "latent"


class LatentSpace:
    """Mixin for a :class:`~methods.diffusion_base.DiffusionFamily` adapter (see the module docstring)."""

    #: ``scale_by_std`` from a training batch at the start of training (latent DisDiff reuses its latent DPM's)
    scale_from_data: ClassVar[bool] = True

    def to(self, device):
        super().to(device)
        self._move_first_stage()
        return self

    def setup_training(self, data, *, seed: int = 0, device="cpu") -> TrainState:
        state = super().setup_training(data, seed=seed, device=device)
        if self.scale_from_data:
            self._scale_by_std(state, seed)
        return state

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self._latent_state()}

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        self._load_latent_state(state)
        super().load_state_dict(state, input_shape)

    def _in_latent_space(self) -> bool:
        return first_stage_needed(self._params)

    def _store_components(self, components: dict[str, Any] | None) -> None:
        self.components_ = dict(components or {})

    def _first_stage(self):
        """The fitted ``vq-f4`` component, or None in pixel space; a missing one is a clear error."""
        if not self._in_latent_space():
            return None
        vq = self.__dict__.get("components_", {}).get("first_stage")
        if vq is None:
            pixel = " or set space='pixel'" if "space" in self._params else ""
            raise ValueError(f"{type(self).__name__} (latent space) runs on a first-stage autoencoder: pass "
                             f"components={{'first_stage': <fitted vq-f4>}} to fit() and load() (the runner does)"
                             f"{pixel}")
        vq.check_fitted()
        return vq

    def _set_shapes(self, input_shape: tuple[int, int, int]) -> None:
        """``input_shape`` (square images), ``diffusion_shape`` and the noise schedule of a latent-space host."""
        c, h, w = input_shape
        if h != w:
            raise ValueError(f"{type(self).__name__}: images must be square, got {h}x{w}")
        self.input_shape = tuple(input_shape)
        self.diffusion_shape = self._latent_shape(self.input_shape)
        self.schedule_ = make_schedule(self.schedule, self.timesteps)

    def _latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        """The diffusion's shape for images of ``input_shape``: the first stage's latents, or the images."""
        vq = self._first_stage()
        if vq is None:
            return tuple(input_shape)
        if tuple(vq.input_shape) != tuple(input_shape):
            raise ValueError(f"{type(self).__name__}: the first stage was trained on images of shape "
                             f"{tuple(vq.input_shape)}, not {tuple(input_shape)}")
        if not hasattr(self, "scale_factor_"):
            self.scale_factor_ = 1.0
        return tuple(vq.latent_shape)

    def _move_first_stage(self) -> None:
        vq = self._first_stage()
        if vq is not None:
            vq.to(self.device_)

    @torch.no_grad()
    def _to_diffusion(self, img: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] → what the diffusion model runs on (scaled first-stage latents, or the images)."""
        vq = self._first_stage()
        if vq is None:
            return img
        return vq.latents((img.float() + 1) / 2).to(img.device) * self.scale_factor_

    def _to_numpy_images(self, x0: torch.Tensor) -> np.ndarray:
        vq = self._first_stage()
        if vq is None:
            return super()._to_numpy_images(x0)
        return vq.decode_latents(x0.float() / self.scale_factor_).cpu().numpy().astype(np.float32)

    def _x_T(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, *self.diffusion_shape), generator=generator)

    def _image_sampler(self) -> DDIMSampler | DDPMSampler:
        sampler = super()._image_sampler()
        if self._first_stage() is not None:  # latents are not bounded to [-1, 1]: LDM's DDIM does not clip x_0
            sampler.clip_x0 = False
        return sampler

    def _ddim(self, steps: int | None = None, eta: float = 0.0, clip: bool = False) -> DDIMSampler:
        """DDIM for inversion and reconstruction: never clipped in latent space (LDM's ``DDIMSampler``); the
        inversion itself is the base class's, on :meth:`_to_diffusion` of the images."""
        return super()._ddim(steps, eta, clip and self._first_stage() is None)

    def _scale_by_std(self, state: TrainState, seed: int) -> None:
        """``scale_factor_`` = 1 / std of a random training batch's latents (LDM's ``scale_by_std``)."""
        vq = self._first_stage()
        if vq is None:
            return
        vq.to(state.device)
        pick = torch.randperm(state.pool.shape[0], generator=torch.Generator().manual_seed(seed))[:self.batch_size]
        z = vq.latents(state.pool[pick.to(state.pool.device)].float())
        self.scale_factor_ = float(1.0 / z.flatten().std().clamp_min(1e-8))

    def _latent_state(self) -> dict[str, Any]:
        return {"scale_factor": float(getattr(self, "scale_factor_", 1.0))}

    def _load_latent_state(self, state: dict[str, Any]) -> None:
        self.scale_factor_ = float(state.get("scale_factor", 1.0))
