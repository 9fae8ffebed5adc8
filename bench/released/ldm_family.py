"""Released checkpoints of the latent-diffusion family: LDM's VQ-f4 first stage, a latent DPM, EncDiff and DisDiff.

All are Lightning checkpoints of LDM's classes (CompVis/latent-diffusion ``ldm/models``), a
``state_dict`` (under ``"state_dict"``; a bare state dict is accepted too) with

* ``first_stage_model.*`` — the VQ autoencoder (``VQModelInterface``; in a first-stage file of
  its own, ``autoencoder.ckpt`` / CompVis's ``vq-f4/model.ckpt``, the same keys without the
  prefix, plus ``loss.*``: the training loss's LPIPS network and PatchGAN discriminator);
  taming's naming: ``encoder.down.{level}.block.{j}``, ``.downsample``, ``mid.block_1`` /
  ``attn_1`` / ``block_2``, ``decoder.up.{level}.block.{j}`` / ``.upsample``
  (``ldm/modules/diffusionmodules/model.py``);
* ``model.diffusion_model.*`` — the UNet (``openaimodel.py``; EncDiff's
  ``openaimodel_enc.py``, DisDiff's ``openaimodel_shift.py`` with its shift decoder,
  ``repre_embed``, ``part_latents`` and ``part_emb`` beside the frozen DPM);
* ``model_ema.<name without dots>`` — LitEma's copies of the parameters that were trainable
  when it was built (``ldm/modules/ema.py``): all of an LDM's UNet, only the shift parts of
  DisDiff's (its DPM is frozen before); LDM samples and evaluates with them
  (``ema_scope``), so the EMA copy is read where there is one, the live weight otherwise;
* ``cond_stage_model.*`` — EncDiff's / DisDiff's image encoder (``Encoder4``; no EMA);
* the noise-schedule buffers (``betas``, ``alphas_cumprod``, ...; DisDiff adds
  ``shift_coef`` and ``ddim_coef``), recomputed here from the schedule hyperparameters, and
  ``scale_factor`` (``scale_by_std``), read as the latent scale factor; DisDiff's UNet keeps
  the LDM's as ``model.diffusion_model.scale_factor`` too.

One DisDiff ``disdiff.ckpt`` holds its first stage, its frozen DPM and its own networks, so a
``disdiff`` stage with ``pretrained`` converts its ``ldm`` and ``vq-f4`` components from the
same file; an ``ldm.ckpt`` or ``autoencoder.ckpt`` alone loads into an ``ldm`` / ``vq-f4``
stage. Our names differ from the authors' only inside residual blocks (``out_layers.0`` →
``out_norm``, ``out_layers.3`` → ``out_rest.2``, ``skip_connection`` → ``skip``), EncDiff's
transformer blocks (``transformer_blocks.0`` → ``block``, ``ff.net.0.proj`` → ``ff_proj``,
``ff.net.2`` → ``ff_out.1``), the encoders (``Encoder4.encoder`` → ``trunk.net`` / ``net``,
``.net`` → ``mlps``) and the first stage's flattened level lists.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from bench.released.checkpoint import Layout
from bench.released.convert import Release

SCHEDULE = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
            "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
            "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
            "shift_coef", "ddim_coef", "lvlb_weights")
RESBLOCK = ((".out_norm.", ".out_layers.0."), (".out_rest.2.", ".out_layers.3."), (".skip.", ".skip_connection."))
TRANSFORMER = ((".block.", ".transformer_blocks.0."), (".ff_proj.", ".ff.net.0.proj."), (".ff_out.1.", ".ff.net.2."))
#: DisDiff's UNet: the frozen DPM's top-level modules, and the shift parts beside them
FROZEN = ("time_embed", "input_blocks", "middle_block", "output_blocks", "out")
SHIFT = ("shift_middle_block", "shift_output_blocks", "shift_out", "repre_embed", "part_latents", "part_emb")
UNET, EMA, FIRST, COND = "model.diffusion_model.", "model_ema.", "first_stage_model.", "cond_stage_model."


def _rename(key: str, pairs) -> str:
    key = "." + key
    for ours, theirs in pairs:
        key = key.replace(ours, theirs)
    return key[1:]


def prefix(layout: Layout) -> str:
    """``"state_dict."`` for a Lightning checkpoint, ``""`` for a bare state dict."""
    return "state_dict." if any(k.startswith("state_dict.") for k in layout) else ""


def ema_or_live(unet_key: str, layout: Layout) -> str:
    """The authors' key of a UNet weight: LitEma's copy when the file has one, else the live weight."""
    p = prefix(layout)
    ema = f"{p}{EMA}{('diffusion_model.' + unet_key).replace('.', '')}"
    return ema if ema in layout else f"{p}{UNET}{unet_key}"


def vq_reference_name(key: str, ch_mult, num_res_blocks: int) -> str:
    """Our first-stage key (flattened level lists) → taming's."""
    parts = key.split(".")
    if len(parts) > 3 and parts[1] == "mid":
        return ".".join([parts[0], "mid", ("block_1", "attn_1", "block_2")[int(parts[2])], *parts[3:]])
    if len(parts) > 3 and parts[:2] == ["encoder", "down"]:
        level, j = divmod(int(parts[2]), num_res_blocks + 1)
        where = f"block.{j}" if j < num_res_blocks else "downsample"
        return ".".join(["encoder", "down", str(level), where, *parts[3:]])
    if len(parts) > 3 and parts[:2] == ["decoder", "up"]:
        position, j = divmod(int(parts[2]), num_res_blocks + 2)
        level = len(ch_mult) - 1 - position
        where = f"block.{j}" if j <= num_res_blocks else "upsample"
        return ".".join(["decoder", "up", str(level), where, *parts[3:]])
    return key


def _common(key: str, layout: Layout) -> str | None:
    """Why an entry every LDM-family file has is not a network tensor of ours."""
    p = prefix(layout)
    name = key[len(p):]
    if name in SCHEDULE:
        return "noise-schedule buffer (recomputed from the schedule hyperparameters)"
    if name in (EMA + "decay", EMA + "num_updates"):
        return "LitEma bookkeeping"
    if name == "logvar":
        return "LDM's per-step log-variance (learn_logvar = False)"
    if name.startswith(UNET) and ema_or_live(name[len(UNET):], layout) != key:
        return "the live weight beside its EMA copy (LDM evaluates with the EMA)"
    return None


class VQF4Release(Release):
    method = "vq-f4"
    files = ("an LDM VQ first stage: a VQModel checkpoint (CompVis vq-f4 model.ckpt, DisDiff/EncDiff autoencoder.ckpt) "
             "or a LatentDiffusion checkpoint holding first_stage_model.*")

    def template(self, skeleton) -> dict[str, dict[str, torch.Tensor]]:
        return {"ae": skeleton.ae_.state_dict()}

    def _within(self, layout: Layout) -> str:
        p = prefix(layout)
        return p + FIRST if any(k.startswith(p + FIRST) for k in layout) else p

    def reference_key(self, group: str, key: str, layout: Layout) -> str:
        return self._within(layout) + vq_reference_name(key, self.params["ch_mult"], self.params["num_res_blocks"])

    def not_ours(self, key: str, layout: Layout) -> str | None:
        within = self._within(layout)
        if within.endswith(FIRST):
            return None if key.startswith(within) else "another network of the latent-diffusion model (not the first stage)"
        if key[len(within):].startswith("loss."):
            return "the training loss's LPIPS network and PatchGAN discriminator"
        return None

    def state(self, skeleton, groups, tensors) -> dict[str, Any]:
        return {"ae": groups["ae"], "history": [], "fit_metrics": {}}


def _scale_factor(tensors: Layout) -> float:
    value = tensors.get(prefix(tensors) + "scale_factor")
    return float(value) if torch.is_tensor(value) else 1.0


class _LatentRelease(Release):
    """A latent-diffusion adapter's state: its networks, no curve, the file's ``scale_factor``."""

    def state(self, skeleton, groups, tensors) -> dict[str, Any]:
        return {"nets": groups, "history": [], "scale_factor": _scale_factor(tensors)}

    def extra_reference(self, adapter) -> dict[str, torch.Tensor]:
        return {"scale_factor": torch.tensor(float(adapter.scale_factor_))}


class LDMRelease(_LatentRelease):
    method = "ldm"
    files = ("a LatentDiffusion checkpoint (LDM; DisDiff's ldm.ckpt, or a disdiff.ckpt, whose frozen DPM is read) "
             "with model.diffusion_model.* of an openaimodel UNetModel")

    def template(self, skeleton) -> dict[str, dict[str, torch.Tensor]]:
        return {"unet": skeleton.unet_.state_dict()}

    def reference_key(self, group: str, key: str, layout: Layout) -> str:
        return ema_or_live(_rename(key, RESBLOCK), layout)

    def not_ours(self, key: str, layout: Layout) -> str | None:
        name = key[len(prefix(layout)):]
        if name == "scale_factor":
            return "read as the latent scale factor"
        if name.startswith((FIRST, COND)):
            return "another stage's network (the first stage, or the encoder of a method trained on this DPM)"
        if name.startswith(UNET) and name[len(UNET):].split(".")[0] in SHIFT + ("scale_factor",):
            return "DisDiff's (its own stage converts it)"
        if name.startswith(EMA) and name[len(EMA):].startswith(tuple("diffusion_model" + s for s in SHIFT)):
            return "DisDiff's EMA (its own stage converts it)"
        return _common(key, layout)


class EncDiffRelease(_LatentRelease):
    method = "encdiff"
    files = "an EncDiff LatentDiffusion checkpoint (model.diffusion_model.* of openaimodel_enc's UNetModel, cond_stage_model.* of its Encoder4)"

    def template(self, skeleton) -> dict[str, dict[str, torch.Tensor]]:
        return {"unet": skeleton.unet_.state_dict(), "encoder": skeleton.encoder_.state_dict()}

    def reference_key(self, group: str, key: str, layout: Layout) -> str:
        if group == "unet":
            return ema_or_live(_rename(key, RESBLOCK + TRANSFORMER), layout)
        return prefix(layout) + COND + _rename(key, ((".trunk.net.", ".encoder."), (".mlps.", ".net.")))

    def not_ours(self, key: str, layout: Layout) -> str | None:
        name = key[len(prefix(layout)):]
        if name == "scale_factor":
            return "read as the latent scale factor"
        if name.startswith(FIRST):
            return "the first stage's (the vq-f4 component converts it)"
        return _common(key, layout)


class DisDiffRelease(_LatentRelease):
    method = "disdiff"
    files = ("DisDiff's disdiff.ckpt (a LatentDiffusion checkpoint of openaimodel_shift's UNetModel with the shift "
             "decoder, part_latents, part_emb and repre_embed, and cond_stage_model.* of Encoder4)")

    def template(self, skeleton) -> dict[str, dict[str, torch.Tensor]]:
        return {"encoder": skeleton.encoder_.state_dict(), "shift": skeleton.shift_.state_dict(),
                "part": skeleton.part_.state_dict()}

    def reference_key(self, group: str, key: str, layout: Layout) -> str:
        if group == "encoder":
            return prefix(layout) + COND + re.sub(r"^net\.", "encoder.", key)
        if group == "part":
            name = "part_latents.weight" if key == "latents" else re.sub(r"^proj\.", "part_emb.", key)
            return ema_or_live(name, layout)
        return ema_or_live(_rename(key, RESBLOCK), layout)

    def not_ours(self, key: str, layout: Layout) -> str | None:
        name = key[len(prefix(layout)):]
        if name in ("scale_factor", UNET + "scale_factor"):
            return "the latent scale factor (the ldm component reads it)"
        if name.startswith(FIRST):
            return "the first stage's (the vq-f4 component converts it)"
        if name.startswith(UNET) and name[len(UNET):].split(".")[0] in FROZEN:
            return "the frozen DPM's (the ldm component converts it)"
        return _common(key, layout)
