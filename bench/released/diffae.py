"""DiffAE's released autoencoder checkpoints (phizaz/diffae, ``checkpoints/<name>/last.ckpt``) ↔ our ``diffae`` state.

The authors train with PyTorch Lightning (``experiment.py: LitModel``): a checkpoint is
``{"state_dict": {...}, "epoch", "global_step", "optimizer_states", "lr_schedulers", …}``
and its ``state_dict`` holds ``model.*`` (the trained weights), ``ema_model.*`` (their EMA,
what every evaluation and the released demos use: ``LitModel.encode``/``render`` read
``self.ema_model``) and the buffer ``x_T`` (fixed noise for the evaluation images).
``ema_model`` is a ``model/unet_autoenc.py: BeatGANsAutoencModel``: the denoiser
(``time_embed.time_embed`` — ``TimeStyleSeperateEmbed`` —, ``input_blocks``,
``middle_block``, ``output_blocks``, ``out``) and the semantic encoder ``encoder.*``
(``BeatGANsEncoderModel``).

Flattened with "." (:func:`bench.released._keymap.flatten`), ``state_dict.ema_model.*`` maps
one to one onto our ``state["nets"]["unet"]`` and ``["encoder"]``; every other entry is not
needed (:func:`not_needed` says why). Our networks must be built with ``resample =
"resblock"`` (presets ``released-celeba64``, ``released-ffhq128``). Exact: a rename, plus a
reshape of the attention's 1×1 ``Conv1d`` weights to our ``Conv2d`` ones (one head: the
``qkv`` row order is the same).

The latent DDPM's checkpoints (``checkpoints/<name>_autoenc_latent/last.ckpt``, e.g.
``templates_latent.py: celeba64d2c_autoenc_latent``, ``ffhq128_autoenc_latent``) hold the
autoencoder (as above) and ``ema_model.latent_net.*`` (``model/latentnet.py: MLPSkipNet``,
10 layers of width 2048, skips into layers 1…9) with the buffers ``conds_mean``/``conds_std``
of shape (1, D) (the z-normalisation): they map onto our ``state["latent"]``
(:class:`bench.diffusion.latent_mlp.LatentMLP` ``net``, ``z_mean``, ``z_std``), returned as
the group ``"latent"`` (keys ``net.<key>``, ``z_mean``, ``z_std``; :func:`adapter_state`
assembles the adapter's state). ``MLPLNAct`` registers its ``linear_emb`` twice (also as
``cond_layers.1``): the copy must equal it and is otherwise refused.

In a grid, ``pretrained = <file>`` converts through :class:`DiffAERelease` (the same rules;
the latent DDPM when the file has one).

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
from bench.released.checkpoint import CheckpointError

LAYOUT_FILE = Path(__file__).resolve().parents[2] / "tests" / "data" / "released" / "diffae_celeba64.json"
RELEASED_INPUT_SHAPE = (3, 64, 64)
PREFIX = "state_dict.ema_model."

_NOT_NEEDED = {
    "state_dict.model.": "the non-EMA weights (training only; evaluation uses ema_model)",
    "state_dict.x_T": "the fixed noise of the authors' evaluation images",
    "epoch": "training progress", "global_step": "training progress",
    "pytorch-lightning_version": "metadata", "optimizer_states": "the optimiser's state (training only)",
    "lr_schedulers": "the learning-rate schedule's state (training only)", "callbacks": "Lightning callbacks' state",
    "hparams_name": "metadata", "hyper_parameters": "the training configuration (metadata)",
    "loops": "Lightning loop state (training only)",
}


def load_layout(latent: bool = False) -> dict[str, tuple[int, ...]]:
    """The authors' CelebA-64 layout (flattened ``state_dict.ema_model.*`` keys → shapes) of the autoencoder's
    checkpoint, or with ``latent`` of the latent DDPM's (``celeba64d2c_autoenc_latent``: the autoencoder too)."""
    data = json.loads(LAYOUT_FILE.read_text())
    keys = {**data["diffae"], **(data["latent"] if latent else {})}
    return {k: tuple(v) for k, v in keys.items()}


def not_needed(key: str) -> str | None:
    """Why an authors' key is not one of our tensors (None: it must be one)."""
    if km.mlp_duplicate_of(key, f"{PREFIX}latent_net."):
        return "MLPLNAct's linear_emb registered a second time as cond_layers.1 (checked equal)"
    for prefix, why in _NOT_NEEDED.items():
        if key == prefix or key.startswith(f"{prefix}."):
            return why
        if prefix.endswith(".") and key.startswith(prefix):
            return why
    return None


def _adapter(params: Mapping[str, Any]):
    from methods.diffae import DiffAE
    return DiffAE(**dict(params))


def unet_rules(unet: UNet, prefix: str) -> dict[str, km.Rule]:
    """Our z-conditioned UNet as ``BeatGANsAutoencModel``'s denoiser (code through ``cond_emb_layers``)."""
    rules = km.sequential_rules(unet.time_embed, "time_embed", f"{prefix}time_embed.time_embed")
    rules.update(km.down_rules(unet.down, "down", prefix, z_layers="cond_emb_layers", middle="middle_block"))
    rules.update(km.up_rules(unet.up, "up", f"{prefix}output_blocks", z_layers="cond_emb_layers"))
    rules.update(km.sequential_rules(unet.out, "out", f"{prefix}out"))
    km.check_complete(rules, unet, "DiffAE denoiser")
    return rules


def encoder_rules(encoder, prefix: str) -> dict[str, km.Rule]:
    """Our :class:`~bench.diffusion.unet.HalfUNetEncoder` as ``BeatGANsEncoderModel`` (pool ``adaptivenonzero``)."""
    rules = km.down_rules(encoder.down, "down", prefix, middle="middle_block")
    rules.update(km.sequential_rules(encoder.out, "out", f"{prefix}out"))
    km.check_complete(rules, encoder, "DiffAE encoder")
    return rules


def _groups(params: Mapping[str, Any], input_shape, latent: bool = False) -> tuple[dict, dict]:
    adapter = _adapter(params)
    if adapter.encoder != "half_unet":
        raise ValueError("DiffAE checkpoints hold a half-UNet encoder: encoder must be 'half_unet'")

    def build():
        c, h, _ = input_shape
        adapter.unet_ = UNet(in_channels=c, out_channels=c, image_size=h, cond_dim=adapter._cond_dim(),
                             **adapter._unet_kwargs())
        from bench.diffusion.unet import ENCODERS
        encoder = ENCODERS[adapter.encoder](
            in_channels=c, image_size=h, out_dim=adapter.latent_dim,
            base_channels=adapter.enc_base_channels or adapter.base_channels,
            channel_mult=tuple(adapter.enc_channel_mult), num_res_blocks=adapter.enc_num_res_blocks,
            attention_resolutions=tuple(adapter.enc_attention_resolutions), dropout=adapter.dropout,
            norm_groups=adapter.norm_groups, num_heads=adapter.num_heads, resample=adapter.resample)
        nets = {"unet": adapter.unet_, "encoder": encoder}
        if latent:
            adapter._build_latent()
            nets["latent"] = adapter.latent_net_
        return nets

    nets = km.on_meta(build)
    groups = {"unet": unet_rules(nets["unet"], PREFIX), "encoder": encoder_rules(nets["encoder"], f"{PREFIX}encoder.")}
    shapes = km.meta_shapes(nets)
    if latent:
        groups["latent"] = {**km.latent_mlp_rules(nets["latent"], f"{PREFIX}latent_net."),
                            "z_mean": ("state_dict.conds_mean", "lead1"), "z_std": ("state_dict.conds_std", "lead1")}
        shapes["latent"] = {**{f"net.{k}": v for k, v in shapes["latent"].items()},
                            "z_mean": (adapter.latent_dim,), "z_std": (adapter.latent_dim,)}
    return groups, shapes


def _has_latent(reference: Mapping[str, Any]) -> bool:
    return any(k.startswith(f"{PREFIX}latent_net.") for k in reference)


def layout(params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE, latent: bool = False
           ) -> dict[str, tuple[int, ...]]:
    """The authors' keys and shapes (flattened ``state_dict.ema_model.*``; with ``latent`` the latent DDPM's
    ``latent_net`` — without its ``cond_layers.1`` copies — and ``conds_mean``/``conds_std``) for ``params``."""
    return km.expected_layout(*_groups(params, input_shape, latent))


def to_ours(reference: Mapping[str, Any], params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE
            ) -> dict[str, dict[str, torch.Tensor]]:
    """A flattened DiffAE ``last.ckpt`` → the ``diffae`` adapter's ``state["nets"]`` (``{"unet", "encoder"}``),
    plus ``"latent"`` (``net.<key>``, ``z_mean``, ``z_std``) when it is a latent-DDPM checkpoint.

    ``params``: the ``diffae`` hyperparameters (e.g. ``DiffAE.presets["released-celeba64"]``;
    missing ones take the defaults); ``input_shape``: the released model's image shape.
    Raises ``ValueError`` naming the first key that does not fit.
    """
    groups, shapes = _groups(params, input_shape, _has_latent(reference))
    km.check_duplicates(reference, f"{PREFIX}latent_net.", "DiffAE checkpoint")
    return km.import_groups(reference, groups, shapes, not_needed, "DiffAE checkpoint")


def adapter_state(converted: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    """The ``diffae`` adapter's state (``load_state_dict``'s argument) from :func:`to_ours`'s groups."""
    state: dict[str, Any] = {"nets": {"unet": dict(converted["unet"]), "encoder": dict(converted["encoder"])},
                             "history": []}
    if "latent" in converted:
        latent = converted["latent"]
        state["latent"] = {"net": {k[len("net."):]: v for k, v in latent.items() if k.startswith("net.")},
                           "z_mean": latent["z_mean"], "z_std": latent["z_std"], "history": []}
    return state


def to_reference(ours_state: Mapping[str, Any], params: Mapping[str, Any], input_shape=RELEASED_INPUT_SHAPE
                 ) -> dict[str, torch.Tensor]:
    """Our ``diffae`` state (as ``state_dict()`` gives it, with its ``"latent"`` if any; or :func:`to_ours`'s groups)
    → the authors' flattened ``state_dict.ema_model.*`` entries (and ``latent_net``, ``conds_mean``/``conds_std``)."""
    if "nets" in ours_state:
        nets = dict(ours_state["nets"])
        latent = ours_state.get("latent")
        if latent is not None:
            nets["latent"] = {**{f"net.{k}": v for k, v in latent["net"].items()},
                              "z_mean": latent["z_mean"], "z_std": latent["z_std"]}
    else:
        nets = dict(ours_state)
    groups, _ = _groups(params, input_shape, "latent" in nets)
    return km.add_duplicates(km.export_groups(nets, groups, "DiffAE export"), f"{PREFIX}latent_net.")


# -- as a grid stage (``pretrained = <file>``; bench.released.convert.RELEASES) --------------


def _latent_of(adapter, layout: Mapping[str, Any]):
    """The latent DDPM's net and z-statistics to fill or export: the adapter's own when it has one, else (for a
    file of ``layout`` holding ``latent_net``) a weightless one of the adapter's hyperparameters; None otherwise."""
    if getattr(adapter, "latent_net_", None) is not None:
        ema = getattr(adapter, "latent_ema_", None)
        return (ema.shadow if ema is not None else adapter.latent_net_), adapter.z_mean_, adapter.z_std_
    if not _has_latent(layout):
        return None
    fresh = _adapter(adapter.get_params())
    km.on_meta(fresh._build_latent)
    z = torch.empty(fresh.latent_dim, device="meta")
    return fresh.latent_net_, z, z


class DiffAERelease(km.RuleRelease):
    """``diffae`` from DiffAE's ``last.ckpt``: the autoencoder's ``ema_model`` (denoiser and encoder) and, in a
    ``*_autoenc_latent`` checkpoint, its latent DDPM (``ema_model.latent_net``, ``conds_mean``/``conds_std``)."""

    method = "diffae"
    files = ("DiffAE's Lightning checkpoints/<name>/last.ckpt: an autoencoder (state_dict.ema_model.* of "
             "BeatGANsAutoencModel, e.g. celeba64d2c_autoenc, ffhq128_autoenc_130M) or a latent DDPM's "
             "(<name>_autoenc_latent: ema_model.latent_net.*, conds_mean, conds_std too)")
    presets_hint = (" (the authors' networks need resample = 'resblock' and encoder = 'half_unet': presets "
                    "'released-celeba64', 'released-ffhq128')")

    def rule_groups(self, skeleton, layout):
        if skeleton.encoder != "half_unet":
            raise ValueError("DiffAE checkpoints hold a half-UNet encoder: encoder must be 'half_unet'")
        unet, encoder = skeleton._eval_net("unet"), skeleton._eval_net("encoder")
        out = {"unet": (unet.state_dict(), unet_rules(unet, PREFIX)),
               "encoder": (encoder.state_dict(), encoder_rules(encoder, f"{PREFIX}encoder."))}
        latent = _latent_of(skeleton, layout)
        if latent is not None:
            net, z_mean, z_std = latent
            rules = {**km.latent_mlp_rules(net, f"{PREFIX}latent_net."),
                     "z_mean": ("state_dict.conds_mean", "lead1"), "z_std": ("state_dict.conds_std", "lead1")}
            state = {**{f"net.{k}": v for k, v in net.state_dict().items()}, "z_mean": z_mean, "z_std": z_std}
            out["latent"] = (state, rules)
        return out

    def not_ours(self, key: str, layout) -> str | None:
        return not_needed(key)

    def state(self, skeleton, groups, tensors) -> dict[str, Any]:
        try:
            km.check_duplicates(tensors, f"{PREFIX}latent_net.", "DiffAE checkpoint")
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        return adapter_state(groups)

    def extra_reference(self, adapter) -> dict[str, torch.Tensor]:
        """``MLPLNAct``'s second registration of each ``linear_emb`` (``cond_layers.1``), as the authors' files hold it."""
        latent = _latent_of(adapter, {})
        if latent is None:
            return {}
        state = latent[0].state_dict()
        return {ref.replace(".linear_emb.", ".cond_layers.1."): state[key[len("net."):]].detach().cpu().clone()
                for key, (ref, _) in self.rules_["latent"].items() if ".linear_emb." in ref}
