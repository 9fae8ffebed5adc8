"""The training loop every diffusion adapter shares, and its CPU/GPU switches.

:class:`DiffusionTraining` is the training half of :class:`methods.diffusion_base.DiffusionFamily`
(a mixin: it reads the hyperparameters, networks and device helpers the family defines);
:class:`TrainState` and :func:`train_step` are the loop's state and one step of it, reused
by the latent DDPM of :mod:`methods.diffusion_autoencoding` and by methods with their own
training phases. The loop is written for GPU throughput:

* minibatches come from a pool of training images rendered once and kept on the training
  device (``data_pool`` images; 0 = the whole dataset; float16 on CUDA, float32 on CPU);
  the indices, timesteps and noise are drawn on the device from one seeded generator;
* bf16 autocast (``amp_bf16``), channels-last memory (``channels_last``), fused AdamW
  (:func:`adamw_kwargs`) and optionally ``torch.compile`` of the loss (``compile``) on CUDA
  (:func:`maybe_compile`; the environment variable ``BENCH_COMPILE_BACKEND`` compiles on the
  CPU too, for the tests that prove a compiled step computes the eager one);
* no host synchronisation inside a step: the loss is read, and NaN/inf checked (a
  :class:`~bench.adapter.DivergedError`), only every ``log_every`` steps;
* on the CPU, convolutions use PyTorch's native kernels instead of oneDNN while an adapter
  method runs (``cpu_native_conv``, see :func:`native_cpu_convolutions`; :func:`native_convs`
  wraps training and inference methods alike);
* random horizontal flips of the training images with ``hflip`` (off by default: a flip
  changes a factor of some factor datasets; bench.toml's CelebA profiles switch it on);
* gradient clipping at ``grad_clip`` (DiffAE and InfoDiffusion clip at 1), an optional
  linear learning-rate warm-up (``warmup_steps``) or InfoDiffusion's schedule
  (``lr_schedule = "infodiffusion"``: ×2 warm-up over the first epoch, then a cosine decay
  per epoch, :func:`methods.lr_schedules.infodiffusion_lr_factor`), and an EMA of the
  weights (``ema_decay``; 0 disables) whose weights are the ones used for encoding and
  sampling and the ones saved.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.adapter import DivergedError, resolve_device, seed_everything
from bench.diffusion.ema import EMA
from bench.diffusion.samplers import epsilon_loss
from methods.lr_schedules import infodiffusion_scheduler


#: the environment variable naming a ``torch.compile`` backend that compiles ``compile = true`` models on any device
COMPILE_BACKEND_ENV = "BENCH_COMPILE_BACKEND"


def compile_backend(device: str | torch.device, enabled: bool = True) -> str | None:
    """The ``torch.compile`` backend a model with ``compile = enabled`` uses on ``device``; None = run eagerly.

    By default ``compile`` means "compile on CUDA": ``"inductor"`` (``torch.compile``'s
    default) there, eager everywhere else, since an inductor compile on the CPU generates C++
    for minutes and gains nothing at the sizes run there. When the environment variable
    ``BENCH_COMPILE_BACKEND`` names a backend (``inductor``, ``aot_eager``, ``eager``, …, see
    ``torch._dynamo.list_backends()``), an enabled model compiles with that backend on every
    device, the CPU included: ``tests/test_compiled_equivalence.py`` sets it to check that
    the compiled training step and the compiled samplers compute the eager functions. It is
    read when a model sets up training and when it first builds a denoiser on a network; it
    never enables compilation by itself (``compile`` stays the switch) and is not a
    hyperparameter, so it changes no stage id.
    """
    if not enabled:
        return None
    forced = os.environ.get(COMPILE_BACKEND_ENV, "").strip()
    if forced:
        return forced
    return "inductor" if torch.device(device).type == "cuda" else None


def maybe_compile(fn: Callable, device: str | torch.device, enabled: bool) -> Callable:
    """``torch.compile(fn)`` with the backend of :func:`compile_backend` (``fn`` itself when that is None).

    Used for the training loss (:meth:`DiffusionTraining.setup_training`) and, through
    :meth:`methods.diffusion_base.DiffusionFamily._inference_net`, for the networks that sampling,
    inversion and decoding call; a compiled module shares the parameters of the one it wraps.
    """
    backend = compile_backend(device, enabled)
    return fn if backend is None else torch.compile(fn, backend=backend)


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
    """Everything one training step needs; built by :meth:`DiffusionTraining.setup_training`."""

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


def warm_schedule(schedule, device: torch.device) -> None:
    """Cache every table of a :class:`~bench.diffusion.schedules.NoiseSchedule` on ``device`` (see ``_warm_caches``)."""
    t = torch.zeros(1, dtype=torch.long, device=device)
    for name, value in list(vars(schedule).items()):
        if isinstance(value, torch.Tensor) and value.ndim == 1:
            schedule.gather(name, t, 1)


def adamw_kwargs(device: torch.device) -> dict[str, bool]:
    """Fused AdamW on CUDA; the multi-tensor (foreach) implementation elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


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


class DiffusionTraining:
    """The training loop of a diffusion adapter (see the module docstring).

    A mixin of :class:`~methods.diffusion_base.DiffusionFamily`: it uses the host's
    hyperparameters and its ``_build``, ``to``, ``_nets``, ``_averaged``, ``_amp``,
    ``_images_in`` and ``log_scalars``. A method overrides :meth:`_loss` (and :meth:`_draw`
    when its loss needs other random inputs) and :meth:`_after_fit` for a later phase.
    """

    #: LitEma's decay warm-up min(decay, (1 + n)/(10 + n)) (the LDM-based references: EncDiff, DisDiff)
    ema_warmup: ClassVar[bool] = False
    #: the learning-rate factor at step 0 of the linear warm-up (None: 1/warmup_steps; LDM's configs: 1e-6)
    warmup_start: ClassVar[float | None] = None

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
            if self.warmup_start is None:
                scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))
            else:  # LDM's LambdaLinearScheduler: f_start + (1 - f_start) n / warm
                start = self.warmup_start
                scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, start + (1 - start) * s / warm))
        if self.ema_decay > 0:
            self.emas_ = {name: EMA(net, self.ema_decay, warmup=self.ema_warmup)
                          for name, net in self._nets().items() if name in self._averaged()}
        self._warm_caches(dev)
        loss_fn = maybe_compile(self._loss, dev, bool(self.compile))
        return TrainState(
            device=dev, generator=torch.Generator(device=dev).manual_seed(seed), pool=pool, params=params,
            optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, draw=self._draw,
            nonfinite=torch.zeros((), dtype=torch.bool, device=dev),
            emas=[(ema, self._nets()[name]) for name, ema in self.emas_.items()], amp=self._amp, grad_clip=self.grad_clip,
        )

    def _warm_caches(self, device: torch.device) -> None:
        """Fill the per-device tables the loss reads lazily (the noise schedule's float32 copies) before the first step.

        The tables are the same whenever they are filled; filling them here keeps a compiled loss
        from being traced twice (a table added during the first call fails the compiled graph's
        guard on the cache, and the whole forward and backward are compiled again at step 2).
        """
        schedule = getattr(self, "schedule_", None)
        if schedule is not None:
            warm_schedule(schedule, device)

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
    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> "DiffusionTraining":
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
