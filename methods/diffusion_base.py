"""The machinery every diffusion adapter shares: training loop, sampling, checkpoint I/O.

:class:`DiffusionFamily` is the base of every diffusion method (DDPM, DiffAE,
InfoDiffusion, PDAE, DisDiff); :class:`AutoencodingDiffusion` adds what every method with a
semantic encoder z = Enc(x_0) and a z-conditioned denoiser shares: ``encode`` = z,
``reconstruct`` = DDIM inversion conditioned on z then DDIM decoding, ``decode(z)`` from one
fixed x_T, and ``sample`` with z drawn from a latent DDPM (DiffAE §3.3: an MLP with skips
trained on z-normalised codes after the autoencoder). A method on top of it says how its
denoiser ε̂(x_t, t, z) is built and trained, and nothing else.

Shared training loop (:class:`DiffusionFamily`), written for GPU throughput:

* minibatches come from a pool of training images rendered once and kept on the training
  device (``data_pool`` images; 0 = the whole dataset; float16 on CUDA, float32 on CPU);
  the indices, timesteps and noise are drawn on the device from one seeded generator;
* bf16 autocast (``amp_bf16``), channels-last memory (``channels_last``), fused AdamW and
  optionally ``torch.compile`` of the loss (``compile``) on CUDA;
* no host synchronisation inside a step: the loss is read, and NaN/inf checked (a
  :class:`~bench.adapter.DivergedError`), only every ``log_every`` steps;
* on the CPU, convolutions use PyTorch's native kernels instead of oneDNN while an adapter
  method runs (``cpu_native_conv``, see :func:`native_cpu_convolutions`);
* random horizontal flips of the training images with ``hflip`` (off by default: a flip
  changes a factor of some factor datasets; bench.toml's CelebA profiles switch it on);
* gradient clipping at ``grad_clip`` (DiffAE and InfoDiffusion clip at 1), an optional
  linear learning-rate warm-up (``warmup_steps``) or InfoDiffusion's schedule
  (``lr_schedule = "infodiffusion"``: ×2 warm-up over the first epoch, then a cosine decay
  per epoch, :func:`infodiffusion_lr_factor`), and an EMA of the weights (``ema_decay``; 0
  disables) whose weights are the ones used for encoding and sampling and the ones saved.

Checkpoints hold the evaluation weights only (the EMA weights when an EMA is kept), not
the optimiser state: a saved adapter evaluates, it does not resume training.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.adapter import Adapter, DivergedError, as_images, resolve_device, seed_everything
from bench.diffusion.ema import EMA
from bench.diffusion.samplers import (
    SPACINGS, DDIMSampler, DDPMSampler, Denoiser, ddim_invert, epsilon_loss, sample_loop,
)
from bench.diffusion.schedules import SCHEDULES, make_schedule
from bench.diffusion.latent_mlp import LatentMLP
from bench.diffusion.protocols import parse_sampling_protocol
from bench.diffusion.unet import LAYOUTS, UNet

SAMPLERS = ("ddim", "ddpm")
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

#: hyperparameters shared by every diffusion adapter (values: the DDPM ``paper`` preset)
DIFFUSION_DEFAULTS: dict[str, Any] = {
    # denoiser UNet
    "base_channels": 64,
    "channel_mult": [1, 2, 4, 8],
    "num_res_blocks": 2,
    "attention_resolutions": [16],
    "dropout": 0.1,
    "norm_groups": 32,
    "time_embed_dim": 0,  # 0 = 4 x base_channels
    "cond_layout": "separate",
    "num_heads": 1,
    # diffusion
    "schedule": "linear-infodiffusion",
    "timesteps": 1000,
    # optimisation
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "batch_size": 128,
    "steps": 250_000,
    "warmup_steps": 0,
    "lr_schedule": "constant",
    "hflip": False,
    "grad_clip": 1.0,
    "ema_decay": 0.9999,
    "log_every": 100,
    # speed
    "amp_bf16": True,
    "channels_last": True,
    "compile": False,
    "data_pool": 0,
    "cpu_native_conv": True,
    # inference
    "sampler": "ddim",
    "ddim_steps": 100,
    "ddim_eta": 0.0,
    "spacing": "leading",
    "eval_batch_size": 256,
}

#: valid ranges of every diffusion adapter's hyperparameters (bench.params); keys a method lacks are ignored
DIFFUSION_RANGES: dict[str, Any] = {
    "base_channels": ">= 1", "channel_mult": "each >= 1", "num_res_blocks": ">= 1", "attention_resolutions": "each >= 1",
    "dropout": "[0, 1)", "norm_groups": ">= 1", "time_embed_dim": ">= 0", "num_heads": ">= 1", "timesteps": ">= 2",
    "lr": "> 0", "weight_decay": ">= 0", "adam_beta1": "[0, 1)", "adam_beta2": "[0, 1)", "batch_size": ">= 1",
    "steps": ">= 1", "warmup_steps": ">= 0", "grad_clip": ">= 0", "ema_decay": "[0, 1)", "log_every": ">= 1",
    "data_pool": ">= 0", "ddim_steps": ">= 1", "ddim_eta": ">= 0", "eval_batch_size": ">= 1",
    # autoencoding diffusion (DiffAE, InfoDiffusion)
    "latent_dim": ">= 1", "enc_base_channels": ">= 0", "enc_channel_mult": "each >= 1", "enc_num_res_blocks": ">= 1",
    "enc_attention_resolutions": "each >= 1", "latent_batch_size": ">= 1", "latent_ddim_steps": ">= 1",
    "latent_dropout": "[0, 1)", "latent_hidden": ">= 1", "latent_layers": ">= 1", "latent_lr": "> 0",
    "latent_samples": ">= 0", "latent_steps": ">= 0", "latent_timesteps": ">= 2", "latent_weight_decay": ">= 0",
    "zeta": ">= 0", "lambda_": ">= 0", "two_phase_t": ">= 0", "mog_components": ">= 1", "mog_spread": ">= 0",
    "mog_std": "> 0",
}

TINY_NET: dict[str, Any] = {
    "base_channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [],
    "norm_groups": 4,
    "cond_layout": "joint",
    "schedule": "linear",
    "timesteps": 50,
    "lr": 2e-3,
    "weight_decay": 0.0,
    "batch_size": 32,
    "steps": 200,
    "ema_decay": 0.99,
    "log_every": 50,
    "data_pool": 512,
    "ddim_steps": 5,
    "eval_batch_size": 128,
}


@contextlib.contextmanager
def native_cpu_convolutions(enabled: bool = True) -> Iterator[None]:
    """Inside, CPU convolutions run on PyTorch's native kernels instead of oneDNN (restored after).

    oneDNN JIT-compiles a primitive for every new convolution shape (every layer, again for
    every new batch size), and at the widths of the ``tiny`` presets its kernels are slower
    than the native ones. Measured on the 2-core CI machine (loaded, noisy) for the tiny
    DDPM at batch 8: 0.41 s vs 0.11 s per training step, 3.6 s vs 0.17 s for the first step.
    CUDA convolutions (cuDNN) are not affected.
    """
    if not enabled:
        yield
        return
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def native_convs(method: Callable) -> Callable:
    """Run an adapter method inside :func:`native_cpu_convolutions` (per ``cpu_native_conv``)."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        with native_cpu_convolutions(bool(self.cpu_native_conv)):
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class TrainState:
    """Everything one training step needs; built by :meth:`DiffusionFamily.setup_training`."""

    device: torch.device
    generator: torch.Generator
    pool: torch.Tensor
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    draw: Callable[["TrainState"], dict[str, torch.Tensor]]
    nonfinite: torch.Tensor
    #: (moving average, the live network it tracks)
    emas: list[tuple[EMA, nn.Module]] = field(default_factory=list)
    amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    grad_clip: float = 0.0


class DiffusionFamily(Adapter):
    """Shared machinery of every diffusion adapter (see the module docstring)."""

    defaults: ClassVar[dict[str, Any]] = dict(DIFFUSION_DEFAULTS)
    ranges = DIFFUSION_RANGES
    #: hyperparameter -> its allowed names, checked at construction (a method overrides the table for its own keys)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "schedule": SCHEDULES, "cond_layout": LAYOUTS, "sampler": SAMPLERS, "spacing": SPACINGS,
        "lr_schedule": LR_SCHEDULES, "latent_schedule": SCHEDULES, "latent_loss": ("mse", "l1"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        for key, allowed in self.choices.items():
            if key in self._params:
                self._check_choice(key, allowed)
        if self.lr_schedule != "constant" and self.warmup_steps:
            raise ValueError(f"{type(self).__name__}: warmup_steps={self.warmup_steps} applies to lr_schedule='constant' "
                             f"only; lr_schedule={self.lr_schedule!r} has its own warm-up")
        if "schedule" in self._params:  # a discrete DDPM (DRL's SDE has none)
            make_schedule(self.schedule, self.timesteps)  # fails now, not after training, on a bad (schedule, T)
            if not 1 <= self.ddim_steps <= self.timesteps:
                raise ValueError(f"{type(self).__name__}: ddim_steps must be in [1, timesteps={self.timesteps}], "
                                 f"got {self.ddim_steps}")

    def _check_choice(self, key: str, choices: tuple[str, ...]) -> None:
        if self._params[key] not in choices:
            raise ValueError(f"{type(self).__name__}: {key} must be one of {choices}, got {self._params[key]!r}")

    # -- networks ----------------------------------------------------------------------
    def _unet_kwargs(self) -> dict[str, Any]:
        return dict(
            base_channels=self.base_channels, channel_mult=tuple(self.channel_mult), num_res_blocks=self.num_res_blocks,
            attention_resolutions=tuple(self.attention_resolutions), dropout=self.dropout, norm_groups=self.norm_groups,
            time_embed_dim=self.time_embed_dim or None, cond_layout=self.cond_layout, num_heads=self.num_heads,
        )

    def _build(self, input_shape: tuple[int, int, int]) -> None:
        """Create the networks for images of ``input_shape`` (C, H, W); order fixes the initialisation."""
        c, h, w = input_shape
        if h != w:
            raise ValueError(f"{type(self).__name__}: images must be square, got {h}x{w}")
        self.input_shape = tuple(input_shape)
        self.schedule_ = make_schedule(self.schedule, self.timesteps)
        self.unet_ = UNet(in_channels=c, out_channels=c, image_size=h, cond_dim=self._cond_dim(), **self._unet_kwargs())
        self.device_ = torch.device("cpu")
        self.emas_: dict[str, EMA] = {}

    def _cond_dim(self) -> int | None:
        return None

    def _nets(self) -> dict[str, nn.Module]:
        """The trained networks by name (their parameters are optimised together)."""
        return {"unet": self.unet_}

    def _averaged(self) -> tuple[str, ...]:
        """The networks whose weights get an EMA (all of them; DisDiff leaves its encoder out)."""
        return tuple(self._nets())

    def _eval_net(self, name: str) -> nn.Module:
        ema = self.emas_.get(name)
        return ema.shadow if ema is not None else self._nets()[name]

    def to(self, device: str | torch.device) -> "DiffusionFamily":
        self.device_ = torch.device(device)
        for name, net in self._nets().items():
            net.to(self.device_)
            if name in self.emas_:
                self.emas_[name].shadow.to(self.device_)
        if self._use_channels_last():
            for name, net in self._nets().items():
                net.to(memory_format=torch.channels_last)
                if name in self.emas_:
                    self.emas_[name].shadow.to(memory_format=torch.channels_last)
        return self

    def _use_channels_last(self) -> bool:
        return bool(self.channels_last) and self.device_.type == "cuda"

    def _amp(self) -> contextlib.AbstractContextManager:
        if self.amp_bf16 and self.device_.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _images_in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() * 2.0 - 1.0
        return x.contiguous(memory_format=torch.channels_last) if self._use_channels_last() else x

    # -- training ----------------------------------------------------------------------
    def setup_training(self, data, *, seed: int = 0, device: str | torch.device = "cpu") -> TrainState:
        """Seed, build the networks on ``device``, fill the data pool, make the optimiser."""
        dev = resolve_device(device)
        seed_everything(seed)
        self._build(data.image_shape)
        self.to(dev)
        for net in self._nets().values():
            net.train()
        pool = _data_pool(data, self.data_pool, np.random.default_rng(seed), dev)
        params = [p for net in self._nets().values() for p in net.parameters()]
        optimizer = torch.optim.AdamW(
            params, lr=self.lr, betas=(self.adam_beta1, self.adam_beta2), weight_decay=self.weight_decay,
            **adamw_kwargs(dev),
        )
        scheduler = None
        if self.lr_schedule == "infodiffusion":  # per epoch, an epoch = one pass over the training set
            scheduler = infodiffusion_scheduler(optimizer, len(data), self.batch_size, self.steps)
        elif self.warmup_steps > 0:
            warm = self.warmup_steps
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))
        if self.ema_decay > 0:
            self.emas_ = {name: EMA(net, self.ema_decay) for name, net in self._nets().items() if name in self._averaged()}
        loss_fn = self._loss
        if self.compile and dev.type == "cuda":
            loss_fn = torch.compile(self._loss)
        return TrainState(
            device=dev, generator=torch.Generator(device=dev).manual_seed(seed), pool=pool, params=params,
            optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, draw=self._draw,
            nonfinite=torch.zeros((), dtype=torch.bool, device=dev),
            emas=[(ema, self._nets()[name]) for name, ema in self.emas_.items()], amp=self._amp, grad_clip=self.grad_clip,
        )

    def _draw_images(self, state: TrainState) -> torch.Tensor:
        """A minibatch of pool images in model space, flipped at random with ``hflip``."""
        gen, dev, B = state.generator, state.device, self.batch_size
        idx = torch.randint(0, state.pool.shape[0], (B,), generator=gen, device=dev)
        x0 = self._images_in(state.pool[idx])
        if self.hflip:  # random horizontal flips (DiffAE, InfoDiffusion and PDAE train CelebA/FFHQ with them)
            flip = torch.rand((B,), generator=gen, device=dev) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        return x0

    def _draw(self, state: TrainState) -> dict[str, torch.Tensor]:
        """The random inputs of one step, all drawn on the device from the state's generator."""
        gen, dev, B = state.generator, state.device, self.batch_size
        x0 = self._draw_images(state)
        t = torch.randint(0, self.timesteps, (B,), generator=gen, device=dev)
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        return {"x0": x0, "t": t, "noise": noise}

    @native_convs
    def train_step(self, state: TrainState) -> torch.Tensor:
        """One optimiser step; returns the loss as a device tensor (no host synchronisation)."""
        return train_step(state)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_simple of Ho et al. 2020, eq. 14 (the batch mean)."""
        net = self.unet_
        return epsilon_loss(lambda x, t: net(x, t), self.schedule_, batch["x0"], batch["t"], batch["noise"]).mean()

    @native_convs
    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> "DiffusionFamily":
        """Train for ``steps`` steps on uniform minibatches of the data pool, then run :meth:`_after_fit`."""
        state = self.setup_training(data, seed=seed, device=device)
        self.history_: list[tuple[int, float]] = []
        self._run_loop(state, self.steps, f"fit {type(self).__name__}", progress, self.history_, self.lr, self.batch_size)
        self._fitted = True
        for net in self._nets().values():
            net.eval()
        self._after_fit(data, state, seed, progress)
        return self

    def _run_loop(self, state: TrainState, steps: int, desc: str, progress: bool, history: list,
                  lr: float, batch_size: int, phase: str = "train") -> None:
        """``steps`` calls of :func:`train_step`; the loss is read and checked every ``log_every`` steps."""
        bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False)
        for step in bar:
            loss = train_step(state)
            if step % self.log_every == 0 or step == steps:
                value = float(loss)  # the only host sync, every log_every steps
                history.append((step, value))
                current_lr = state.optimizer.param_groups[0]["lr"]
                self.log_scalars(step, phase=phase, loss=value, lr=current_lr)
                bar.set_postfix(loss=f"{value:.4f}")
                if bool(state.nonfinite):
                    raise DivergedError(
                        f"{type(self).__name__} ({desc}): loss became NaN/inf by step {step} "
                        f"(lr={lr}, batch_size={batch_size}); lower the learning rate"
                    )

    def _after_fit(self, data, state: TrainState, seed: int, progress: bool) -> None:
        """Hook run once after training (DiffAE trains its latent DDPM here)."""

    # -- inference ---------------------------------------------------------------------
    def _denoiser(self, z: torch.Tensor | None = None) -> Denoiser:
        """ε̂(x_t, t) with the evaluation weights (EMA when kept), conditioned on ``z`` if given."""
        net = self._eval_net("unet")
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

    @torch.no_grad()
    def _invert(self, x: np.ndarray, z: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM inversion x_0 → x_T of images ``x`` (conditioned on codes ``z``), on the device."""
        x0 = self._images_in(torch.from_numpy(x).to(self.device_))
        return ddim_invert(self._denoiser(z), self._ddim(self._inversion_steps()), x0)

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

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": {name: _cpu_state(self._eval_net(name)) for name in self._nets()},
            "history": [list(h) for h in getattr(self, "history_", [])],
        }

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        self._build(input_shape)
        for name, net in self._nets().items():
            net.load_state_dict(state["nets"][name])
            net.eval()
        self.history_ = [tuple(h) for h in state.get("history", [])]


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
            x0 = sample_loop(denoiser(zc), sampler, x_T[part].to(self.device_), generator)
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
            raise RuntimeError(f"{type(self).__name__}: no latent DDPM was trained, so codes cannot be sampled from it")
        net = self.latent_ema_.shadow if self.latent_ema_ is not None else self.latent_net_
        sampler = DDIMSampler(self.latent_schedule_, eta=0.0, spacing=self.spacing)
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


def train_step(state: TrainState) -> torch.Tensor:
    """Draw a batch, take one optimiser step, update the EMAs; the loss stays on the device."""
    batch = state.draw(state)
    with state.amp():
        loss = state.loss_fn(batch)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.params, state.grad_clip, foreach=True)
    state.optimizer.step()
    if state.scheduler is not None:
        state.scheduler.step()
    for ema, live in state.emas:
        ema.update(live)
    loss = loss.detach()
    state.nonfinite |= ~torch.isfinite(loss)
    return loss


def adamw_kwargs(device: torch.device) -> dict[str, bool]:
    """Fused AdamW on CUDA; the multi-tensor (foreach) implementation elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


def _data_pool(data, size: int, rng: np.random.Generator, device: torch.device, chunk: int = 8192) -> torch.Tensor:
    """``size`` training images (all when 0 or ≥ len) rendered once into one device tensor in [0, 1].

    float16 on CUDA halves the memory (exact for dSprites' values k/4 and 0/1), float32 on CPU.
    """
    n_all = len(data)
    if size < 0:
        raise ValueError(f"data_pool must be >= 0 (0 = the whole dataset), got {size}")
    n = n_all if size == 0 or size >= n_all else size
    idx = np.arange(n_all) if n == n_all else np.sort(rng.choice(n_all, size=n, replace=False))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pool = torch.empty((n, *data.image_shape), dtype=dtype, device=device)
    for start in range(0, n, chunk):
        part = idx[start:start + chunk]
        pool[start:start + len(part)] = torch.from_numpy(data.images(part)).to(device=device, dtype=dtype)
    return pool

