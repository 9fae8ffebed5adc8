"""PDAE: representation learning on a pre-trained, frozen DPM (Zhang et al. 2022, "Unsupervised
Representation Learning from Pre-trained Diffusion Probabilistic Models", NeurIPS).

**Stage 1** is a DPM ε_θ(x_t, t) — here the ``dpm`` component, the project's ``ddpm`` trained
once per dataset by the runner and shared by every PDAE/DisDiff cell and seed that asks for
the same one. It stays frozen (eval mode, no gradient, weights untouched).

**Stage 2** trains a semantic encoder z = E_φ(x_0) (:class:`bench.diffusion.encoders.PDAEEncoder`)
and a gradient estimator G_ψ(x_t, z, t) (:class:`bench.diffusion.unet.ShiftDecoder`: new
middle and decoder-half blocks over the frozen encoder half's skips and time embedding,
conditioned by ``(1 + z_s)(GN(h)(1 + t_s) + t_b) + z_b``, zero-initialised output, so G ≡ 0
and the model starts as the DPM) to fill the posterior-mean gap (§3.2–3.3, eqs. 9–10):

    L = E_{x_0, t, ε} [ w_t ‖ε − (ε_θ(x_t, t) + c_t · G_ψ(x_t, E_φ(x_0), t))‖² ]

with c_t = −√α_t (1 − ᾱ_{t−1}) / √(1 − ᾱ_t) and w_t = SNR_t^γ / (1 + SNR_t), γ = 0.1
(= (1/(1+SNR))^{1−γ} (SNR/(1+SNR))^γ, §3.4), as ckczzj/PDAE ``diffusion/gaussian_diffusion.py``
(``shift_coef``, ``weight``, ``representation_learning_train_one_batch``).

Inference (``diffusion/ddim.py: shift_ddim_sample``): the shifted noise prediction is
ε_θ(x_t, t) − √(1 − ᾱ_t) · G (the classifier-guidance form of DDIM — a different coefficient
from training's c_t, as in the reference). ``encode`` = z; ``reconstruct`` = shifted DDIM
inversion to x_T (``inversion_steps``; the reference uses 1000) and shifted DDIM decoding
(``ddim_steps``; 100); ``decode(z)`` decodes from one fixed x_T; ``sample`` draws z from a
latent DDPM over z-normalised codes (DiffAE's MLP with skips, constant β = 0.008, L1,
AdamW lr 1e-3 weight decay 0.01, batch 128, ``config/celeba64_latent.yml``; z_T clamped to
[−1, 1] as ``latent_diffusion_sample``), then decodes with the shift switched off for the
last ``stop_percent`` = 30 % of the DDIM steps (§4.8; ``stop_percent = 1`` is plain DDIM
sampling of the frozen DPM, 0 shifts every step).

Presets: ``paper`` is PDAE's CelebA-64 setting: the DPM is DiffAE's CelebA-64 DDPM
architecture (base 64, multipliers (1, 2, 4, 8), attention at 16×16, 2 residual blocks,
dropout 0.1, time embedding 4 · 64, linear β 1e-4 → 0.02, T = 1000, ε-MSE, Adam 1e-4, EMA
0.9999, batch 128, 562,500 steps = DiffAE's 72 M images); stage 2: z = 512, Adam lr 1e-4,
no weight decay, EMA 0.9999, batch 32 per GPU (``config/celeba64_representation_learning.yml``;
128 here); the 32-d z of InfoDiffusion's Table 6 comparison is ``latent_dim = 32`` (bench.toml's
``pdae-paper`` profile sweeps both on one shared DPM). The reference
trains until stopped: the stage-2 and latent step counts (200,000 and 200,000) are this
harness's choice. ``tiny`` is for CPU tests.

``released`` is ``paper`` with ``resample = "resblock"``: the DPM (the ``dpm`` component,
:class:`methods.ddpm.DDPM` preset ``released-pdae-celeba64``), the encoder and G are the
networks of PDAE's released CelebA-64 models (``pre-trained-dpms/celeba64``,
``trained-models/autoencoder/celeba64``: ``model/unet.py``, ``model/shift_unet.py``,
``model/representation_learning/encoder/celeba64.py``), weight-compatible with them through
:mod:`bench.released.pdae` (DPM 63,958,019 parameters, encoder 1,487,104, G 52,007,811, as
the reference's); ``pretrained = <trained-models/autoencoder/<data>/checkpoint.pt>`` converts the
released model instead of training it (its ``dpm`` component from the same file).

Deviations: ``paper`` (the default, ``resample = "conv"``) resamples the DPM with a stride-2 /
nearest-neighbour conv instead of resampling residual blocks (see :mod:`bench.diffusion.unet`):
59.39 M DPM parameters instead of 63.96 M, not weight-compatible with the reference's
checkpoints; ``released`` is.

DDIM chains are the reference's (``diffusion/ddim.py``): ``spacing = "linspace"`` takes the
levels ⌊linspace(0, T − 1, S + 1)⌋ with level 0 standing for the data, so the 1000-step
inversion and the 100-step decoding both meet at t = 999; x̂_0 is clipped to [−1, 1] in
decoding, in the inversion (``ddim_encode``) and in the latent DDIM (normalised ẑ_0).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from bench.adapter import Component
from bench.diffusion.encoders import PDAEEncoder
from bench.diffusion.samplers import Denoiser, q_sample
from bench.diffusion.schedules import NoiseSchedule, make_schedule
from bench.diffusion.unet import ShiftDecoder
from methods.diffusion_autoencoding import LATENT_DDPM_DEFAULTS, TINY_LATENT_DDPM, AutoencodingDiffusion
from methods.diffusion_base import DIFFUSION_DEFAULTS, DIFFUSION_RANGES, TINY_NET

#: the hyperparameters that define the frozen DPM (passed to the ``dpm`` component as they are)
DPM_KEYS = ("base_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout", "norm_groups",
            "time_embed_dim", "cond_layout", "num_heads", "schedule", "timesteps", "resample")
#: stage-1 training hyperparameters: ``dpm_<key>`` of the dependant is ``<key>`` of the DPM
DPM_TRAINING = ("steps", "batch_size", "lr", "weight_decay", "ema_decay", "grad_clip")

LOSS_WEIGHTINGS = ("snr", "none")
LOSS_TYPES = ("mse", "l1")


def dpm_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``ddpm`` component's hyperparameters for a PDAE/DisDiff cell with ``params`` (its CPU kernels too)."""
    return {**{k: params[k] for k in DPM_KEYS}, **{k: params[f"dpm_{k}"] for k in DPM_TRAINING},
            "cpu_native_conv": params["cpu_native_conv"],
            "hflip": params["hflip"]}  # the reference's DPM trains with the flips its stage 2 uses


def pdae_dpm_params(params: dict[str, Any]) -> dict[str, Any]:
    """PDAE's ``dpm`` component: :func:`dpm_params` and ``pretrained``: a released PDAE checkpoint's
    ``ema_decoder`` holds the frozen DPM, so the component is converted from the same file."""
    return {**dpm_params(params), "pretrained": params["pretrained"]}


def shift_coefficient(schedule: NoiseSchedule) -> torch.Tensor:
    """c_t = −√α_t (1 − ᾱ_{t−1}) / √(1 − ᾱ_t): G's coefficient in the training ε (PDAE eq. 10, ``shift_coef``)."""
    return -schedule.alphas.sqrt() * (1.0 - schedule.alphas_cumprod_prev) / schedule.sqrt_one_minus_alphas_cumprod


def snr_weight(schedule: NoiseSchedule, gamma: float) -> torch.Tensor:
    """w_t = SNR_t^γ / (1 + SNR_t) with SNR_t = ᾱ_t / (1 − ᾱ_t) (PDAE §3.4, ``weight``)."""
    snr = schedule.alphas_cumprod / (1.0 - schedule.alphas_cumprod)
    return snr**gamma / (1.0 + snr)


PDAE_DEFAULTS: dict[str, Any] = {
    **DIFFUSION_DEFAULTS,
    **LATENT_DDPM_DEFAULTS,
    # the frozen DPM's architecture and schedule (DiffAE's CelebA-64 DDPM, PDAE's model/unet.py)
    "time_embed_dim": 0,
    "cond_layout": "joint",
    "schedule": "linear",
    "resample": "conv",  # "resblock": the reference's resampling residual blocks (preset "released")
    # stage 1: how the DPM component is trained
    "dpm_steps": 562_500,
    "dpm_batch_size": 128,
    "dpm_lr": 1e-4,
    "dpm_weight_decay": 0.0,
    "dpm_ema_decay": 0.9999,
    "dpm_grad_clip": 1.0,
    # stage 2
    "latent_dim": 512,
    "enc_channels": [64, 128, 128, 128],
    "enc_attention_resolutions": [16],
    "enc_num_heads": 4,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "batch_size": 128,
    "steps": 200_000,
    "grad_clip": 0.0,
    "ema_decay": 0.9999,
    "loss_type": "mse",
    "loss_weighting": "snr",
    "weight_gamma": 0.1,
    # inference
    "ddim_steps": 100,
    "spacing": "linspace",
    "inversion_steps": 1000,
    "stop_percent": 0.3,
    # latent DDPM (config/celeba64_latent.yml)
    "latent_lr": 1e-3,
    "latent_batch_size": 128,
    "latent_steps": 200_000,
    "latent_ddim_steps": 100,
}

PDAE_RANGES = {**DIFFUSION_RANGES, "dpm_steps": ">= 1", "dpm_batch_size": ">= 1", "dpm_lr": "> 0",
               "dpm_weight_decay": ">= 0", "dpm_ema_decay": "[0, 1)", "dpm_grad_clip": ">= 0",
               "enc_channels": "each >= 1", "enc_attention_resolutions": "each >= 1", "enc_num_heads": ">= 1",
               "weight_gamma": ">= 0", "inversion_steps": ">= 0", "stop_percent": "[0, 1]"}

#: CPU-test sizes. oneDNN convolutions (``cpu_native_conv = False``, passed to the DPM too): at
#: 32 px and batch 16 on the 2-core CPU a PDAE step takes 0.13 s with them, 0.42 s with the
#: native kernels (DDPM: 0.12 s vs 0.30 s; the native kernels win only on 16 px test images)
TINY_PDAE: dict[str, Any] = {
    **TINY_NET,
    **TINY_LATENT_DDPM,
    "cpu_native_conv": False,
    "batch_size": 16,
    "dpm_steps": 100,
    "dpm_batch_size": 16,
    "dpm_lr": 2e-3,
    "dpm_weight_decay": 0.0,
    "dpm_ema_decay": 0.99,
    "dpm_grad_clip": 1.0,
    "enc_channels": [16, 32, 32, 32],
    "enc_attention_resolutions": [],
    "enc_num_heads": 1,
    "weight_decay": 0.0,
    "inversion_steps": 0,
}


class FrozenPass(nn.Module):
    """The frozen DPM's ε_θ(x_t, t) and the encoder-half features G reads, as one module (one compiled graph).

    Holds the adapter's frozen UNet (not a copy); it is not one of the adapter's ``_nets`` and
    is never saved.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor):
        h, skips, conds = self.unet.features(x_t, t)
        return self.unet.decode_features(h, skips, conds).float(), h, skips, conds["t"]


class PDAE(AutoencodingDiffusion):
    """Encoder + gradient estimator on a frozen ``ddpm`` component (see the module docstring)."""

    defaults: ClassVar[dict[str, Any]] = {**PDAE_DEFAULTS, "pretrained": ""}
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_PDAE), "paper": {}, "released": {"resample": "resblock"}}
    ranges = PDAE_RANGES
    #: ``resample`` (added for the authors' checkpoints) keeps today's stride-2 / nearest-neighbour convs at "conv";
    #: ``pretrained``: a released trained-models/autoencoder checkpoint to convert instead of training
    #: (:mod:`bench.released`); its frozen DPM (the ``dpm`` component) comes from the same file
    added_params: ClassVar[dict[str, Any]] = {"resample": "conv", "pretrained": ""}
    capabilities = frozenset({"sample", "decode", "reconstruct"})
    #: the ``released`` DPM is ddpm's ``released-pdae-celeba64`` (the same hyperparameters: those of DPM_KEYS pass on)
    components = {"dpm": Component("ddpm", params=pdae_dpm_params, preset={"released": "released-pdae-celeba64"})}
    latent_noise_clamp = 1.0
    latent_clip_x0 = True
    clip_inversion = True
    # 2: the reference's DDIM chain (spacing "linspace": inversion and decoding both end at t = T - 1, level 0
    # is the data; x̂_0 clipped in the inversion and in the latent DDIM)
    version = "2"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._check_choice("loss_type", LOSS_TYPES)
        self._check_choice("loss_weighting", LOSS_WEIGHTINGS)
        if self.sampler != "ddim":
            raise ValueError(f"{type(self).__name__}: sampler must be 'ddim' (the reference samples with shifted DDIM), "
                             f"got {self.sampler!r}")
        if self.inversion_steps > self.timesteps:
            raise ValueError(f"{type(self).__name__}: inversion_steps must be in [0, timesteps={self.timesteps}] "
                             f"(0 = ddim_steps), got {self.inversion_steps}")

    def _check_sampler_override(self, over: dict[str, Any]) -> None:
        if over["sampler"] != "ddim":
            raise ValueError(f"{type(self).__name__} samples with shifted DDIM only (the reference); "
                             f"use a 'ddim-N' sampling protocol")

    # -- the frozen DPM ----------------------------------------------------------------
    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
            components: dict[str, Any] | None = None) -> "PDAE":
        """Stage 2 on the trained ``dpm`` component (``components={"dpm": ddpm_adapter}``)."""
        self.components_ = dict(components or {})
        self._frozen_dpm()  # a missing or mismatched DPM fails before any work
        return super().fit(data, seed=seed, device=device, progress=progress)

    def _dpm_component(self) -> tuple[str, tuple[str, ...]]:
        """The frozen DPM's component name and the hyperparameters it must share with this model."""
        return "dpm", DPM_KEYS

    def _frozen_dpm(self):
        name, keys = self._dpm_component()
        dpm = self.__dict__.get("components_", {}).get(name)
        if dpm is None:
            raise ValueError(f"{type(self).__name__} is trained on a pre-trained DPM: pass components={{{name!r}: <fitted "
                             f"{'ddpm' if name == 'dpm' else name}>}} to fit() and load() (the runner does)")
        dpm.check_fitted()
        theirs = dpm.get_params()
        for key in keys:
            if theirs[key] != self._params[key]:
                raise ValueError(f"{type(self).__name__}: the {name!r} component has {key}={theirs[key]!r}, but this "
                                 f"model expects {key}={self._params[key]!r}")
        return dpm

    def _frozen_unet(self, dpm) -> nn.Module:
        """The DPM component's UNet this model freezes: its EMA weights, as PDAE's ``load_trained_ddpm`` reads."""
        return dpm._eval_net("unet")

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        dpm = self._frozen_dpm()
        if tuple(dpm.input_shape) != tuple(input_shape):
            raise ValueError(f"{type(self).__name__}: the 'dpm' component was trained on images of shape "
                             f"{tuple(dpm.input_shape)}, not {tuple(input_shape)}")
        self.input_shape = tuple(input_shape)
        self.schedule_ = make_schedule(self.schedule, self.timesteps)
        self.device_ = torch.device("cpu")
        self.emas_ = {}
        self.latent_net_ = None
        self.latent_ema_ = None
        # a private copy: moving or casting it never touches the component's own adapter
        self.unet_ = copy.deepcopy(self._frozen_unet(dpm)).eval().requires_grad_(False)
        self.frozen_ = FrozenPass(self.unet_)
        self._tables: dict[tuple[str, str], torch.Tensor] = {}
        self._build_stage2(input_shape)

    def _build_stage2(self, input_shape: tuple[int, int, int]) -> None:
        c, h, _ = input_shape
        self.encoder_ = PDAEEncoder(in_channels=c, image_size=h, out_dim=self.latent_dim,
                                    channels=tuple(self.enc_channels),
                                    attention_resolutions=tuple(self.enc_attention_resolutions),
                                    norm_groups=self.norm_groups, num_heads=self.enc_num_heads)
        self.shift_ = ShiftDecoder(self.unet_, self.latent_dim)

    def _nets(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder_, "shift": self.shift_}

    def to(self, device: str | torch.device) -> "PDAE":
        super().to(device)
        self.unet_.to(self.device_)
        if self._use_channels_last():
            self.unet_.to(memory_format=torch.channels_last)
        return self

    def _table(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """c_t (``"shift_coef"``) or w_t (``"weight"``) at ``t``, shaped (B, 1, …), cached per device."""
        key = (name, str(t.device))
        table = self._tables.get(key)
        if table is None:
            values = {"shift_coef": lambda: shift_coefficient(self.schedule_),
                      "weight": lambda: snr_weight(self.schedule_, self.weight_gamma)}[name]()
            table = self._tables[key] = values.to(device=t.device, dtype=torch.float32)
        return table[t].reshape(-1, *([1] * (ndim - 1)))

    def _warm_caches(self, device: torch.device) -> None:
        super()._warm_caches(device)
        t = torch.zeros(1, dtype=torch.long, device=device)
        for name in ("shift_coef", "weight") if self.loss_weighting == "snr" else ("shift_coef",):
            self._table(name, t, 1)

    # -- training ----------------------------------------------------------------------
    def _frozen_pass(self, x_t: torch.Tensor, t: torch.Tensor, *, evaluation: bool = False):
        """The frozen DPM: ε_θ(x_t, t) and the encoder-half features G reads (no gradient).

        With ``evaluation`` (sampling, inversion) through :meth:`_inference_net` (compiled when ``compile`` is set).
        """
        frozen = self._inference_net(self.frozen_) if evaluation else self.frozen_
        with torch.no_grad():
            return frozen(x_t, t)

    def _gradient(self, h, skips, time_emb: torch.Tensor, z: torch.Tensor, *, evaluation: bool) -> torch.Tensor:
        """G(x_t, z, t) from the frozen features, with the EMA weights when ``evaluation`` (DisDiff: Σ over units)."""
        shift = self._inference_net(self._eval_net("shift")) if evaluation else self.shift_
        return shift(h, skips, time_emb, z).float()

    def shift_objective(self, eps: torch.Tensor, gradient: torch.Tensor, noise: torch.Tensor,
                        t: torch.Tensor) -> torch.Tensor:
        """Per-item ‖ε − (ε_θ + c_t G)‖ (squared for ``mse``) averaged over dimensions, × w_t when weighted."""
        pred = eps + self._table("shift_coef", t, eps.ndim) * gradient
        diff = pred - noise.float()
        per = (diff.pow(2) if self.loss_type == "mse" else diff.abs()).flatten(1).mean(1)
        if self.loss_weighting == "snr":
            per = per * self._table("weight", t, 2).flatten()
        return per

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """PDAE's weighted objective (eqs. 9–10), the batch mean."""
        x0, t, noise = batch["x0"], batch["t"], batch["noise"]
        z = self.encoder_(x0).float()
        eps, h, skips, temb = self._frozen_pass(q_sample(self.schedule_, x0, noise, t), t)
        return self.shift_objective(eps, self._gradient(h, skips, temb, z, evaluation=False), noise, t).mean()

    # -- inference ---------------------------------------------------------------------
    def _denoiser(self, z: torch.Tensor | None = None, shift_from: int | None = None) -> Denoiser:
        """ε_θ(x_t, t) − √(1 − ᾱ_t) G(x_t, z, t); unshifted without ``z`` or for t < ``shift_from``."""
        channels_last = self._use_channels_last()

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._amp():
                out, h, skips, temb = self._frozen_pass(x, t, evaluation=True)
                if z is None or (shift_from is not None and int(t[0]) < shift_from):
                    return out
                gradient = self._gradient(h, skips, temb, z, evaluation=True)
            return out - self.schedule_.gather("sqrt_one_minus_alphas_cumprod", t, out.ndim) * gradient

        return eps

    def _sampling_denoiser(self, z: torch.Tensor) -> Denoiser:
        """The shift is off for the last ``stop_percent`` of the DDIM steps (``shift_ddim_sample_loop``)."""
        steps = self._image_sampler().timesteps.tolist()  # descending
        stop = int(self.stop_percent * len(steps))
        if stop >= len(steps):
            return self._denoiser(None)
        return self._denoiser(z, shift_from=steps[len(steps) - 1 - stop] if stop else None)

    def _inversion_steps(self) -> int | None:
        """Shifted DDIM inversion takes ``inversion_steps`` steps (0 = ``ddim_steps``; the reference: 1000)."""
        return self.inversion_steps or None
