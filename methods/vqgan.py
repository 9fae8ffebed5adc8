"""The VQ-f4 first-stage autoencoder of latent diffusion (Esser et al. 2021; Rombach et al. 2022, App. G),
as DisDiff and EncDiff ship it (``configs/autoencoder/*_vq_4_16.yaml``): a shared component,
trained once per dataset and used by every latent-diffusion cell (``encdiff``).

Networks: :class:`bench.diffusion.first_stage.VQAutoencoder` (64×64×3 → 16×16×3, channels
32 × [1, 2, 4], 2 blocks, codebook 2,048 × 3, straight-through, taming's legacy VQ loss with
the commitment term at weight 1 and the codebook term at 0.25) and taming's PatchGAN.

Loss (taming ``VQLPIPSWithDiscriminator``): ``mean(|x − x̂| + w_p · LPIPS(x, x̂)) + λ · L_G +
codebook_weight · L_VQ`` with L_G = −mean D(x̂) (hinge GAN), λ the adaptive weight × 0.75 from
step ``disc_start`` = 0; the discriminator minimises the hinge loss. Two Adams, β = (0.5,
0.9), lr = 4.5e-6 × effective batch (128 × 2 accumulated = 256: 1.152e-3), images in [−1, 1].

LPIPS needs ImageNet VGG16 weights that cannot be downloaded here
(:mod:`bench.metrics.lpips`): without them the component trains with ``perceptual_weight =
0`` — :meth:`VQF4.check_params` sets it when the weights are missing, so the component's
recorded hyperparameters (and its identity) say what was trained — and warns once.

After training, the reconstruction quality on ``holdout`` held-out images (left out of the
training pool) is recorded as the component's rows ``first_stage_mse``, ``first_stage_psnr``
and ``first_stage_ssim``.

Interface for the latent-diffusion methods: :meth:`VQF4.latents` (images in [0, 1] → the
pre-quantisation latent h, LDM ``encode_first_stage``) and :meth:`VQF4.decode_latents` (h →
images in [0, 1], quantised first, LDM ``decode_first_stage``). As an adapter, ``encode``
returns h flattened (N, embed_dim · (H/4)²); it cannot sample (no prior over latents).

The reference trains until stopped (Lightning, no max_steps): ``steps`` in ``paper`` is ours.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.adapter import Adapter, DivergedError, as_images, resolve_device, seed_everything
from bench.diffusion.first_stage import NLayerDiscriminator, VQAutoencoder, adaptive_weight, hinge_d_loss

VQ_DEFAULTS: dict[str, Any] = {
    "ch": 32,
    "ch_mult": [1, 2, 4],
    "num_res_blocks": 2,
    "z_channels": 3,
    "embed_dim": 3,
    "n_embed": 2048,
    "dropout": 0.0,
    "perceptual_weight": 1.0,
    "codebook_weight": 1.0,
    "disc_weight": 0.75,
    "disc_start": 0,
    "disc_ndf": 64,
    "disc_layers": 3,
    "lr": 4.5e-6 * 256,   # base_learning_rate x batch 128 x accumulate_grad_batches 2
    "batch_size": 128,
    "accumulate": 2,
    "steps": 100_000,
    "hflip": False,
    "holdout": 512,
    "log_every": 100,
    "eval_batch_size": 256,
}
VQ_RANGES: dict[str, Any] = {
    "ch": ">= 1", "ch_mult": "each >= 1", "num_res_blocks": ">= 1", "z_channels": ">= 1", "embed_dim": ">= 1",
    "n_embed": ">= 2", "dropout": "[0, 1)", "perceptual_weight": ">= 0", "codebook_weight": ">= 0",
    "disc_weight": ">= 0", "disc_start": ">= 0", "disc_ndf": ">= 1", "disc_layers": ">= 1", "lr": "> 0",
    "batch_size": ">= 1", "accumulate": ">= 1", "steps": ">= 1", "holdout": ">= 0", "log_every": ">= 1",
    "eval_batch_size": ">= 1",
}
TINY_VQ: dict[str, Any] = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "n_embed": 64, "disc_ndf": 8,
                           "disc_layers": 2, "lr": 1e-3, "batch_size": 16, "accumulate": 1, "steps": 60, "holdout": 16,
                           "log_every": 20}
_WARNED: set[str] = set()


class VQF4(Adapter):
    """VQ-regularised first-stage autoencoder with a PatchGAN and (when its weights exist) LPIPS."""

    defaults: ClassVar[dict[str, Any]] = {**VQ_DEFAULTS, "pretrained": ""}
    #: ``pretrained``: a released checkpoint to convert instead of training (:mod:`bench.released`)
    added_params: ClassVar[dict[str, Any]] = {"pretrained": ""}
    ranges = VQ_RANGES
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(TINY_VQ), "paper": {}}
    capabilities = frozenset({"decode", "reconstruct"})

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        merged = super().check_params(params)
        if merged["perceptual_weight"] > 0:
            from bench.metrics.lpips import lpips_available

            reason = lpips_available()
            if reason is not None:
                merged["perceptual_weight"] = 0.0
                if reason not in _WARNED:
                    _WARNED.add(reason)
                    print(f"bench: vq-f4 trains with perceptual_weight = 0 (recorded in its hyperparameters): {reason}",
                          file=sys.stderr)
        return merged

    # -- networks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, int, int]) -> None:
        c, h, w = input_shape
        f = 2 ** (len(self.ch_mult) - 1)
        if h % f or w % f:
            raise ValueError(f"vq-f4: image sides {h}x{w} must divide by the downsampling factor {f}")
        self.input_shape = tuple(input_shape)
        self.ae_ = VQAutoencoder(in_channels=c, ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                                 z_channels=self.z_channels, embed_dim=self.embed_dim, n_embed=self.n_embed,
                                 dropout=self.dropout)
        self.latent_shape = (self.embed_dim, h // f, w // f)
        self.device_ = torch.device("cpu")

    @property
    def code_dim(self) -> int:
        if not hasattr(self, "latent_shape"):
            raise AttributeError("vq-f4: code_dim is known once the input shape is (after fit or load)")
        return int(np.prod(self.latent_shape))

    def to(self, device) -> "VQF4":
        self.device_ = torch.device(device)
        self.ae_.to(self.device_)
        return self

    # -- training ----------------------------------------------------------------------
    def fit(self, data, *, seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> "VQF4":
        dev = resolve_device(device)
        seed_everything(seed)
        rng = np.random.default_rng(seed)
        self._build(data.image_shape)
        self.to(dev)
        disc = NLayerDiscriminator(data.image_shape[0], self.disc_ndf, self.disc_layers).to(dev)
        perceptual = None
        if self.perceptual_weight > 0:
            from bench.metrics.lpips import load_lpips

            perceptual = load_lpips().to(dev)
        n = len(data)
        holdout = min(self.holdout, max(0, n - 1))
        order = rng.permutation(n)
        held, train = np.sort(order[:holdout]), order[holdout:]
        opt_ae = torch.optim.Adam(self.ae_.parameters(), lr=self.lr, betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(disc.parameters(), lr=self.lr, betas=(0.5, 0.9))
        gen = torch.Generator(device=dev).manual_seed(seed)
        last = self.ae_.decoder.conv_out.weight
        self.history_: list[tuple[int, float]] = []
        nonfinite = torch.zeros((), dtype=torch.bool, device=dev)
        bar = tqdm(range(1, self.steps + 1), desc="fit vq-f4", disable=not progress, leave=False)
        for step in bar:
            for _ in range(self.accumulate):
                x = torch.from_numpy(data.images(rng.choice(train, size=self.batch_size))).to(dev) * 2 - 1
                if self.hflip:
                    flip = torch.rand(x.shape[0], generator=gen, device=dev) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                # the autoencoder's step: D is frozen meanwhile (Lightning's toggle_optimizer)
                disc.requires_grad_(False)
                xrec, qloss, _ = self.ae_(x)
                rec = (x - xrec).abs()
                if perceptual is not None:
                    rec = rec + self.perceptual_weight * perceptual(x, xrec)[:, None, None, None]
                nll = rec.mean()
                g_loss = -disc(xrec).mean()
                factor = 1.0 if step - 1 >= self.disc_start else 0.0
                d_weight = adaptive_weight(nll, g_loss, last, self.disc_weight) if factor else torch.zeros((), device=dev)
                loss = nll + d_weight * factor * g_loss + self.codebook_weight * qloss
                (loss / self.accumulate).backward()
                # the discriminator's step on the same batch (hinge loss)
                disc.requires_grad_(True)
                d_loss = factor * hinge_d_loss(disc(x), disc(xrec.detach()))
                if factor:
                    (d_loss / self.accumulate).backward()
            opt_ae.step()
            opt_ae.zero_grad(set_to_none=True)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            nonfinite |= ~torch.isfinite(loss.detach())
            if step % self.log_every == 0 or step == self.steps:
                value = float(loss.detach())
                self.history_.append((step, value))
                self.log_scalars(step, loss=value, lr=self.lr, reconstruction=float(nll.detach()),
                                 vq=float(qloss.detach()), generator=float(g_loss.detach()),
                                 discriminator=float(d_loss.detach()), adaptive_weight=float(d_weight))
                bar.set_postfix(loss=f"{value:.3f}")
                if bool(nonfinite):
                    raise DivergedError(f"vq-f4: loss became NaN/inf by step {step} (lr={self.lr}); lower the learning rate")
        self.ae_.eval()
        self._fitted = True
        self.fit_metrics_ = self._holdout_quality(data, held)
        return self

    def _holdout_quality(self, data, held: np.ndarray) -> dict[str, float]:
        from bench.metrics.reconstruction import reconstruction_from_images

        if len(held) == 0:
            return {}
        x = data.images(held)
        values = reconstruction_from_images(x, self.reconstruct(x))
        return {f"first_stage_{k}": float(v) for k, v in values.items()}

    # -- the latent-diffusion interface ------------------------------------------------
    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (on any device) → pre-quantisation latents h (B, embed_dim, H/4, W/4)."""
        return self.ae_.encode_prequant(x.to(self.device_).float() * 2 - 1)

    @torch.no_grad()
    def decode_latents(self, h: torch.Tensor) -> torch.Tensor:
        """Latents h → images in [0, 1] (quantised first, as LDM's ``decode_first_stage``)."""
        return ((self.ae_.decode_latent(h.to(self.device_).float()) + 1) / 2).clamp(0, 1)

    # -- adapter contract --------------------------------------------------------------
    def _batches(self, x: np.ndarray):
        for i in range(0, len(x), self.eval_batch_size):
            yield torch.from_numpy(x[i:i + self.eval_batch_size])

    def encode(self, x: np.ndarray, *, stochastic: bool = False, seed: int | None = None) -> np.ndarray:
        """The pre-quantisation latent h, flattened: (N, embed_dim · (H/4) · (W/4))."""
        self.check_fitted()
        if stochastic:
            raise TypeError("vq-f4 encodes deterministically; stochastic=True is not available")
        x = as_images(x, self.input_shape)
        out = [self.latents(b).flatten(1).cpu() for b in self._batches(x)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.code_dim), np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        self.check_fitted()
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"vq-f4.decode: z must have shape (N, {self.code_dim}), got {z.shape}")
        out = [self.decode_latents(torch.from_numpy(z[i:i + self.eval_batch_size]).view(-1, *self.latent_shape)).cpu()
               for i in range(0, len(z), self.eval_batch_size)]
        return torch.cat(out).numpy()

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        self.check_fitted()
        x = as_images(x, self.input_shape)
        out = [self.decode_latents(self.latents(b)).cpu() for b in self._batches(x)]
        return torch.cat(out).numpy()

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"ae": {k: v.cpu() for k, v in self.ae_.state_dict().items()}, "history": [list(h) for h in self.history_],
                "fit_metrics": dict(getattr(self, "fit_metrics_", {}))}

    def load_state_dict(self, state: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
        self._build(input_shape)
        self.ae_.load_state_dict(state["ae"])
        self.ae_.eval()
        self.history_ = [tuple(h) for h in state.get("history", [])]
        self.fit_metrics_ = dict(state.get("fit_metrics", {}))
