"""Diffusion autoencoders: a semantic encoder, a z-conditioned denoiser, and a latent DDPM over the codes.

:class:`AutoencodingDiffusion` adds to :class:`methods.diffusion_base.DiffusionFamily` what
every method with a semantic encoder z = Enc(x_0) and a z-conditioned denoiser shares
(DiffAE, InfoDiffusion, PDAE, DisDiff, EncDiff, DRL): ``encode`` = z, ``reconstruct`` = DDIM
inversion conditioned on z then DDIM decoding, ``decode(z)`` from one fixed x_T, and
``sample`` with z drawn from a latent DDPM (DiffAE §3.3: an MLP with skips trained on
z-normalised codes after the autoencoder, :data:`LATENT_DDPM_DEFAULTS`). A method on top of
it says how its denoiser ε̂(x_t, t, z) is built and trained, and nothing else.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from bench.adapter import NotGenerativeError, seed_everything
from bench.diffusion.ema import EMA
from bench.diffusion.latent_mlp import LatentMLP
from bench.diffusion.samplers import DDIMSampler, Denoiser, epsilon_loss, sample_loop
from bench.diffusion.schedules import make_schedule
from methods.diffusion_base import DiffusionFamily
from methods.diffusion_training import TrainState, adamw_kwargs, native_convs

#: hyperparameters of the latent DDPM over the codes (values: DiffAE CelebA-64, ``templates_latent.py``)
LATENT_DDPM_DEFAULTS: dict[str, Any] = {
    "latent_dim": 512,
    "latent_hidden": 2048,
    "latent_layers": 10,
    "latent_dropout": 0.0,
    "latent_steps": 587_890,
    "latent_batch_size": 512,
    "latent_lr": 1e-4,
    "latent_weight_decay": 0.01,
    "latent_schedule": "const-0.008",
    "latent_timesteps": 1000,
    "latent_loss": "l1",
    "latent_ddim_steps": 20,
    "latent_samples": 0,
}

TINY_LATENT_DDPM: dict[str, Any] = {
    "latent_dim": 8,
    "latent_hidden": 32,
    "latent_layers": 3,
    "latent_steps": 50,
    "latent_batch_size": 64,
    "latent_lr": 1e-3,
    "latent_timesteps": 50,
    "latent_ddim_steps": 5,
    "latent_samples": 256,
}


class AutoencodingDiffusion(DiffusionFamily):
    """An encoder z = Enc(x_0), a denoiser conditioned on z, and a latent DDPM for sampling z.

    Subclasses create ``self.encoder_`` in :meth:`_build` (after ``super()._build``), list it
    in :meth:`_nets`, and define the training loss; ``_denoiser(z)`` gives ε̂(x_t, t, z).
    """

    capabilities = frozenset({"sample", "decode", "reconstruct"})
    #: clamp of the latent DDPM's z_T (PDAE clamps to [-1, 1], "may slightly improve sample quality"); 0 = none
    latent_noise_clamp: ClassVar[float] = 0.0
    #: clip the normalised ẑ_0 to [-1, 1] at every latent DDIM step (PDAE's ``latent_ddim_sample_loop``
    #: calls its clipping ``ddim_sample``; DiffAE's ``latent_clip_sample`` is off)
    latent_clip_x0: ClassVar[bool] = False
    #: the latent DDIM's timestep spacing (None: the image sampler's ``spacing``)
    latent_spacing: ClassVar[str | None] = None

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        make_schedule(self.latent_schedule, self.latent_timesteps)
        if not 1 <= self.latent_ddim_steps <= self.latent_timesteps:
            raise ValueError(
                f"{type(self).__name__}: latent_ddim_steps must be in [1, latent_timesteps={self.latent_timesteps}], "
                f"got {self.latent_ddim_steps}"
            )
        if self.latent_dim < 1:
            raise ValueError(f"{type(self).__name__}: latent_dim must be >= 1, got {self.latent_dim}")

    # -- networks ----------------------------------------------------------------------
    def _cond_dim(self) -> int | None:
        return self.latent_dim

    def _build(self, input_shape: tuple[int, int, int]) -> None:
        super()._build(input_shape)
        self.latent_net_: nn.Module | None = None
        self.latent_ema_: EMA | None = None

    # -- the latent DDPM ---------------------------------------------------------------
    def _after_fit(self, data, state: TrainState, seed: int, progress: bool) -> None:
        self._fit_latent_ddpm(state, seed, progress)

    @torch.no_grad()
    def _pool_codes(self, state: TrainState, seed: int) -> torch.Tensor:
        """Codes (on the device) of ``latent_samples`` pool images (all when 0), with the evaluation encoder."""
        n = state.pool.shape[0]
        if 0 < self.latent_samples < n:
            idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, self.latent_samples, replace=False)))
        else:
            idx = torch.arange(n)
        encoder, codes = self._eval_net("encoder"), []
        for part in self._chunks(len(idx)):
            x0 = self._images_in(state.pool[idx[part].to(state.device)])
            with self._amp():
                codes.append(encoder(x0).float())
        return torch.cat(codes)

    def _fit_latent_ddpm(self, state: TrainState, seed: int, progress: bool) -> None:
        """Train ε_ω(z_t, t) on z-normalised codes of the training images (§3.3, eq. 9)."""
        codes = self._pool_codes(state, seed)
        dev = state.device
        self.z_mean_ = codes.mean(0)
        self.z_std_ = codes.std(0).clamp_min(1e-6) if codes.shape[0] > 1 else torch.ones_like(self.z_mean_)
        normed = (codes - self.z_mean_) / self.z_std_
        seed_everything(seed)
        self._build_latent()
        self.latent_net_.to(dev).train()
        self.latent_schedule_ = make_schedule(self.latent_schedule, self.latent_timesteps)
        params = list(self.latent_net_.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.latent_lr, weight_decay=self.latent_weight_decay,
                                      betas=(self.adam_beta1, self.adam_beta2), **adamw_kwargs(dev))
        if self.ema_decay > 0:
            self.latent_ema_ = EMA(self.latent_net_, self.ema_decay)
        net, schedule, loss_type = self.latent_net_, self.latent_schedule_, self.latent_loss

        def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return epsilon_loss(net, schedule, batch["x0"], batch["t"], batch["noise"], loss_type).mean()

        def draw(s: TrainState) -> dict[str, torch.Tensor]:
            gen, B = s.generator, self.latent_batch_size
            z0 = s.pool[torch.randint(0, s.pool.shape[0], (B,), generator=gen, device=dev)]
            t = torch.randint(0, self.latent_timesteps, (B,), generator=gen, device=dev)
            return {"x0": z0, "t": t, "noise": torch.randn(z0.shape, generator=gen, device=dev)}

        latent_state = TrainState(
            device=dev, generator=torch.Generator(device=dev).manual_seed(seed), pool=normed, params=params,
            optimizer=optimizer, scheduler=None, loss_fn=loss_fn, draw=draw,
            nonfinite=torch.zeros((), dtype=torch.bool, device=dev),
            emas=[(self.latent_ema_, self.latent_net_)] if self.latent_ema_ is not None else [], grad_clip=self.grad_clip,
        )
        self.latent_history_: list[tuple[int, float]] = []
        self._run_loop(latent_state, self.latent_steps, f"fit {type(self).__name__} latent DDPM", progress,
                       self.latent_history_, self.latent_lr, self.latent_batch_size, phase="latent")
        self.latent_net_.eval()

    def _build_latent(self) -> None:
        self.latent_net_ = LatentMLP(self.latent_dim, hidden=self.latent_hidden, num_layers=self.latent_layers,
                                     dropout=self.latent_dropout)

    # -- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def _codes(self, x: np.ndarray) -> torch.Tensor:
        """z = Enc(x) for validated images ``x`` (float32, on the device)."""
        encoder, out = self._eval_net("encoder"), []
        for part in self._chunks(len(x)):
            x0 = self._images_in(torch.from_numpy(x[part]).to(self.device_))
            with self._amp():
                out.append(encoder(x0).float())
        return torch.cat(out) if out else torch.zeros((0, self.latent_dim), device=self.device_)

    @native_convs
    def encode(self, x: np.ndarray, *, stochastic: bool = False, seed: int | None = None) -> np.ndarray:
        """Deterministic codes z = Enc(x_0), (N, latent_dim)."""
        if stochastic:
            raise TypeError(f"{type(self).__name__} encodes deterministically; stochastic=True is not available")
        return self._codes(self._images(x)).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def _render(self, z: torch.Tensor, x_T: torch.Tensor, generator: torch.Generator,
                denoiser: Callable[[torch.Tensor], Denoiser]) -> np.ndarray:
        """Run the image sampler from ``x_T`` with the denoiser built for each chunk's codes."""
        sampler, out = self._image_sampler(), []
        for part in self._chunks(z.shape[0]):
            zc = z[part].to(self.device_)
            # decode's x_T is expanded (stride 0): a compiled net would be traced again for it
            x_t = x_T[part].to(self.device_).contiguous()
            x0 = sample_loop(denoiser(zc), sampler, x_t, generator)
            out.append(self._to_numpy_images(x0))
        return np.concatenate(out) if out else np.zeros((0, *self.input_shape), np.float32)

    @native_convs
    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images for codes ``z``: every code decoded from the same x_T (seed 0)."""
        self.check_fitted()
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__}.decode: z must have shape (N, {self.latent_dim}), got {z.shape}")
        generator = torch.Generator().manual_seed(0)
        x_T = self._x_T(1, generator)
        x_T = x_T.expand(len(z), *x_T.shape[1:])  # the diffusion's own shape (a latent one for EncDiff)
        return self._render(torch.from_numpy(z), x_T, generator, self._denoiser)

    def _reconstruction_codes(self, x: np.ndarray) -> torch.Tensor:
        """z = Enc(x_0): reconstruction inverts and decodes conditioned on it (Preechakul et al. 2022, §3.1)."""
        return self._codes(x)

    @torch.no_grad()
    def _latent_samples(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """z from the latent DDPM: DDIM (η = 0, ``latent_ddim_steps``) in normalised space, then un-normalised."""
        if self.latent_net_ is None:
            raise NotGenerativeError(f"{type(self).__name__}: no latent DDPM was trained (latent_steps = 0, or a model "
                                     "converted from a released checkpoint that has none), so codes cannot be sampled")
        net = self.latent_ema_.shadow if self.latent_ema_ is not None else self.latent_net_
        sampler = DDIMSampler(self.latent_schedule_, eta=0.0, spacing=self.latent_spacing or self.spacing,
                              clip_x0=self.latent_clip_x0)
        sampler.set_timesteps(self.latent_ddim_steps)
        z_T = torch.randn((n, self.latent_dim), generator=generator).to(self.device_)
        if self.latent_noise_clamp:
            z_T = z_T.clamp(-self.latent_noise_clamp, self.latent_noise_clamp)
        z = sample_loop(lambda x, t: net(x, t).float(), sampler, z_T, generator)
        return z * self.z_std_.to(self.device_) + self.z_mean_.to(self.device_)

    def _sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self._latent_samples(n, generator)

    def _sampling_denoiser(self, z: torch.Tensor) -> Denoiser:
        return self._denoiser(z)

    @torch.no_grad()
    @native_convs
    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """z from :meth:`_sample_codes`, x_T ~ N(0, I), then the image sampler conditioned on z."""
        self.check_fitted()
        generator = torch.Generator().manual_seed(seed)
        z = self._sample_codes(n, generator)
        x_T = self._x_T(n, generator)
        return self._render(z, x_T, generator, self._sampling_denoiser)

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.latent_net_ is not None:
            net = self.latent_ema_.shadow if self.latent_ema_ is not None else self.latent_net_
            state["latent"] = {
                "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "z_mean": self.z_mean_.cpu(), "z_std": self.z_std_.cpu(),
                "history": [list(h) for h in getattr(self, "latent_history_", [])],
            }
        return state

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        super().load_state_dict(state, input_shape)
        latent = state.get("latent")
        if latent is not None:
            self._build_latent()
            self.latent_net_.load_state_dict(latent["net"])
            self.latent_net_.eval()
            self.latent_schedule_ = make_schedule(self.latent_schedule, self.latent_timesteps)
            self.z_mean_, self.z_std_ = latent["z_mean"], latent["z_std"]
            self.latent_history_ = [tuple(h) for h in latent.get("history", [])]

    def to(self, device: str | torch.device) -> "AutoencodingDiffusion":
        super().to(device)
        if getattr(self, "latent_net_", None) is not None:
            self.latent_net_.to(self.device_)
            if self.latent_ema_ is not None:
                self.latent_ema_.shadow.to(self.device_)
        return self
