"""Sampling, DDIM inversion and reconstruction for every diffusion adapter.

:class:`DiffusionSampling` is the inference half of :class:`methods.diffusion_base.DiffusionFamily`
(a mixin: it reads the hyperparameters, networks and device helpers the family defines):

* ``_denoiser(z)`` is ε̂(x_t, t) with the evaluation weights (the EMA when one is kept),
  conditioned on codes z where the method has an encoder;
* ``sample`` draws x_T ~ N(0, I) on the CPU from the seed (the same noise on any device) and
  runs the configured sampler (``sampler``: DDIM with η = ``ddim_eta``, or respaced DDPM,
  ``ddim_steps`` steps); :meth:`~DiffusionSampling.using_sampler` switches to a named
  sampling protocol for a while;
* ``reconstruct`` inverts x_0 → x_T with deterministic DDIM (conditioned on the image's code
  where there is one) and decodes back with DDIM;
* inputs are validated and processed in chunks of ``eval_batch_size`` images.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from bench.adapter import as_images
from bench.diffusion.protocols import parse_sampling_protocol
from bench.diffusion.samplers import DDIMSampler, DDPMSampler, Denoiser, ddim_invert, sample_loop
from methods.diffusion_training import native_convs

#: the names ``sampler`` accepts
SAMPLERS = ("ddim", "ddpm")


class DiffusionSampling:
    """Sampling, inversion and reconstruction of a diffusion adapter (see the module docstring).

    A mixin of :class:`~methods.diffusion_base.DiffusionFamily`: it uses the host's
    hyperparameters, ``schedule_``, ``input_shape``, ``device_``, and its ``_eval_net``,
    ``_amp``, ``_use_channels_last``, ``_images_in`` and ``check_fitted``.
    """

    #: clip x̂_0 to [-1, 1] in the DDIM inversion too (PDAE's and DisDiff's ``ddim_encode``)
    clip_inversion: ClassVar[bool] = False

    def _denoiser(self, z: torch.Tensor | None = None) -> Denoiser:
        """ε̂(x_t, t) with the evaluation weights (EMA when kept), conditioned on ``z`` if given."""
        net = self._inference_net(self._eval_net("unet"))
        channels_last = self._use_channels_last()

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._amp():
                return (net(x, t) if z is None else net(x, t, z)).float()

        return eps

    def _ddim(self, steps: int | None = None, eta: float = 0.0, clip: bool = False) -> DDIMSampler:
        sampler = DDIMSampler(self.schedule_, eta=eta, spacing=self.spacing, clip_x0=clip)
        sampler.set_timesteps(steps or self.ddim_steps)
        return sampler

    def _image_sampler(self) -> DDIMSampler | DDPMSampler:
        """The sampler of :meth:`sample` and :meth:`decode`: DDIM (η = ``ddim_eta``) or respaced DDPM."""
        if self.sampler == "ddpm":
            sampler: DDIMSampler | DDPMSampler = DDPMSampler(self.schedule_, spacing=self.spacing)
        else:
            sampler = DDIMSampler(self.schedule_, eta=self.ddim_eta, spacing=self.spacing, clip_x0=True)
        sampler.set_timesteps(self.ddim_steps)
        return sampler

    def _chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.eval_batch_size):
            yield slice(start, min(start + self.eval_batch_size, n))

    def _x_T(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """x_T ~ N(0, I), drawn on the CPU from ``generator`` so a seed gives the same noise on any device."""
        return torch.randn((n, *self.input_shape), generator=generator)

    def _to_numpy_images(self, x0: torch.Tensor) -> np.ndarray:
        return ((x0.float().clamp(-1.0, 1.0) + 1.0) / 2.0).cpu().numpy().astype(np.float32)

    def _images(self, x: Any) -> np.ndarray:
        self.check_fitted()
        return as_images(x, self.input_shape)

    def _to_diffusion(self, img: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] → what the diffusion runs on: the images themselves (latent diffusion: their latents)."""
        return img

    @torch.no_grad()
    def _invert(self, x: np.ndarray, z: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM inversion x_0 → x_T of images ``x`` (conditioned on codes ``z``), on the device."""
        x0 = self._to_diffusion(self._images_in(torch.from_numpy(x).to(self.device_)))
        return ddim_invert(self._denoiser(z), self._ddim(self._inversion_steps(), clip=self.clip_inversion), x0)

    def _inversion_steps(self) -> int | None:
        """DDIM steps of the inversion (None: ``ddim_steps``)."""
        return None

    @contextlib.contextmanager
    def using_sampler(self, protocol: str) -> Iterator[None]:
        """Inside, :meth:`sample` uses the named protocol (see
        :func:`bench.diffusion.samplers.parse_sampling_protocol`) instead of the configured sampler."""
        parsed = parse_sampling_protocol(protocol)
        if parsed is None:
            yield
            return
        kind, steps = parsed
        if steps > self.timesteps:
            raise ValueError(f"{type(self).__name__}: sampling protocol {protocol!r} asks for {steps} steps, "
                             f"more than the model's timesteps={self.timesteps}")
        over = {"sampler": kind, "ddim_steps": steps, **({"ddim_eta": 0.0} if kind == "ddim" else {})}
        self._check_sampler_override(over)
        saved = {k: self._params[k] for k in over}
        self._params.update(over)
        try:
            yield
        finally:
            self._params.update(saved)

    def _check_sampler_override(self, over: dict[str, Any]) -> None:
        """Hook: an adapter that supports fewer samplers says so (PDAE samples with DDIM only)."""

    def _reconstruction_codes(self, x: np.ndarray) -> torch.Tensor | None:
        """The code a reconstruction is conditioned on (None: no encoder)."""
        return None

    @torch.no_grad()
    @native_convs
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """DDIM inversion x_0 → x_T (conditioned on the image's code z where there is one), then DDIM back to x_0."""
        x = self._images(x)
        out = []
        for part in self._chunks(len(x)):
            z = self._reconstruction_codes(x[part])
            x_T = self._invert(x[part], z)
            out.append(self._to_numpy_images(sample_loop(self._denoiser(z), self._ddim(clip=True), x_T)))
        return np.concatenate(out)

    @torch.no_grad()
    @native_convs
    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` images: x_T ~ N(0, I) through ``ddim_steps`` steps of the chosen sampler."""
        self.check_fitted()
        generator = torch.Generator().manual_seed(seed)
        x_T = self._x_T(n, generator)
        sampler, out = self._image_sampler(), []
        for part in self._chunks(n):
            x0 = sample_loop(self._denoiser(), sampler, x_T[part].to(self.device_), generator)
            out.append(self._to_numpy_images(x0))
        return np.concatenate(out) if out else np.zeros((0, *self.input_shape), np.float32)
