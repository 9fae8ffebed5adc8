"""PDAE's released checkpoints (ckczzj/PDAE, Google Drive folders ``pre-trained-dpms`` and ``trained-models``)
↔ our ``ddpm`` (its DPM) and ``pdae`` adapters' states.

The authors save with ``torch.save`` (``trainer/train_regular_diffusion.py: save``,
``trainer/train_representation_learning.py: save``):

* the DPM, ``pre-trained-dpms/<data>/checkpoint.pt``: ``{"step", "denoise_fn", "ema_denoise_fn",
  "optimizer", "scaler"}``; evaluation and PDAE's stage 2 read ``ema_denoise_fn``
  (``load_trained_ddpm``) — a ``model/unet.py: UNet``;
* PDAE, ``trained-models/autoencoder/<data>/checkpoint.pt``: ``{"encoder", "ema_encoder",
  "decoder", "ema_decoder", "optimizer", "scaler"}``; the samplers read ``ema_encoder`` and
  ``ema_decoder`` (``sampler/autoencoding_eval.py``). The decoder is a ``model/shift_unet.py:
  ShiftUNet``: the frozen DPM (``time_embed``, ``input_blocks``, ``middle_block``,
  ``output_blocks``, ``out``, copied from ``ema_denoise_fn``) and the trained gradient
  estimator (``label_emb``, ``shift_middle_block``, ``shift_output_blocks``, ``shift_out``).

* the latent DDPM, ``trained-models/latent_denoise_fn/<data>/checkpoint.pt``
  (``trainer/train_latent_diffusion.py: save``): ``{"step", "encoder", "decoder",
  "latent_denoise_fn", "ema_latent_denoise_fn", "optimizer", "scaler"}`` — a
  ``model/mlp_skip_net.py: MLPSkipNet`` — and the code statistics it normalises with,
  ``trained-models/latents/<data>.pt`` = ``{"mean", "std"}`` (``sampler/infer_latents.py``).

Flattened with "." (:func:`bench.released._keymap.flatten`), the EMA entries map one to one
onto our tensors: the DPM onto the ``ddpm`` adapter's ``state["nets"]["unet"]``, the encoder
and G onto the ``pdae`` adapter's ``state["nets"]["encoder"]`` / ``["shift"]``. The other
entries are not needed (:func:`not_needed` says why). Our networks must be built with
``resample = "resblock"`` (the presets ``ddpm: released-pdae-celeba64``, ``pdae: released``).

Exact: a rename, plus a reshape of the attention's 1×1 ``Conv1d`` weights to our ``Conv2d``
ones and, for several heads (the encoder's 4), a permutation of the ``qkv`` rows from the
authors' ``QKVAttentionLegacy`` order to ours.

In a grid, ``pretrained = <file>`` converts through :class:`DPMRelease` (``ddpm``: a DPM
file, or a PDAE file's frozen DPM) and :class:`PDAERelease` (``pdae``; its ``dpm`` component
is given the same file), the same rules as the functions here.

:data:`LAYOUT_FILE` holds the authors' CelebA-64 layout (keys and shapes), generated from the
reference code by ``benchmarks/reference_equivalence_pdae_diffae.py --write-layouts``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from bench.diffusion.unet import UNet
from bench.released import _keymap as km

#: the authors' CelebA-64 layout: {"dpm"|"pdae"|"latent": {key: shape}} (EMA entries, flattened)
LAYOUT_FILE = Path(__file__).resolve().parents[2] / "tests" / "data" / "released" / "pdae_celeba64.json"
#: the released configuration the layout is of, and its image shape
RELEASED_INPUT_SHAPE = (3, 64, 64)

_NOT_NEEDED = {
    "step": "the training step counter",
    "optimizer.": "the optimiser's state (training only; our checkpoints hold evaluation weights)",
    "scaler.": "the AMP gradient scaler's state (training only)",
    "denoise_fn.": "the non-EMA DPM weights (the authors evaluate, and train PDAE on, ema_denoise_fn)",
    "encoder.": "the non-EMA encoder weights (the samplers read ema_encoder)",
    "decoder.": "the non-EMA decoder weights (the samplers read ema_decoder)",
    "latent_denoise_fn.": "the non-EMA latent-DDPM weights (sampling reads ema_latent_denoise_fn)",
}
#: in a latent-DDPM checkpoint, "encoder"/"decoder" are the autoencoder it was trained on (converted from that
#: checkpoint by :func:`to_ours`)
_NOT_NEEDED_LATENT = {
    **_NOT_NEEDED,
    "encoder.": "the autoencoder's encoder the latent DDPM was trained on (convert its own checkpoint with to_ours)",
    "decoder.": "the autoencoder's decoder the latent DDPM was trained on (convert its own checkpoint with to_ours)",
}
LATENT_PREFIX = "ema_latent_denoise_fn."


def load_layout() -> dict[str, dict[str, tuple[int, ...]]]:
    """The authors' layout read from :data:`LAYOUT_FILE`: ``{"dpm": …, "pdae": …, "latent": …}`` (key → shape)."""
    data = json.loads(LAYOUT_FILE.read_text())
    return {part: {k: tuple(v) for k, v in data[part].items()} for part in ("dpm", "pdae", "latent")}


def not_needed(key: str, *, latent: bool = False) -> str | None:
    """Why an authors' key is not one of our tensors (None: it must be one); ``latent``: in a latent-DDPM checkpoint."""
    if latent and km.mlp_duplicate_of(key, LATENT_PREFIX):
        return "MLPLNAct's linear_emb registered a second time as cond_layers.1 (checked equal)"
    for prefix, why in (_NOT_NEEDED_LATENT if latent else _NOT_NEEDED).items():
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return why
    return None


def _dpm_adapter(params: Mapping[str, Any]):
    from methods.ddpm import DDPM
    return DDPM(**dict(params))


def _pdae_adapter(params: Mapping[str, Any]):
    from methods.pdae import PDAE
    return PDAE(**dict(params))


def _unet(adapter, input_shape: tuple[int, int, int]) -> UNet:
    c, h, _ = input_shape
    return UNet(in_channels=c, out_channels=c, image_size=h, **adapter._unet_kwargs())


def unet_rules(unet: UNet, prefix: str) -> dict[str, km.Rule]:
    """Our DPM UNet as ``model/unet.py: UNet`` under ``prefix`` (the frozen part of a ``ShiftUNet`` too)."""
    rules = km.sequential_rules(unet.time_embed, "time_embed", f"{prefix}time_embed")
    rules.update(km.down_rules(unet.down, "down", prefix, middle="middle_block"))
    rules.update(km.up_rules(unet.up, "up", f"{prefix}output_blocks"))
    rules.update(km.sequential_rules(unet.out, "out", f"{prefix}out"))
    km.check_complete(rules, unet, "PDAE DPM")
    return rules


def shift_rules(shift, prefix: str) -> dict[str, km.Rule]:
    """Our :class:`~bench.diffusion.unet.ShiftDecoder` as ``ShiftUNet``'s trained part under ``prefix``."""
    rules = km._params(shift.code_embed, "code_embed", f"{prefix}label_emb")
    rules.update(km.middle_rules(shift.middle, "middle", f"{prefix}shift_middle_block", z_layers="emb_z_layers"))
    rules.update(km.up_rules(shift.up, "up", f"{prefix}shift_output_blocks", z_layers="emb_z_layers"))
    rules.update(km.sequential_rules(shift.out, "out", f"{prefix}shift_out"))
    km.check_complete(rules, shift, "PDAE gradient estimator")
    return rules


def encoder_rules(encoder, prefix: str) -> dict[str, km.Rule]:
    """Our :class:`~bench.diffusion.encoders.PDAEEncoder` as ``CELEBA64Encoder.encoder`` (same indices)."""
    rules = km.sequential_rules(encoder.net, "net", f"{prefix}encoder")
    km.check_complete(rules, encoder, "PDAE encoder")
    return rules


def _dpm_groups(params: Mapping[str, Any], input_shape) -> tuple[dict, dict]:
    adapter = _dpm_adapter(params)
    unet = km.on_meta(lambda: _unet(adapter, input_shape))
    return {"unet": unet_rules(unet, "ema_denoise_fn.")}, km.meta_shapes({"unet": unet})


def _pdae_groups(params: Mapping[str, Any], input_shape) -> tuple[dict, dict]:
    adapter = _pdae_adapter(params)

    def build():
        adapter.unet_ = _unet(adapter, input_shape)
        adapter._build_stage2(tuple(input_shape))
        return {"encoder": adapter.encoder_, "shift": adapter.shift_, "unet": adapter.unet_}

    nets = km.on_meta(build)
    groups = {"encoder": encoder_rules(nets["encoder"], "ema_encoder."),
              "shift": shift_rules(nets["shift"], "ema_decoder."),
              "unet": unet_rules(nets["unet"], "ema_decoder.")}
    return groups, km.meta_shapes(nets)


def _nets_of(state: Mapping[str, Any]) -> Mapping[str, Mapping[str, torch.Tensor]]:
    return state["nets"] if "nets" in state else state


# -- the DPM (our ddpm adapter) ---------------------------------------------------------------


def dpm_layout(params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE) -> dict[str, tuple[int, ...]]:
    """The authors' keys and shapes (flattened) that a DPM with our ``ddpm`` hyperparameters ``params`` has."""
    return km.expected_layout(*_dpm_groups(params, input_shape))


def dpm_to_ours(reference: Mapping[str, Any], params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE
                ) -> dict[str, dict[str, torch.Tensor]]:
    """A flattened ``pre-trained-dpms/<data>/checkpoint.pt`` → the ``ddpm`` adapter's ``state["nets"]`` (``{"unet"}``).

    ``params``: the ``ddpm`` hyperparameters (e.g. ``DDPM.presets["released-pdae-celeba64"]``;
    missing ones take the defaults). Raises ``ValueError`` naming the first key that does not fit.
    """
    groups, shapes = _dpm_groups(params, input_shape)
    return km.import_groups(reference, groups, shapes, not_needed, "PDAE DPM checkpoint")


def dpm_to_reference(ours_state: Mapping[str, Any], params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE
                     ) -> dict[str, torch.Tensor]:
    """The ``ddpm`` adapter's state (or its ``nets``) → the authors' flattened ``ema_denoise_fn.*`` entries."""
    groups, _ = _dpm_groups(params, input_shape)
    return km.export_groups(_nets_of(ours_state), groups, "PDAE DPM export")


# -- PDAE (our pdae adapter; its DPM in the same file) ---------------------------------------


def layout(params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE) -> dict[str, tuple[int, ...]]:
    """The authors' keys and shapes (flattened ``ema_encoder.*``, ``ema_decoder.*``) for ``pdae`` hyperparameters."""
    return km.expected_layout(*_pdae_groups(params, input_shape))


def to_ours(reference: Mapping[str, Any], params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE
            ) -> dict[str, dict[str, torch.Tensor]]:
    """A flattened ``trained-models/autoencoder/<data>/checkpoint.pt`` → our states by network.

    Returns ``{"encoder": …, "shift": …}`` (the ``pdae`` adapter's ``state["nets"]``) and
    ``"unet"``: the frozen DPM held in ``ema_decoder`` (the ``dpm`` component's
    ``state["nets"]["unet"]``, equal to the DPM checkpoint's ``ema_denoise_fn``).
    ``params``: the ``pdae`` hyperparameters (e.g. ``PDAE.presets["released"]``).
    Raises ``ValueError`` naming the first key that does not fit.
    """
    groups, shapes = _pdae_groups(params, input_shape)
    return km.import_groups(reference, groups, shapes, not_needed, "PDAE checkpoint")


def to_reference(ours_state: Mapping[str, Any], params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE
                 ) -> dict[str, torch.Tensor]:
    """Our ``{"encoder", "shift", "unet"}`` states → the authors' flattened ``ema_encoder.*``/``ema_decoder.*``."""
    groups, _ = _pdae_groups(params, input_shape)
    return km.export_groups(_nets_of(ours_state), groups, "PDAE export")


# -- the latent DDPM (our pdae adapter's state["latent"]) ------------------------------------


def _latent_groups(params: Mapping[str, Any]) -> tuple[dict, dict]:
    adapter = _pdae_adapter(params)

    def build():
        adapter._build_latent()
        return adapter.latent_net_

    net = km.on_meta(build)
    rules = {**km.latent_mlp_rules(net, LATENT_PREFIX), "z_mean": ("latents.mean", "copy"),
             "z_std": ("latents.std", "copy")}
    shapes = {**{f"net.{k}": tuple(v.shape) for k, v in net.state_dict().items()},
              "z_mean": (adapter.latent_dim,), "z_std": (adapter.latent_dim,)}
    return {"latent": rules}, {"latent": shapes}


def latent_layout(params: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The authors' latent-DDPM keys and shapes (``ema_latent_denoise_fn.*`` without the ``cond_layers.1``
    copies, and the statistics file's as ``latents.mean``/``latents.std``) for ``pdae`` hyperparameters."""
    return km.expected_layout(*_latent_groups(params))


def latent_to_ours(reference: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A flattened latent-DDPM checkpoint plus its statistics file → the ``pdae`` adapter's ``state["latent"]``.

    ``reference``: ``flatten(checkpoint)`` with the statistics file merged in under ``latents.``
    (``{"latents." + k: v for k, v in read_tensors("trained-models/latents/<data>.pt").items()}``, read with
    :func:`bench.released.checkpoint.read_tensors`, which never runs pickled code: keys ``latents.mean``,
    ``latents.std``). Returns ``{"net": {...}, "z_mean", "z_std", "history": []}``.
    Raises ``ValueError`` naming the first key that does not fit.
    """
    groups, shapes = _latent_groups(params)
    km.check_duplicates(reference, LATENT_PREFIX, "PDAE latent checkpoint")
    flat = km.import_groups(reference, groups, shapes, lambda k: not_needed(k, latent=True),
                            "PDAE latent checkpoint")["latent"]
    return {"net": {k[len("net."):]: v for k, v in flat.items() if k.startswith("net.")},
            "z_mean": flat["z_mean"], "z_std": flat["z_std"], "history": []}


def latent_to_reference(latent_state: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Our ``state["latent"]`` (or a state holding it) → ``ema_latent_denoise_fn.*`` and ``latents.mean``/``.std``."""
    latent = latent_state.get("latent", latent_state)
    groups, _ = _latent_groups(params)
    flat = {**{f"net.{k}": v for k, v in latent["net"].items()}, "z_mean": latent["z_mean"], "z_std": latent["z_std"]}
    return km.add_duplicates(km.export_groups({"latent": flat}, groups, "PDAE latent export"), LATENT_PREFIX)


# -- as grid stages (``pretrained = <file>``; bench.released.convert.RELEASES) ---------------

#: ``ShiftUNet``'s frozen DPM: its top-level modules (the rest of ``ema_decoder`` is G, PDAE's own)
FROZEN = ("time_embed", "input_blocks", "middle_block", "output_blocks", "out")
_HINT = (" (the authors' networks need resample = 'resblock': presets ddpm 'released-pdae-celeba64', "
         "pdae 'released')")


def _dpm_prefix(layout: Mapping[str, Any]) -> str:
    """``ema_denoise_fn.`` (a DPM file; also what a bare export writes) or ``ema_decoder.`` (a PDAE file)."""
    if any(k.startswith("ema_decoder.") for k in layout) and not any(k.startswith("ema_denoise_fn.") for k in layout):
        return "ema_decoder."
    return "ema_denoise_fn."


def _frozen(key: str) -> bool:
    return key.startswith("ema_decoder.") and key.split(".")[1] in FROZEN


class DPMRelease(km.RuleRelease):
    """``ddpm`` from PDAE's pre-trained DPM (``ema_denoise_fn``) or from the frozen DPM in a PDAE checkpoint's
    ``ema_decoder`` (what a ``pdae`` stage's ``dpm`` component reads: both are ``ema_denoise_fn``'s weights)."""

    method = "ddpm"
    files = ("PDAE's pre-trained DPM, pre-trained-dpms/<data>/checkpoint.pt (ema_denoise_fn.* of model/unet.py's "
             "UNet), or a PDAE trained-models/autoencoder/<data>/checkpoint.pt, whose ema_decoder holds that DPM "
             "frozen")
    presets_hint = _HINT

    def rule_groups(self, skeleton, layout):
        unet = skeleton._eval_net("unet")
        return {"unet": (unet.state_dict(), unet_rules(unet, _dpm_prefix(layout)))}

    def not_ours(self, key: str, layout) -> str | None:
        if _dpm_prefix(layout) == "ema_decoder.":
            if key.startswith("ema_encoder."):
                return "PDAE's encoder (the pdae stage converts it)"
            if key.startswith("ema_decoder.") and not _frozen(key):
                return "PDAE's gradient estimator G (the pdae stage converts it)"
        return not_needed(key)

    def state(self, skeleton, groups, tensors) -> dict[str, Any]:
        return {"nets": groups, "history": []}


class PDAERelease(km.RuleRelease):
    """``pdae`` from PDAE's autoencoder checkpoint: ``ema_encoder`` and G in ``ema_decoder`` (its frozen DPM is the
    ``dpm`` component's, converted from the same file by :class:`DPMRelease`). The latent DDPM is another file
    (with a statistics file): a converted ``pdae`` has none, so it cannot sample (FID is a skipped row)."""

    method = "pdae"
    files = ("PDAE's trained-models/autoencoder/<data>/checkpoint.pt (ema_encoder.* of the CELEBA64Encoder, "
             "ema_decoder.* of model/shift_unet.py's ShiftUNet); the dpm component reads the same file")
    presets_hint = _HINT

    def rule_groups(self, skeleton, layout):
        encoder, shift = skeleton._eval_net("encoder"), skeleton._eval_net("shift")
        return {"encoder": (encoder.state_dict(), encoder_rules(encoder, "ema_encoder.")),
                "shift": (shift.state_dict(), shift_rules(shift, "ema_decoder."))}

    def not_ours(self, key: str, layout) -> str | None:
        if _frozen(key):
            return "the frozen DPM's (the dpm component converts it)"
        return not_needed(key)

    def state(self, skeleton, groups, tensors) -> dict[str, Any]:
        return {"nets": groups, "history": []}
