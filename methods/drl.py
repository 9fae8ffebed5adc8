"""DRL and VDRL (Mittal et al., "Diffusion Based Representation Learning", ICML 2023).

**Model.** A score model s_θ(x_t, t, z) conditioned on a code z = E_φ(x_0) of the clean
image, trained by DRL's objective (paper eq. 7: the denoising score matching of eq. 4 made
conditional as in eq. 5, plus γ‖E_φ(x_0)‖₁): E_t E_{x_0, ε} [λ(t) ‖s_θ(x_t, t, E_φ(x_0)) −
∇ log p_{0t}(x_t | x_0)‖²] with λ(t) = σ²(t), written here as score_sde does with ``reduce_mean=False``:
``½ Σ_pixels (std(t) · s_θ + ε)²`` per image (:func:`bench.diffusion.sde.dsm_loss`).

* SDE (``sde``): variance exploding, σ(t) = σ_min (σ_max/σ_min)^t with σ_min 0.01, σ_max 50,
  t ~ U(t_eps, 1), t_eps = 1e-5 (§3, App. D); images in [0, 1] as score_sde's VE configs
  (``data.centered = False``); the score is the network output divided by std(t)
  (NCSN++'s ``scale_by_sigma``), its time input log σ(t) through Gaussian Fourier features.
  ``sde = "vp"`` is the variance-preserving ablation (§3.1, eq. 11: β 0.1 → 20, images in
  [−1, 1], s = −ε̂/std(t), sinusoidal features of 999·t).
* ``t_sampling = "sigma-uniform"``: t such that σ(t) ~ U(σ_min, σ_max) (§3.3, Figure 2),
  which focuses training on high noise and makes the code keep coarse information (VE only).
* Score network: the project's UNet with the ``"bias"`` conditioning layout (App. D: "each
  channel is provided with a conditional bias determined by the representation and time
  embedding"): z passes a 4-layer MLP whose last layer starts at zero and is added, like the
  time embedding, as a per-channel bias in every residual block. The proxy code
  (sarthmit/traj_drl ``ncsnpp.py``) instead concatenates ``latent_to_temb(z)`` to the time
  embedding; the paper's form is the one built here.
* Encoder (``encoder``): ``"unet"`` — the score model's down path (same widths, blocks and
  attention), GroupNorm, SiLU, global mean pool and three dense layers to the code (App.
  D); ``"wrn"`` — WRN-28-k (``wrn_widen``, 2: WRN-28-2, 128-d, the proxy's and App. F's
  encoder), its pooled 64·k features being the code (a linear map when ``latent_dim``
  differs or for VDRL's two heads).
* Regulariser: DRL adds ``l1_weight`` · ‖z‖₁ (1e-5, App. D); VDRL has a Gaussian encoder,
  z = μ + σ ε, and adds ``kl_weight`` · KL(q(z|x_0) ‖ N(0, I)) (1e-7 per App. D; the proxy's
  ``run.sh`` uses 1e-5 — the presets follow the paper).
* **Time-conditioned codes** (``time_conditioned = True``): E(x_0, t) with t embedded into
  every encoder block (a per-channel bias, as the proxy's ``wide_basic``), trained with the
  t of the score-matching step; ``encode(x, t=...)`` gives the code at any t ∈ [0, 1],
  ``encode_t`` (0.5, the proxy's initial value of its learnt t) when t is not given.
* Codes come from the live encoder, as in the proxy (``encoder_ema = True``: its EMA copy);
  the score network always samples with its EMA weights. Such a
  model declares ``time_conditioned`` and is not generative: unconditional samples would need
  a whole code trajectory t ↦ E(x_0, t), which no prior here provides.

**Sampling** (static codes): z from a latent DDPM trained on the codes afterwards (DiffAE
§3.3, the project's latent MLP; ``sample_z = "latent"``) or from N(0, I) (``"prior"``, the
natural choice for VDRL), then ``sampler = "pc"`` — the reverse SDE with a reverse-diffusion
predictor and one Langevin corrector step of snr 0.16 per level (``sample_steps`` levels) —
or ``"ode"``, the probability-flow ODE (``ode_solver``: score_sde's adaptive RK45 at rtol =
atol = ``ode_tol`` = 1e-5, or ``"heun"`` with ``ode_steps`` fixed steps), both conditioned on z. ``decode(z)`` and ``reconstruct`` use the ODE: x_0 → x_1 → x_0 with the image's own code
(per-t codes when time-conditioned), ``decode`` from one fixed x_1 for every code.

Optimisation (App. D: the optimiser of score_sde's "DDPM++ cont. (deep)", which DRL "did not
change"): Adam lr 2e-4, 5,000 warm-up steps, gradient clipping 1, EMA 0.9999, batch 128. The
score network attends at 16×16 like DDPM++ (one head).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from bench.adapter import NotGenerativeError
from bench.diffusion.sde import ODE_SOLVERS, SDES, dsm_loss, make_sde, ode_solve, pc_sample
from bench.diffusion.unet import GaussianFourierProjection, UNet, _DownPath, _group_norm, timestep_embedding
from methods.backbones import WideResNet
from methods.diffusion_autoencoding import LATENT_DDPM_DEFAULTS, TINY_LATENT_DDPM, AutoencodingDiffusion
from methods.diffusion_base import DIFFUSION_DEFAULTS, DIFFUSION_RANGES, TINY_NET
from methods.diffusion_training import TrainState, native_convs
from methods.priors import GaussianPrior

ENCODERS = ("unet", "wrn")
SAMPLERS = ("pc", "ode")
T_SAMPLINGS = ("uniform", "sigma-uniform")

#: DiffusionFamily keys that name the discrete DDPM and do not apply to a continuous-time SDE
_DISCRETE = ("schedule", "timesteps", "sampler", "ddim_steps", "ddim_eta", "cond_layout")

DRL_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in DIFFUSION_DEFAULTS.items() if k not in _DISCRETE},
    **LATENT_DDPM_DEFAULTS,
    # score network: App. D, CIFAR-10 (three resolutions of 32 channels, two blocks each) on DDPM++ cont.
    # (deep), which attends at 16x16 (score_sde configs/vp/cifar10_ddpmpp_deep_continuous.py: attn_resolutions)
    "base_channels": 32,
    "channel_mult": [1, 1, 1],
    "num_res_blocks": 2,
    "attention_resolutions": [16],
    "dropout": 0.1,
    # the SDE
    "sde": "ve",
    "sigma_min": 0.01,
    "sigma_max": 50.0,
    "beta_min": 0.1,
    "beta_max": 20.0,
    "t_eps": 1e-5,
    "t_sampling": "uniform",
    # encoder and code
    "encoder": "wrn",
    "wrn_widen": 2,
    "enc_hidden": 256,
    "latent_dim": 128,
    "time_conditioned": False,
    "encode_t": 0.5,
    "encoder_ema": False,
    "l1_weight": 1e-5,
    # optimisation: score_sde's for DDPM++ cont. (deep) on CIFAR-10 (default_cifar10_configs.py: Adam 2e-4,
    # 5,000 warm-up steps, clip 1, batch 128; cifar10_ddpmpp_deep_continuous.py: EMA 0.9999), App. D's 90k steps
    "lr": 2e-4,
    "weight_decay": 0.0,
    "batch_size": 128,
    "steps": 90_000,
    "warmup_steps": 5000,
    "ema_decay": 0.9999,
    "grad_clip": 1.0,
    # sampling
    "sampler": "pc",
    "sample_steps": 1000,
    "snr": 0.16,
    "corrector_steps": 1,
    "ode_solver": "rk45",
    "ode_tol": 1e-5,
    "ode_steps": 100,
    "sample_z": "latent",
    # the latent DDPM over the codes (used when sample_z = "latent")
    "latent_hidden": 512,
    "latent_layers": 10,
    "latent_steps": 50_000,
    "latent_batch_size": 256,
}
DRL_RANGES: dict[str, Any] = {
    **DIFFUSION_RANGES,
    "sde": SDES, "sigma_min": "> 0", "sigma_max": "> 0", "beta_min": "> 0", "beta_max": "> 0", "t_eps": "(0, 1)",
    "t_sampling": T_SAMPLINGS, "encoder": ENCODERS, "wrn_widen": ">= 1", "enc_hidden": ">= 1", "encode_t": "[0, 1]",
    "l1_weight": ">= 0", "kl_weight": ">= 0", "sampler": SAMPLERS, "sample_steps": ">= 1", "snr": "> 0",
    "corrector_steps": ">= 0", "ode_solver": ODE_SOLVERS, "ode_tol": "> 0", "ode_steps": ">= 1", "sample_z": ("latent", "prior"),
}
TINY_DRL: dict[str, Any] = {
    **{k: v for k, v in TINY_NET.items() if k not in _DISCRETE},
    **TINY_LATENT_DDPM,
    "channel_mult": [1, 2],
    "encoder": "unet",
    "enc_hidden": 32,
    "latent_dim": 8,
    "warmup_steps": 0,
    "sample_steps": 8,
    "ode_steps": 8,
}
#: App. D, MNIST: two resolutions 28x28x32 and 14x14x64, two blocks each, 80k iterations
PAPER_MNIST: dict[str, Any] = {"base_channels": 32, "channel_mult": [1, 2], "steps": 80_000, "encoder": "unet"}
#: App. F's downstream setting (Figures 4-5): WRN-28-2 encoder, 128-d, time-conditioned E(x_0, t)
PAPER_DOWNSTREAM: dict[str, Any] = {"time_conditioned": True}


class _TimeFeatures(nn.Module):
    """The SDE's time input → an embedding of width ``dim``: Fourier features of log σ(t) (VE) or sinusoidal of 999·t."""

    def __init__(self, base: int, dim: int, fourier: bool) -> None:
        super().__init__()
        self.base, self.fourier = base, fourier
        if fourier:
            self.proj = GaussianFourierProjection(base // 2)
        self.mlp = nn.Sequential(nn.Linear(2 * (base // 2) if fourier else base, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.proj(s) if self.fourier else timestep_embedding(s, self.base))


class DRLEncoder(nn.Module):
    """E_φ(x_0[, t]) → code (and log σ² for VDRL): the score model's down path + 3 dense layers, or WRN-28-k."""

    def __init__(self, *, kind: str, in_channels: int, image_size: int, latent_dim: int, variational: bool,
                 time_dim: int | None, fourier: bool, unet_kw: dict, hidden: int, widen: int) -> None:
        super().__init__()
        self.variational, self.latent_dim = variational, latent_dim
        out = 2 * latent_dim if variational else latent_dim
        base = unet_kw["base_channels"]
        self.time = _TimeFeatures(base, time_dim, fourier) if time_dim else None
        self.kind = kind
        if kind == "unet":
            block_kw = dict(time_dim=time_dim, cond_dim=None, dropout=unet_kw["dropout"], groups=unet_kw["norm_groups"],
                            layout="bias", num_heads=unet_kw["num_heads"])
            self.down = _DownPath(in_channels, image_size, base, unet_kw["channel_mult"], unet_kw["num_res_blocks"],
                                  unet_kw["attention_resolutions"], block_kw)
            ch = self.down.out_channels
            self.pool = nn.Sequential(_group_norm(unet_kw["norm_groups"], ch), nn.SiLU())
            self.head = nn.Sequential(nn.Linear(ch, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                      nn.Linear(hidden, out))
        else:
            self.wrn = WideResNet(in_channels, 28, widen, 0.0, time_dim)
            feat = self.wrn.out_dim
            self.head = nn.Identity() if feat == out else nn.Linear(feat, out)

    def posterior(self, x: torch.Tensor, s: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(μ, log σ² or None) for images ``x`` and the time input ``s`` (ignored without time conditioning)."""
        t_emb = self.time(s) if self.time is not None else None
        if self.kind == "unet":
            conds = {"t": t_emb} if t_emb is not None else {}
            h, _ = self.down(x, conds)
            out = self.head(self.pool(h).mean(dim=(2, 3)))
        else:
            out = self.head(self.wrn(x, t_emb))
        if not self.variational:
            return out, None
        mu, logvar = out.chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        return self.posterior(x, s)[0]


class DRL(AutoencodingDiffusion):
    """Diffusion-based representation learning (see the module docstring)."""

    # 2: score_sde's VE kernel std σ(t) (was √(σ² − σ_min²)), the adaptive RK45 probability-flow ODE,
    # attention at 16x16, EMA 0.9999 and batch 128 (DDPM++ cont. (deep))
    version = "2"
    defaults: ClassVar[dict[str, Any]] = dict(DRL_DEFAULTS)
    ranges = DRL_RANGES
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_DRL), "paper": dict(PAPER_DOWNSTREAM),
                                                    "paper-mnist": dict(PAPER_MNIST)}
    capabilities = frozenset({"sample", "decode", "reconstruct"})
    variational: ClassVar[bool] = False
    # no discrete DDPM keys (schedule, cond_layout; "sampler" names the SDE samplers)
    choices = {**{k: v for k, v in AutoencodingDiffusion.choices.items() if k not in _DISCRETE},
               "sampler": SAMPLERS, "sde": SDES, "encoder": ENCODERS, "t_sampling": T_SAMPLINGS,
               "ode_solver": ODE_SOLVERS}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        make_sde(self.sde, sigma_min=self.sigma_min, sigma_max=self.sigma_max, beta_min=self.beta_min,
                 beta_max=self.beta_max)  # bad SDE parameters fail here, before training
        if self.t_sampling == "sigma-uniform" and self.sde != "ve":
            raise ValueError(f"{type(self).__name__}: t_sampling='sigma-uniform' samples sigma(t) of the VE SDE; "
                             f"sde={self.sde!r} has no sigma(t)")
        if self.sampler == "pc" and self.sample_steps < 2:
            raise ValueError(f"{type(self).__name__}: sample_steps must be >= 2 for the PC sampler")
        caps = {"reconstruct"}
        caps |= {"time_conditioned"} if self.time_conditioned else {"sample", "decode"}
        if self.variational:
            caps.add("stochastic_encode")
        self.capabilities = frozenset(caps)

    # -- networks ----------------------------------------------------------------------
    def _time_dim(self) -> int:
        return self.time_embed_dim or 4 * self.base_channels

    def _build(self, input_shape: tuple[int, int, int]) -> None:
        c, h, w = input_shape
        if h != w:
            raise ValueError(f"{type(self).__name__}: images must be square, got {h}x{w}")
        self.input_shape = tuple(input_shape)
        self.sde_ = make_sde(self.sde, sigma_min=self.sigma_min, sigma_max=self.sigma_max, beta_min=self.beta_min,
                             beta_max=self.beta_max)
        kw = dict(base_channels=self.base_channels, channel_mult=tuple(self.channel_mult),
                  num_res_blocks=self.num_res_blocks, attention_resolutions=tuple(self.attention_resolutions),
                  dropout=self.dropout, norm_groups=self.norm_groups, num_heads=self.num_heads)
        fourier = self.sde == "ve"
        self.unet_ = UNet(in_channels=c, out_channels=c, image_size=h, cond_dim=self.latent_dim, cond_layout="bias",
                          time_embed_dim=self.time_embed_dim or None, time_encoding="fourier" if fourier else "sinusoidal",
                          **kw)
        self.encoder_ = DRLEncoder(kind=self.encoder, in_channels=c, image_size=h, latent_dim=self.latent_dim,
                                   variational=self.variational, time_dim=self._time_dim() if self.time_conditioned else None,
                                   fourier=fourier, unet_kw=kw, hidden=self.enc_hidden, widen=self.wrn_widen)
        self.device_ = torch.device("cpu")
        self.emas_ = {}
        self.latent_net_ = None
        self.latent_ema_ = None

    def _nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet_, "encoder": self.encoder_}

    def _eval_net(self, name: str) -> nn.Module:
        """The EMA score network; the live encoder unless ``encoder_ema`` (traj_drl encodes with the live one)."""
        if name == "encoder" and not self.encoder_ema:
            return self.encoder_
        return super()._eval_net(name)

    def _time_input(self, t: torch.Tensor) -> torch.Tensor:
        """What the networks read for time t: log σ(t) (VE, Fourier features) or 999·t (VP, sinusoidal)."""
        return torch.log(self.sde_.sigma(t)) if self.sde == "ve" else 999.0 * t

    def _images_in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() if self.sde == "ve" else x.float() * 2.0 - 1.0
        return x.contiguous(memory_format=torch.channels_last) if self._use_channels_last() else x

    def _to_numpy_images(self, x0: torch.Tensor) -> np.ndarray:
        x = x0.float() if self.sde == "ve" else (x0.float() + 1.0) / 2.0
        return x.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)

    def score(self, net: nn.Module, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """s_θ(x, t, z) = ±net(x, t, z) / std(t) (VE: NCSN++'s scale_by_sigma; VP: −ε̂/std)."""
        _, std = self.sde_.marginal(x, t)
        out = net(x, self._time_input(t), z).float()
        sign = 1.0 if self.sde == "ve" else -1.0
        return sign * out / std.reshape(-1, *([1] * (x.dim() - 1)))

    # -- training ----------------------------------------------------------------------
    def _draw(self, state: TrainState) -> dict[str, torch.Tensor]:
        gen, dev, B = state.generator, state.device, self.batch_size
        x0 = self._draw_images(state)
        u = torch.rand((B,), generator=gen, device=dev)
        if self.t_sampling == "sigma-uniform":  # sigma(t) ~ U(sigma_min, sigma_max)  (paper §3.3)
            sigma = self.sigma_min + u * (self.sigma_max - self.sigma_min)
            t = (torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)).clamp(self.t_eps, 1.0)
        else:
            t = self.t_eps + u * (1.0 - self.t_eps)
        batch = {"x0": x0, "t": t, "noise": torch.randn(x0.shape, generator=gen, device=dev)}
        if self.variational:
            batch["eps_z"] = torch.randn((B, self.latent_dim), generator=gen, device=dev)
        return batch

    def _encoder_time(self, t: torch.Tensor) -> torch.Tensor | None:
        return self._time_input(t) if self.time_conditioned else None

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x0, t = batch["x0"], batch["t"]
        mu, logvar = self.encoder_.posterior(x0, self._encoder_time(t))
        z = mu if logvar is None else mu + (0.5 * logvar).exp() * batch["eps_z"]
        dsm = dsm_loss(lambda x, tt: self.score(self.unet_, x, tt, z), self.sde_, x0, t, batch["noise"]).mean()
        return dsm + self._regulariser(z, mu, logvar)

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        """DRL: l1_weight · ‖z‖₁ per image (traj_drl ``losses.py``: lambda_z · Σ|z|)."""
        return self.l1_weight * z.abs().sum(-1).mean()

    def _after_fit(self, data, state: TrainState, seed: int, progress: bool) -> None:
        if not self.time_conditioned and self.sample_z == "latent":
            self._fit_latent_ddpm(state, seed, progress)

    # -- inference ---------------------------------------------------------------------
    def _t_code(self, t: float | None) -> float:
        t = self.encode_t if t is None else float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"{type(self).__name__}.encode: t must be in [0, 1], got {t}")
        return t

    @torch.no_grad()
    def _posterior_codes(self, x: np.ndarray, t: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        encoder = self._eval_net("encoder")
        mus, logvars = [], []
        for part in self._chunks(len(x)):
            x0 = self._images_in(torch.from_numpy(x[part]).to(self.device_))
            s = None
            if self.time_conditioned:
                s = self._time_input(torch.full((x0.shape[0],), self._t_code(t), device=self.device_))
            with self._amp():
                mu, logvar = encoder.posterior(x0, s)
            mus.append(mu.float())
            logvars.append(logvar.float() if logvar is not None else None)
        empty = torch.zeros((0, self.latent_dim), device=self.device_)
        mu = torch.cat(mus) if mus else empty
        return mu, (torch.cat(logvars) if logvars and logvars[0] is not None else None)

    @native_convs
    def encode(self, x: np.ndarray, *, stochastic: bool = False, seed: int | None = None,
               t: float | None = None) -> np.ndarray:
        """Codes (N, latent_dim): μ (VDRL), z ~ q(z|x) with ``stochastic``; at time ``t`` when time-conditioned."""
        x = self._images(x)
        if t is not None and not self.time_conditioned:
            raise ValueError(f"{type(self).__name__}: this model's code does not depend on t "
                             "(time_conditioned=False); call encode(x) without t")
        if stochastic and not self.variational:
            raise TypeError(f"{type(self).__name__} encodes deterministically; stochastic=True is not available")
        mu, logvar = self._posterior_codes(x, t)
        if stochastic:
            eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0 if seed is None else seed))
            mu = mu + (0.5 * logvar).exp() * eps.to(mu.device)
        return mu.cpu().numpy().astype(np.float32)

    def _score_fn(self, z: torch.Tensor | None = None, x0: torch.Tensor | None = None):
        """s(x, t) with the evaluation weights, for the code ``z``, or per t for the images ``x0`` (time-conditioned)."""
        net = self._inference_net(self._eval_net("unet"))  # compiled when ``compile`` is set
        encoder = self._inference_net(self._eval_net("encoder")) if x0 is not None else None
        if z is not None:  # VDRL's mu is a view of [mu, log var]: a compiled net would retrace for its strides
            z = z.contiguous()

        def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            code = z if x0 is None else encoder(x0, self._time_input(t))
            with self._amp():
                return self.score(net, x, t, code)

        return score

    @torch.no_grad()
    def _ode(self, score, x: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
        """The probability-flow ODE with this model's solver (RK45 at ``ode_tol``, or ``ode_steps`` Heun steps)."""
        return ode_solve(score, self.sde_, x, t_from, t_to, solver=self.ode_solver, steps=self.ode_steps,
                         rtol=self.ode_tol, atol=self.ode_tol)

    @torch.no_grad()
    def _ode_decode(self, z: torch.Tensor | None, x_T: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
        return self._ode(self._score_fn(z, x0), x_T, 1.0, self.t_eps)

    @torch.no_grad()
    @native_convs
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Probability-flow ODE x_0 → x_1 and back, conditioned on the image's code (per t when time-conditioned)."""
        x = self._images(x)
        out = []
        for part in self._chunks(len(x)):
            x0 = self._images_in(torch.from_numpy(x[part]).to(self.device_))
            if self.time_conditioned:
                z, ref = None, x0
            else:
                z, ref = self._eval_net("encoder")(x0, None).float(), None
            x_T = self._ode(self._score_fn(z, ref), x0, self.t_eps, 1.0)
            out.append(self._to_numpy_images(self._ode_decode(z, x_T, ref)))
        return np.concatenate(out)

    def _x_T(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sde_.prior((n, *self.input_shape), generator)

    def _require_static(self, what: str) -> None:
        if self.time_conditioned:
            raise NotGenerativeError(f"{type(self).__name__} with time_conditioned=True cannot {what}: its code is a "
                                     "trajectory t -> E(x_0, t) that no prior provides (see methods/drl.py)")

    @torch.no_grad()
    @native_convs
    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images for codes ``z`` by the probability-flow ODE, every code from the same x_1 (seed 0)."""
        self.check_fitted()
        self._require_static("decode codes")
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__}.decode: z must have shape (N, {self.latent_dim}), got {z.shape}")
        x_T = self._x_T(1, torch.Generator().manual_seed(0)).expand(len(z), *self.input_shape)
        out = []
        for part in self._chunks(len(z)):
            zc = torch.from_numpy(z[part]).to(self.device_)
            x_t = x_T[part].to(self.device_).contiguous()  # x_T is expanded (stride 0): a compiled net would retrace
            out.append(self._to_numpy_images(self._ode_decode(zc, x_t)))
        return np.concatenate(out) if out else np.zeros((0, *self.input_shape), np.float32)

    def _sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.sample_z == "prior":
            return GaussianPrior(self.latent_dim).sample(n, generator).to(self.device_)
        return self._latent_samples(n, generator)

    @torch.no_grad()
    @native_convs
    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """z (latent DDPM or N(0, I)), x_1 ~ the SDE's prior, then the PC sampler or the ODE conditioned on z."""
        self.check_fitted()
        self._require_static("sample")
        generator = torch.Generator().manual_seed(seed)
        z = self._sample_codes(n, generator)
        x_T = self._x_T(n, generator)
        out = []
        for part in self._chunks(n):
            zc, xT = z[part].to(self.device_), x_T[part].to(self.device_)
            if self.sampler == "ode":
                x0 = self._ode_decode(zc, xT)
            else:
                x0 = pc_sample(self._score_fn(zc), self.sde_, xT, self.sample_steps, snr=self.snr,
                               corrector_steps=self.corrector_steps, eps=self.t_eps, generator=generator)
            out.append(self._to_numpy_images(x0))
        return np.concatenate(out) if out else np.zeros((0, *self.input_shape), np.float32)

    @contextlib.contextmanager
    def using_sampler(self, protocol: str) -> Iterator[None]:
        """Only ``"model"``: the DDPM protocols (``ancestral-N``, ``ddim-N``) name discrete samplers DRL does not have."""
        if protocol != "model":
            raise ValueError(f"{type(self).__name__} samples with the reverse SDE or the probability-flow ODE "
                             f"(hyperparameter sampler = 'pc' | 'ode'); sampling protocol {protocol!r} names a discrete "
                             "DDPM sampler")
        yield


class VDRL(DRL):
    """Variational DRL: a Gaussian encoder, z = μ + σ ε, with ``kl_weight`` · KL(q(z|x_0) ‖ N(0, I)) (1e-7, App. D)."""

    defaults = {**{k: v for k, v in DRL_DEFAULTS.items() if k != "l1_weight"}, "kl_weight": 1e-7, "sample_z": "prior"}
    capabilities = frozenset({"sample", "decode", "reconstruct", "stochastic_encode"})
    variational = True

    def _regulariser(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        return self.kl_weight * GaussianPrior.kl_from_diagonal(mu, logvar).mean()

    @native_convs
    def encode_posterior(self, x: np.ndarray, *, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(μ, log σ²) of q(z|x) at ``encode_t`` (the posterior UDR's KL filter reads)."""
        mu, logvar = self._posterior_codes(self._images(x), None)
        return mu.cpu().numpy().astype(np.float32), logvar.cpu().numpy().astype(np.float32)
