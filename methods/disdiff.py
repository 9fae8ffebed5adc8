"""DisDiff: unsupervised disentanglement of a pre-trained diffusion model (Yang et al. 2023,
"DisDiff: Unsupervised Disentanglement of Diffusion Probabilistic Models", NeurIPS).

PDAE's construction (:mod:`methods.pdae`) with the code split into N latent units and one
gradient field per unit (§3.2): an encoder E_φ(x_0) = {z¹ … z^N}
(:class:`bench.diffusion.encoders.DisDiffEncoder`, DisDiff's ``Encoder4``, N·D outputs) and
one shift decoder G_ψ run once per unit c, reading the frozen DPM's encoder-half features,
with the code embedding ``repre_embed(z^c)`` and the time embedding offset by a part
embedding of the unit: ``part_emb(expm(Wᵀ − W)[c])`` (the reference's ``torch_expm(W − Wᵀ)``), W of (time width / 2)² — an orthogonal
row per unit (``orth_emb``; ThomasMrY/DisDiff ``openaimodel_shift.py: UNetModel.forward``).
Then ε̂ = ε_θ(x_t, t) + c_t Σ_c G_ψ(x_t, z^c, t) with PDAE's c_t, and

    L = l_simple · mean |ε̂ − ε| + mean_b[ w_b · dis_weight · (CE(‖ẑ − z‖ − ‖ẑ^c − z‖, c) + CE(‖ẑ − ẑ^c‖, c)) ]

(``ldm/models/diffusion/ddpm.py: LatentDiffusion.p_losses`` and ``dis_loss``, §3.3, eqs. 7–9):
per example a unit c is drawn uniformly; x̂_0 is predicted from the frozen DPM's ε and x̂_0^c
from ε − √(1 − ᾱ_t) G_c (``ddim_coef``); both are re-encoded by a copy of the encoder taken at
every step, frozen and in eval mode; norms are per unit, the cross-entropies are over the N
units, and w_b = mean((x̂_0 − x̂_0^c)²) carries no gradient (the reference's ``dis_loss_type
= "Z"``). The gradient of the disentangling loss reaches G and, through z^c, the encoder
(as in the reference code; the paper's text says the decoder only).

``encode`` returns the N·D unit codes flattened and declares ``latent_units`` (the runner
reduces each unit to one number by PCA for the factor metrics, DisDiff's protocol in
:mod:`bench.metrics.representation`); ``sample`` draws all units from the latent DDPM.

Optimisation (the shipped configs): AdamW (PyTorch's default weight decay 0.01), lr 2e-6 ×
batch = 2.56e-4 at 128, linear warm-up over 10k steps from the factor 1e-6 (LDM's
``LambdaLinearScheduler``), EMA 0.9999 with LitEma's warm-up min(0.9999, (1 + n)/(10 + n)) on the
shift decoder and part embedding only (the encoder is trained but not averaged), L1 ε-loss, dis_weight 0.05 (Shapes3D, Cars3D, CelebA; 0.01 in
the MPI3D config — the reference's ``main.py`` overwrites it with 1.0 unless
``--dis_weight`` is passed); N = 6 units × D = 32 in every shipped config. The shift
decoder has its own dropout 0 and 8 attention heads (the reference's shift UNet config), not
the frozen DPM's. The frozen DPM holds the DPM component's EMA weights by default;
``frozen_weights = "live"`` freezes its live ones, as the reference's ``load_ema_ckpt`` does (the
component is then trained with ``keep_live = true``, which saves them beside the EMA ones).

**Latent space** (``space = "latent"``, the paper's main setting and the default): the frozen
DPM is the ``ldm`` component (:mod:`methods.ldm`: LDM's UNet on the scaled latents of a
``vq-f4`` first stage, trained once per dataset and shared by every DisDiff cell and seed that
asks for the same one; its first stage is the one EncDiff cells on the dataset share too), and
the shift decoder is DisDiff's on that UNet (:class:`bench.diffusion.ldm_shift.LDMShiftDecoder`,
``openaimodel_shift.py``). The encoder still reads the *images*; the disentangling loss decodes
x̂_0 and x̂_0^c through the first stage's decoder without quantisation (``force_not_quantize``,
the reference's ``detach_flag = False``), differentiably, before re-encoding them, and w_b is
the mean squared difference of the two *latents* (``dis_loss_type = "Z"``). The scale factor
is the latent DPM's (the reference reads ``scale_factor`` from the LDM checkpoint). Decoded
latents are quantised then decoded (LDM's ``decode_first_stage``); DDIM in latent space does
not clip x̂_0. Parameter counts equal the reference's Shapes3D configuration: frozen UNet
29,422,467; trained 24,255,171 = shift decoder with code and part embeddings 22,738,691 +
Encoder4 1,516,480 (``benchmarks/reference_counts.py``, ``benchmarks/disdiff_latent_equivalence.py``).

Presets: ``paper`` is the shipped latent configuration (``configs/latent-diffusion/*-vq-4-16-dis.yaml``
on the latent DPM of ``*-vq-4-16.yaml``; dis_weight 0.05, bench.toml's ``disdiff-paper-mpi3d``
sets the MPI3D config's 0.01; the latent DPM's 200,000 steps are this harness's choice, the
configs train until stopped). ``paper-pixel`` is the pixel-space variant on the shared
``ddpm`` component of PDAE's ``paper`` preset (DiffAE's 64 px DDPM). ``tiny`` (latent, on the
tiny VQ) and ``tiny-pixel`` are for CPU tests.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import Component
from bench.diffusion.encoders import DisDiffEncoder
from bench.diffusion.ldm_shift import LDMShiftDecoder
from bench.diffusion.samplers import predict_x0, q_sample
from bench.diffusion.unet import ShiftDecoder
from methods.diffusion_training import TrainState
from methods.latent_space import LatentSpace, first_stage_needed
from methods.ldm import LDM_DEFAULTS, LDM_KEYS, TINY_LDM
from methods.pdae import DPM_KEYS, DPM_TRAINING, PDAE, PDAE_DEFAULTS, PDAE_RANGES, TINY_PDAE, dpm_params

_PDAE_ONLY = ("latent_dim", "enc_channels", "enc_attention_resolutions", "enc_num_heads", "weight_gamma")

SPACES = ("latent", "pixel")
#: which weights of the trained DPM component DisDiff freezes: its EMA ones (ours) or its live ones (the reference)
FROZEN_WEIGHTS = ("ema", "live")

#: the pixel-space variant's frozen DPM: PDAE's (its architecture, schedule and stage-1 training)
PIXEL_DPM: dict[str, Any] = {"space": "pixel", **{k: PDAE_DEFAULTS[k] for k in DPM_KEYS},
                             **{f"dpm_{k}": PDAE_DEFAULTS[f"dpm_{k}"] for k in DPM_TRAINING}}

DISDIFF_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in PDAE_DEFAULTS.items() if k not in _PDAE_ONLY},
    "space": "latent",
    # the frozen latent DPM: the ldm method's paper preset (configs/latent-diffusion/*-vq-4-16.yaml)
    **{k: LDM_DEFAULTS[k] for k in LDM_KEYS},
    **{f"dpm_{k}": LDM_DEFAULTS[k] for k in DPM_TRAINING},
    # DisDiff
    "num_units": 6,
    "unit_dim": 32,
    "enc_width": 128,
    "loss_type": "l1",
    "loss_weighting": "none",
    "l_simple_weight": 1.0,
    "dis_weight": 0.05,
    "shift_dropout": 0.0,
    "shift_num_heads": 8,
    "lr": 2.56e-4,
    "weight_decay": 0.01,
    "warmup_steps": 10_000,
    "stop_percent": 0.0,
}

DISDIFF_RANGES = {**PDAE_RANGES, "space": SPACES, "frozen_weights": FROZEN_WEIGHTS, "num_units": ">= 1", "unit_dim": ">= 1", "enc_width": ">= 1",
                  "shift_dropout": "[0, 1)", "shift_num_heads": ">= 1",
                  "l_simple_weight": ">= 0", "dis_weight": ">= 0"}

_TINY_UNITS: dict[str, Any] = {"num_units": 3, "unit_dim": 4, "enc_width": 16, "warmup_steps": 0, "weight_decay": 0.01}
#: CPU tests in pixel space: PDAE's tiny DPM
TINY_DISDIFF_PIXEL: dict[str, Any] = {
    **PIXEL_DPM,
    **{k: v for k, v in TINY_PDAE.items() if k not in _PDAE_ONLY},
    **_TINY_UNITS,
}
#: CPU tests in latent space: the tiny latent DPM on the tiny VQ (LDM's GroupNorm needs 32-channel multiples)
TINY_DISDIFF: dict[str, Any] = {
    **{k: v for k, v in TINY_PDAE.items() if k not in _PDAE_ONLY},
    **{k: TINY_LDM[k] for k in LDM_KEYS if k in TINY_LDM},
    "dropout": 0.0,
    **_TINY_UNITS,
}


def in_pixel_space(params: dict[str, Any]) -> bool:
    return not first_stage_needed(params)


def _keep_live(params: dict[str, Any]) -> dict[str, Any]:
    """``keep_live = true`` for the DPM component when DisDiff freezes its live weights (else nothing: the
    component is the one every other cell shares)."""
    return {"keep_live": True} if params["frozen_weights"] == "live" else {}


def pixel_dpm_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``ddpm`` component's hyperparameters for a pixel-space DisDiff cell (PDAE's, plus ``keep_live``)."""
    return {**dpm_params(params), **_keep_live(params)}


def ldm_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``ldm`` component's hyperparameters for a latent DisDiff cell with ``params`` (as :func:`dpm_params`)."""
    return {**{k: params[k] for k in LDM_KEYS}, **{k: params[f"dpm_{k}"] for k in DPM_TRAINING},
            "cpu_native_conv": params["cpu_native_conv"], "hflip": params["hflip"], "pretrained": params["pretrained"],
            **_keep_live(params)}


class PartEmbedding(nn.Module):
    """The offset of unit c's time embedding: Linear(expm(Wᵀ − W)[c]), W (width/2 × width/2), orthogonal rows.

    expm(Wᵀ − W), not expm(W − Wᵀ): the reference's ``torch_expm(A)`` (a Padé approximant solving
    P⁻¹Q with P = U + V, Q = V − U) returns expm(−A) for A = W − Wᵀ, so this is what its
    weights mean (``benchmarks/disdiff_latent_equivalence.py``: 8.4e-6 relative in fp32, 1.5e-14 in fp64).
    """

    def __init__(self, time_dim: int) -> None:
        super().__init__()
        half = time_dim // 2
        self.latents = nn.Parameter(torch.randn(half, half))
        self.proj = nn.Linear(half, time_dim)

    def forward(self, units: int) -> torch.Tensor:
        """(units, time_dim): the offsets of units 0 … units − 1."""
        rotation = torch.linalg.matrix_exp(self.latents.T - self.latents)
        return self.proj(rotation[:units])


class DisDiff(LatentSpace, PDAE):
    """PDAE with N latent units, one gradient field each, and the disentangling loss (module docstring)."""

    defaults: ClassVar[dict[str, Any]] = {**DISDIFF_DEFAULTS, "pretrained": "", "frozen_weights": "ema"}
    #: ``pretrained``: a released disdiff.ckpt to convert instead of training (:mod:`bench.released`); its
    #: frozen DPM (the ``ldm`` component) and first stage come from the same file. ``frozen_weights``: the DPM
    #: component's EMA weights ("ema") or its live ones ("live", the reference's ``load_ema_ckpt``)
    added_params: ClassVar[dict[str, Any]] = {"pretrained": "", "frozen_weights": "ema"}
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_DISDIFF), "tiny-pixel": dict(TINY_DISDIFF_PIXEL),
                                                    "paper": {}, "paper-pixel": dict(PIXEL_DPM)}
    ranges = DISDIFF_RANGES
    choices = {**PDAE.choices, "space": SPACES, "frozen_weights": FROZEN_WEIGHTS}
    capabilities = frozenset({"sample", "decode", "reconstruct", "latent_units"})
    components = {
        "dpm": Component("ddpm", params=pixel_dpm_params, when=in_pixel_space,
                         preset={"paper-pixel": "paper", "tiny-pixel": "tiny"}),
        "ldm": Component("ldm", params=ldm_params, when=first_stage_needed),
    }
    ema_warmup = True  # LitEma's warm-up (the reference's LatentDiffusion)
    warmup_start = 1e-6  # LambdaLinearScheduler's f_start in the shipped configs
    scale_from_data = False  # the latent DPM's scale factor (the reference reads it from the LDM checkpoint)
    # 2: PDAE's reference DDIM chains, the shift decoder's own dropout 0 and 8 heads, LitEma's warm-up
    # 3: latent space (the default) on the ``ldm`` component; pixel space is ``space = "pixel"``
    version = "3"

    @property
    def latent_dim(self) -> int:
        """All units' codes: num_units × unit_dim."""
        return int(self._params["num_units"] * self._params["unit_dim"])

    @property
    def code_dim(self) -> int:
        return self.latent_dim

    @property
    def latent_unit_dim(self) -> int:
        return int(self._params["unit_dim"])

    # -- the frozen DPM and the first stage ----------------------------------------------
    def _dpm_component(self) -> tuple[str, tuple[str, ...]]:
        return ("ldm", LDM_KEYS) if self._in_latent_space() else ("dpm", DPM_KEYS)

    def _frozen_unet(self, dpm) -> torch.nn.Module:
        """The DPM component's UNet with the weights ``frozen_weights`` names."""
        return dpm._live_net("unet") if self.frozen_weights == "live" else dpm._eval_net("unet")

    def _first_stage(self):
        """The latent DPM's ``vq-f4`` (None in pixel space): the first stage its latents come from."""
        if not self._in_latent_space():
            return None
        return self._frozen_dpm()._first_stage()

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        super()._build(input_shape)
        self.diffusion_shape = self._latent_shape(self.input_shape)
        if self._in_latent_space():  # the latent DPM's scale (the reference reads it from the LDM checkpoint)
            self.scale_factor_ = float(self._frozen_dpm().scale_factor_)

    def _build_stage2(self, input_shape: tuple[int, int, int]) -> None:
        c, h, _ = input_shape
        time_dim = self.unet_.arch["time_dim"]
        if self.num_units > time_dim // 2:
            raise ValueError(f"DisDiff: num_units={self.num_units} exceeds the {time_dim // 2} orthogonal part "
                             f"embeddings of a time embedding of width {time_dim}")
        self.encoder_ = DisDiffEncoder(in_channels=c, image_size=h, out_dim=self.latent_dim, channels=self.enc_width)
        shift = LDMShiftDecoder if self._in_latent_space() else ShiftDecoder
        self.shift_ = shift(self.unet_, self.unit_dim, dropout=self.shift_dropout, num_heads=self.shift_num_heads)
        self.part_ = PartEmbedding(time_dim)
        self.frozen_encoder_ = copy.deepcopy(self.encoder_).eval().requires_grad_(False)
        vq = self._first_stage()
        # a private frozen copy of the first stage: the disentangling loss backpropagates through its decoder
        self.first_stage_ = None if vq is None else copy.deepcopy(vq.ae_).eval().requires_grad_(False)

    def _nets(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder_, "shift": self.shift_, "part": self.part_}

    def _averaged(self) -> tuple[str, ...]:
        return ("shift", "part")

    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
            components: dict[str, Any] | None = None) -> "DisDiff":
        """Train on the frozen DPM: ``components={"ldm": <fitted ldm>}`` in latent space, ``{"dpm": <fitted ddpm>}``
        in pixel space (the runner passes them)."""
        return super().fit(data, seed=seed, device=device, progress=progress, components=components)

    def to(self, device: str | torch.device) -> "DisDiff":
        super().to(device)
        self.frozen_encoder_.to(self.device_)
        if self.first_stage_ is not None:
            self.first_stage_.to(self.device_)
        return self

    def _to_images(self, x0: torch.Tensor) -> torch.Tensor:
        """What the encoder reads for a predicted x̂_0: the image itself, or (latent space) the first stage's
        decoding of the latent without quantisation, in [−1, 1], differentiable (``differentiable_decode_first_stage``)."""
        if self.first_stage_ is None:
            return x0
        return self.first_stage_.decode_latent(x0 / self.scale_factor_, quantize=False)

    # -- the unit gradient fields ------------------------------------------------------
    def _unit_gradients(self, h, skips, time_emb: torch.Tensor, z: torch.Tensor, *, evaluation: bool) -> torch.Tensor:
        """(N, B, C, H, W): G_ψ(x_t, z^c, t) for every unit c."""
        shift, part = (self._eval_net(n) if evaluation else self._nets()[n] for n in ("shift", "part"))
        if evaluation:  # sampling and inversion: compiled when ``compile`` is set (the part embedding stays eager)
            shift = self._inference_net(shift)
        units = z.reshape(z.shape[0], self.num_units, self.unit_dim)
        offsets = part(self.num_units).to(time_emb.dtype)
        return torch.stack([shift(h, skips, time_emb + offsets[c], units[:, c]).float() for c in range(self.num_units)])

    def _gradient(self, h, skips, time_emb: torch.Tensor, z: torch.Tensor, *, evaluation: bool) -> torch.Tensor:
        return self._unit_gradients(h, skips, time_emb, z, evaluation=evaluation).sum(0)

    # -- training ----------------------------------------------------------------------
    def _draw(self, state: TrainState) -> dict[str, torch.Tensor]:
        gen, dev, B = state.generator, state.device, self.batch_size
        if self.first_stage_ is None:
            batch = super()._draw(state)
        else:  # the encoder reads the images, the diffusion runs on their latents
            img = self._draw_images(state)
            x0 = self._to_diffusion(img)
            t = torch.randint(0, self.timesteps, (B,), generator=gen, device=dev)
            batch = {"img": img, "x0": x0, "t": t, "noise": torch.randn(x0.shape, generator=gen, device=dev)}
        batch["unit"] = torch.randint(0, self.num_units, (B,), generator=gen, device=dev)
        return batch

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-item ``shift`` (the PDAE-form ε objective) and ``dis`` (the weighted disentangling loss)."""
        x0, t, noise, unit = batch["x0"], batch["t"], batch["noise"], batch["unit"]
        z = self.encoder_(batch.get("img", x0)).float()
        x_t = q_sample(self.schedule_, x0, noise, t)
        eps, h, skips, temb = self._frozen_pass(x_t, t)
        grads = self._unit_gradients(h, skips, temb, z, evaluation=False)
        terms = {"shift": self.shift_objective(eps, grads.sum(0), noise, t)}
        if self.dis_weight > 0:
            chosen = grads[unit, torch.arange(len(unit), device=unit.device)]
            terms["dis"] = self._disentangling_loss(x_t, t, eps, chosen, z, unit)
        return terms

    def _disentangling_loss(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, chosen: torch.Tensor,
                            z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        """dis_weight · w_b · (variant CE + invariant CE) per item (``LatentDiffusion.dis_loss``)."""
        with torch.no_grad():  # the frozen encoder copy of this step
            torch._foreach_copy_(list(self.frozen_encoder_.parameters()), [p.detach() for p in self.encoder_.parameters()])
            torch._foreach_copy_(list(self.frozen_encoder_.buffers()), list(self.encoder_.buffers()))
        s = self.schedule_.gather("sqrt_one_minus_alphas_cumprod", t, x_t.ndim)
        x0_hat = predict_x0(self.schedule_, x_t, eps, t)
        x0_unit = predict_x0(self.schedule_, x_t, eps - s * chosen, t)  # ε − √(1 − ᾱ_t) G_c (``ddim_coef``)
        B = z.shape[0]
        with torch.no_grad():
            z_hat = self.frozen_encoder_(self._to_images(x0_hat)).float().reshape(B, self.num_units, self.unit_dim)
        z_unit = self.frozen_encoder_(self._to_images(x0_unit)).float().reshape(B, self.num_units, self.unit_dim)
        z_ref = z.detach().reshape(B, self.num_units, self.unit_dim)
        variant = (z_hat - z_ref).norm(dim=-1) - (z_unit - z_ref).norm(dim=-1)
        invariant = (z_hat - z_unit).norm(dim=-1)
        ce = F.cross_entropy(variant, unit, reduction="none") + F.cross_entropy(invariant, unit, reduction="none")
        weight = (x0_hat - x0_unit.detach()).pow(2).flatten(1).mean(1)  # of the latents in latent space ("Z")
        return weight * self.dis_weight * ce

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = self.loss_terms(batch)
        loss = self.l_simple_weight * terms["shift"].mean()
        return loss + terms["dis"].mean() if "dis" in terms else loss
