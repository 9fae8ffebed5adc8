"""Released PDAE / DiffAE checkpoints ↔ our adapters (bench.released.pdae, bench.released.diffae).

No network and no reference code: the authors' key names and shapes come from
``tests/data/released/*.json`` (written from the reference code by
``benchmarks/reference_equivalence_pdae_diffae.py --write-layouts``, which also checks the
outputs against the authors' networks).
"""

from __future__ import annotations

import re

import pytest
import torch

from bench.diffusion.unet import count_parameters
from bench.released import _keymap as km
from bench.released import diffae as rdiffae
from bench.released import pdae as rpdae
from methods.ddpm import DDPM
from methods.diffae import DiffAE
from methods.pdae import PDAE

DPM_PARAMS = DDPM.presets["released-pdae-celeba64"]
PDAE_PARAMS = PDAE.presets["released"]
DIFFAE_PARAMS = DiffAE.presets["released-celeba64"]


def _random(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) for k, shape in layout.items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def pdae_layouts():
    return rpdae.load_layout()


# -- the layouts our rules read are the authors' -------------------------------------------------


def test_layouts_equal_the_authors(pdae_layouts):
    assert rpdae.dpm_layout(DPM_PARAMS) == pdae_layouts["dpm"]
    assert rpdae.layout(PDAE_PARAMS) == pdae_layouts["pdae"]
    assert rdiffae.layout(DIFFAE_PARAMS) == rdiffae.load_layout()


# -- PDAE ------------------------------------------------------------------------------------


def test_pdae_dpm_checkpoint_loads_strictly_and_round_trips(pdae_layouts):
    ema = _random(pdae_layouts["dpm"], 0)
    checkpoint = {"step": 5, "ema_denoise_fn": {k[len("ema_denoise_fn."):]: v for k, v in ema.items()},
                  "denoise_fn": {k[len("ema_denoise_fn."):]: torch.zeros(1) for k in ema},
                  "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]},
                  "scaler": {"scale": 1.0}}
    flat = km.flatten(checkpoint)
    nets = rpdae.dpm_to_ours(flat, DPM_PARAMS)
    dpm = DDPM(**DPM_PARAMS)
    dpm.load_state_dict({"nets": nets, "history": []}, rpdae.RELEASED_INPUT_SHAPE)  # strict
    assert set(nets) == {"unet"}
    exported = rpdae.dpm_to_reference(dpm.state_dict(), DPM_PARAMS)
    assert _equal(exported, ema)  # every EMA tensor consumed, and export -> import -> export is the identity
    assert _equal(rpdae.dpm_to_ours(exported, DPM_PARAMS)["unet"], nets["unet"])


def test_pdae_checkpoint_loads_strictly_and_round_trips(pdae_layouts):
    ema = _random(pdae_layouts["pdae"], 1)
    flat = {**ema, **{f"encoder.{k[len('ema_encoder.'):]}": torch.zeros(1) for k in ema if k.startswith("ema_encoder.")},
            "decoder.label_emb.weight": torch.zeros(1), "optimizer.state.0.exp_avg": torch.zeros(2),
            "scaler.scale": 1.0}
    nets = rpdae.to_ours(flat, PDAE_PARAMS)
    assert set(nets) == {"encoder", "shift", "unet"}
    dpm = DDPM(**DPM_PARAMS)
    dpm.load_state_dict({"nets": {"unet": nets["unet"]}, "history": []}, rpdae.RELEASED_INPUT_SHAPE)
    dpm._fitted = True
    model = PDAE(**PDAE_PARAMS)
    model.components_ = {"dpm": dpm}
    model.load_state_dict({"nets": {"encoder": nets["encoder"], "shift": nets["shift"]}, "history": []},
                          rpdae.RELEASED_INPUT_SHAPE)  # strict
    exported = rpdae.to_reference({**model.state_dict()["nets"], "unet": dpm.state_dict()["nets"]["unet"]},
                                  PDAE_PARAMS)
    assert _equal(exported, ema)


def test_pdae_latent_checkpoint_loads_strictly_and_round_trips(pdae_layouts):
    """The latent DDPM (ema_latent_denoise_fn, MLPSkipNet) with its statistics file (latents.mean/std)."""
    layout = pdae_layouts["latent"]
    duplicates = {k for k in layout if ".cond_layers.1." in k}
    assert rpdae.latent_layout(PDAE_PARAMS) == {k: v for k, v in layout.items() if k not in duplicates}
    ref = _random(layout, 8)
    for key in duplicates:
        ref[key] = ref[key.replace(".cond_layers.1.", ".linear_emb.")]
    checkpoint = {**ref, "step": 3, "encoder.encoder.0.weight": torch.zeros(1), "decoder.out.2.bias": torch.zeros(1),
                  "latent_denoise_fn.time_embed.0.weight": torch.zeros(1), "optimizer.state.0.step": torch.zeros(())}
    latent = rpdae.latent_to_ours(checkpoint, PDAE_PARAMS)
    model = PDAE(**PDAE_PARAMS)
    model._build_latent()  # the adapter's own latent DDPM (what load_state_dict loads state["latent"] into)
    model.latent_net_.load_state_dict(latent["net"])  # strict
    assert torch.equal(latent["z_std"], ref["latents.std"])
    assert _equal(rpdae.latent_to_reference(latent, PDAE_PARAMS), ref)


def test_pdae_errors_name_the_key(pdae_layouts):
    ema = _random(pdae_layouts["pdae"], 2)
    renamed = dict(ema)
    renamed["ema_encoder.encoder.0.weights"] = renamed.pop("ema_encoder.encoder.0.weight")
    with pytest.raises(ValueError, match=r"lacks 'ema_encoder\.encoder\.0\.weight' \(expected a tensor of shape "
                                         r"\(64, 3, 3, 3\)\).*'ema_encoder\.encoder\.0\.weights'"):
        rpdae.to_ours(renamed, PDAE_PARAMS)
    wrong = dict(ema)
    wrong["ema_decoder.shift_out.2.weight"] = torch.zeros(3, 64, 3, 1)
    with pytest.raises(ValueError, match=r"'ema_decoder\.shift_out\.2\.weight' has shape \(3, 64, 3, 1\), "
                                         r"expected \(3, 64, 3, 3\)"):
        rpdae.to_ours(wrong, PDAE_PARAMS)
    extra = {**ema, "ema_decoder.something_new.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"'ema_decoder\.something_new\.weight' is not in the authors' layout"):
        rpdae.to_ours(extra, PDAE_PARAMS)


def test_converters_need_resampling_blocks(pdae_layouts):
    with pytest.raises(ValueError, match="resample = 'resblock'"):
        rpdae.dpm_to_ours(_random(pdae_layouts["dpm"], 3), {**DPM_PARAMS, "resample": "conv"})


def test_small_pdae_round_trip():
    """Any hyperparameters (a tiny net, several encoder heads): ours -> authors' -> ours is the identity."""
    params = {**PDAE.presets["tiny"], "resample": "resblock", "enc_num_heads": 2, "enc_attention_resolutions": [8]}
    layout = rpdae.layout(params, (3, 16, 16))
    assert any(k.endswith(".qkv.weight") for k in layout)
    ref = _random(layout, 4)
    assert _equal(rpdae.to_reference(rpdae.to_ours(ref, params, (3, 16, 16)), params, (3, 16, 16)), ref)


def test_qkv_permutation_is_the_legacy_head_order():
    heads, d, c = 2, 3, 6
    # authors' rows: head-major, [q, k, v] within a head; label each row by (which, head, i)
    theirs = torch.tensor([[w * 100 + h * 10 + i] for h in range(heads) for w in range(3) for i in range(d)],
                          dtype=torch.float32)
    ours = km.to_ours_tensor(f"qkv:{heads}", theirs, (3 * c, 1))
    assert ours[:, 0].tolist() == [w * 100 + h * 10 + i for w in range(3) for h in range(heads) for i in range(d)]
    assert torch.equal(km.to_reference_tensor(f"qkv:{heads}", ours), theirs)


# -- DiffAE ----------------------------------------------------------------------------------


def test_diffae_checkpoint_loads_strictly_and_round_trips():
    ema = _random(rdiffae.load_layout(), 5)
    flat = {**ema, "state_dict.model.out.2.weight": torch.zeros(1), "state_dict.x_T": torch.zeros(2, 3, 64, 64),
            "epoch": 3, "global_step": 10, "optimizer_states.0.state.0.exp_avg": torch.zeros(2)}
    nets = rdiffae.to_ours(flat, DIFFAE_PARAMS)
    model = DiffAE(**DIFFAE_PARAMS)
    model.load_state_dict({"nets": nets, "history": []}, rdiffae.RELEASED_INPUT_SHAPE)  # strict
    exported = rdiffae.to_reference(model.state_dict(), DIFFAE_PARAMS)
    assert _equal(exported, ema)


def test_diffae_latent_checkpoint_loads_strictly_and_round_trips():
    """A latent-DDPM checkpoint (celeba64d2c_autoenc_latent): autoencoder + MLPSkipNet + z-normalisation."""
    layout = rdiffae.load_layout(latent=True)
    duplicates = {k for k in layout if ".cond_layers.1." in k}
    assert rdiffae.layout(DIFFAE_PARAMS, latent=True) == {k: v for k, v in layout.items() if k not in duplicates}
    ref = _random(layout, 7)
    for key in duplicates:  # MLPLNAct registers linear_emb twice: one tensor, two names
        ref[key] = ref[key.replace(".cond_layers.1.", ".linear_emb.")]
    converted = rdiffae.to_ours(ref, DIFFAE_PARAMS)
    assert set(converted) == {"unet", "encoder", "latent"}
    model = DiffAE(**DIFFAE_PARAMS)
    model.load_state_dict(rdiffae.adapter_state(converted), rdiffae.RELEASED_INPUT_SHAPE)  # strict
    assert torch.equal(model.z_mean_, ref["state_dict.conds_mean"][0])
    assert _equal(rdiffae.to_reference(model.state_dict(), DIFFAE_PARAMS), ref)
    key = sorted(duplicates)[0]
    ref[key] = ref[key] + 1
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        rdiffae.to_ours(ref, DIFFAE_PARAMS)


def test_diffae_errors_name_the_key():
    ema = _random(rdiffae.load_layout(), 6)
    renamed = dict(ema)
    renamed["state_dict.ema_model.encoder.out.3.weigth"] = renamed.pop("state_dict.ema_model.encoder.out.3.weight")
    with pytest.raises(ValueError, match=r"lacks 'state_dict\.ema_model\.encoder\.out\.3\.weight'"):
        rdiffae.to_ours(renamed, DIFFAE_PARAMS)
    wrong = dict(ema)
    wrong["state_dict.ema_model.input_blocks.3.0.in_layers.2.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError, match=r"'state_dict\.ema_model\.input_blocks\.3\.0\.in_layers\.2\.weight' has "
                                         r"shape \(64, 64, 1, 1\), expected \(64, 64, 3, 3\)"):
        rdiffae.to_ours(wrong, DIFFAE_PARAMS)
    partial = {**ema, "state_dict.ema_model.latent_net.layers.0.linear.weight": torch.zeros(2048, 512)}
    with pytest.raises(ValueError, match=r"lacks 'state_dict\.ema_model\.latent_net\.time_embed\.0\.weight'"):
        rdiffae.to_ours(partial, DIFFAE_PARAMS)  # part of a latent DDPM: the first missing key is named


# -- the presets have the authors' parameter counts ----------------------------------------------


def test_released_presets_have_the_reference_counts():
    """Counts measured on the authors' networks by benchmarks/reference_equivalence_pdae_diffae.py
    (ckczzj/PDAE 4f9c29a: model/unet.py UNet, ShiftUNet's trained branch, CELEBA64Encoder;
    phizaz/diffae templates celeba64d2c_autoenc and ffhq128_autoenc_130M: BeatGANsAutoencModel
    without / with only its ``encoder``; templates_latent celeba64d2c_autoenc_latent: its ``latent_net``)."""
    def build(cls, params, side):  # the adapter's own _build (on the CPU: it makes its noise schedule too)
        model = cls(**params)
        model._build((3, side, side))
        return model

    dpm = build(DDPM, DPM_PARAMS, 64)
    assert count_parameters(dpm.unet_) == 63_958_019
    pdae = PDAE(**PDAE_PARAMS)
    pdae.unet_ = dpm.unet_
    pdae._build_stage2((3, 64, 64))
    assert count_parameters(pdae.encoder_) == 1_487_104
    assert count_parameters(pdae.shift_) == 52_007_811
    for preset, side, unet, encoder in (("released-celeba64", 64, 71_518_723, 19_320_512),
                                        ("released-ffhq128", 128, 103_871_619, 24_673_536)):
        model = build(DiffAE, DiffAE.presets[preset], side)
        assert (count_parameters(model.unet_), count_parameters(model.encoder_)) == (unet, encoder), preset
    model._build_latent()  # templates_latent.py: celeba64d2c_autoenc_latent's MLPSkipNet (ffhq128's is the same)
    assert count_parameters(model.latent_net_) == 54_109_696



def test_a_saved_file_read_by_bench_released_checkpoint_converts(tmp_path):
    """The authors' nesting ({"ema_encoder": {...}, ...}, torch.save) read by bench.released.checkpoint.read_tensors
    (its "."-flattening) gives the keys these converters read."""
    from bench.released.checkpoint import read_tensors

    params = {**PDAE.presets["tiny"], "resample": "resblock"}
    shape = (3, 16, 16)
    flat = _random(rpdae.layout(params, shape), 9)
    nested: dict = {"optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-4}]},
                    "scaler": {"scale": 1.0}}
    for key, value in flat.items():
        top, rest = key.split(".", 1)
        nested.setdefault(top, {})[rest] = value
    nested["encoder"] = dict(nested["ema_encoder"])  # the non-EMA copies
    torch.save(nested, tmp_path / "checkpoint.pt")
    nets = rpdae.to_ours(read_tensors(tmp_path / "checkpoint.pt"), params, shape)
    assert _equal(rpdae.to_reference(nets, params, shape), flat)
