"""The base class of every diffusion adapter: hyperparameters, networks, devices, checkpoint I/O.

:class:`DiffusionFamily` is the base of every diffusion method (DDPM, DiffAE,
InfoDiffusion, PDAE, DisDiff, EncDiff, DRL). It holds the hyperparameter tables every
diffusion adapter shares (:data:`DIFFUSION_DEFAULTS`, :data:`DIFFUSION_RANGES`, the
``tiny`` net :data:`TINY_NET`), builds the networks (a UNet ε_θ(x_t, t) by default),
places them on a device (channels-last and bf16 autocast on CUDA) and saves and loads
them. It combines two mixins:

* :class:`methods.diffusion_training.DiffusionTraining` — the shared training loop and its
  CPU/GPU switches;
* :class:`methods.diffusion_sampling.DiffusionSampling` — sampling, DDIM inversion and
  reconstruction.

Methods with a semantic encoder build on :class:`methods.diffusion_autoencoding.AutoencodingDiffusion`.

Checkpoints hold the evaluation weights only (the EMA weights when an EMA is kept), not
the optimiser state: a saved adapter evaluates, it does not resume training.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, ClassVar

import torch
from torch import nn

from bench.adapter import Adapter
from bench.diffusion.ema import EMA
from bench.diffusion.samplers import SPACINGS
from bench.diffusion.schedules import SCHEDULES, make_schedule
from bench.diffusion.unet import LAYOUTS, RESAMPLES, UNet
from methods.diffusion_sampling import SAMPLERS, DiffusionSampling
from methods.diffusion_training import DiffusionTraining, compile_backend
from methods.lr_schedules import LR_SCHEDULES

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
    "amp_bf16": False,      # fp32 as every reference trains; bf16 autocast (CUDA) is opt-in until a loss-curve check
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


class DiffusionFamily(DiffusionTraining, DiffusionSampling, Adapter):
    """Shared machinery of every diffusion adapter (see the module docstring).

    The training loop (``setup_training``, ``train_step``, ``fit``) comes from
    :class:`~methods.diffusion_training.DiffusionTraining`; ``sample``, ``reconstruct`` and
    the inversion from :class:`~methods.diffusion_sampling.DiffusionSampling`.
    """

    defaults: ClassVar[dict[str, Any]] = dict(DIFFUSION_DEFAULTS)
    ranges = DIFFUSION_RANGES
    #: hyperparameter -> its allowed names, checked at construction (a method overrides the table for its own keys)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "schedule": SCHEDULES, "cond_layout": LAYOUTS, "sampler": SAMPLERS, "spacing": SPACINGS,
        "lr_schedule": LR_SCHEDULES, "latent_schedule": SCHEDULES, "latent_loss": ("mse", "l1"),
        "resample": RESAMPLES,
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
            # the methods that declare it (DDPM, PDAE's DPM, DiffAE): the authors' networks resample in residual blocks
            **({"resample": self.resample} if "resample" in self._params else {}),
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

    def _inference_net(self, net: nn.Module) -> nn.Module:
        """``net`` for sampling, inversion and decoding: ``torch.compile``d when ``compile`` is set (on CUDA, or
        with the backend of ``BENCH_COMPILE_BACKEND`` anywhere; :func:`methods.diffusion_training.compile_backend`).

        The compiled module shares ``net``'s parameters (kept per network and backend, compiled
        once); state dicts are always taken from the plain modules.
        """
        backend = compile_backend(self.device_, bool(self.compile))
        if backend is None:
            return net
        cache = self.__dict__.setdefault("_compiled_nets", {})
        key = (id(net), backend)
        if key not in cache:
            cache[key] = (net, torch.compile(net, backend=backend))
        return cache[key][1]

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

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "nets": {name: _cpu_state(self._eval_net(name)) for name in self._nets()},
            "history": [list(h) for h in getattr(self, "history_", [])],
        }
        if self._params.get("keep_live"):  # the live weights beside the EMA ones (methods that declare keep_live)
            state["live_nets"] = {name: _cpu_state(self._live_net(name)) for name in self._nets()}
        return state

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        self._build(input_shape)
        for name, net in self._nets().items():
            net.load_state_dict(state["nets"][name])
            net.eval()
        self.history_ = [tuple(h) for h in state.get("history", [])]
        self.live_state_ = state.get("live_nets")

    def _live_net(self, name: str) -> nn.Module:
        """Network ``name`` with its live (non-EMA) weights: the trained module itself after :meth:`fit`; after
        :meth:`load`, a copy with the checkpoint's ``live_nets`` (saved only with ``keep_live = true``)."""
        if name in self.emas_ or "live_state_" not in self.__dict__:
            return self._nets()[name]  # just trained (or no EMA: the live weights are the evaluated ones)
        if self.live_state_ is None:
            if self.ema_decay == 0:
                return self._nets()[name]
            raise ValueError(f"{type(self).__name__}: this checkpoint holds only the EMA weights of {name!r}; the "
                             "live ones are kept when the model is trained with keep_live = true")
        net = copy.deepcopy(self._nets()[name])
        net.load_state_dict(self.live_state_[name])
        return net.eval()


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
