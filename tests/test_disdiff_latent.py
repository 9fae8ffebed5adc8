"""Latent DisDiff (the paper's main setting): the reference's network sizes, the latent disentangling loss,
and the grid's shared VQ-f4 and latent-DPM components."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import tests.plugin_stages  # noqa: F401  (registers tiny-bars)
from bench.diffusion.encoders import DisDiffEncoder
from bench.diffusion.ldm_openai import OpenAIUNet
from bench.diffusion.ldm_shift import LDMShiftDecoder
from bench.stages import plan
from methods.disdiff import DisDiff, PartEmbedding, ldm_params
from methods.ldm import LDM
from methods.vqgan import VQF4
from tests.conftest import TinyBars

FAST = {"steps": 6, "batch_size": 8, "log_every": 3, "latent_steps": 4}


def _count(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_the_networks_have_the_parameter_counts_of_the_shipped_shapes3d_config():
    """ThomasMrY/DisDiff ``configs/latent-diffusion/shapes3d-vq-4-16-dis.yaml`` built with the reference code
    (``benchmarks/reference_counts.py``): frozen LDM UNet 29,422,467; shift decoder + repre_embed + part
    embedding 22,738,691; Encoder4 (d = 128, 6 × 32) 1,516,480; trained 24,255,171."""
    params = DisDiff.from_preset("paper").get_params()
    unet = OpenAIUNet(in_channels=3, out_channels=3, latent_size=16, model_channels=params["base_channels"],
                      channel_mult=params["channel_mult"], num_res_blocks=params["num_res_blocks"],
                      attention_resolutions=params["attention_resolutions"], num_heads=params["num_heads"])
    shift = LDMShiftDecoder(unet, params["unit_dim"], dropout=params["shift_dropout"], num_heads=params["shift_num_heads"])
    part = PartEmbedding(unet.arch["time_dim"])
    encoder = DisDiffEncoder(in_channels=3, image_size=64, out_dim=params["num_units"] * params["unit_dim"],
                             channels=params["enc_width"])
    assert _count(unet) == 29_422_467
    assert _count(shift, part) == 22_738_691
    assert _count(encoder) == 1_516_480
    assert _count(shift, part, encoder) == 24_255_171
    # the latent DPM component DisDiff asks for is exactly this network
    assert {k: ldm_params(params)[k] for k in ("base_channels", "channel_mult", "attention_resolutions")} == \
        {"base_channels": 64, "channel_mult": [1, 2, 4, 4], "attention_resolutions": [16, 8, 4]}


def test_the_attention_heads_are_laid_out_as_the_legacy_qkv_of_the_reference():
    """QKVAttentionLegacy: the 1×1 conv's 3·C outputs are heads × [q, k, v] × d. A conv whose weights make
    q = k = 0 for every head and v = x gives uniform attention: the output is the mean over positions."""
    from bench.diffusion.ldm_openai import AttentionBlock

    block = AttentionBlock(64, num_heads=8).eval()
    d = 8
    with torch.no_grad():
        block.norm.weight.fill_(1.0)
        block.norm.bias.zero_()
        w = torch.zeros(3 * 64, 64)
        for h in range(8):  # v rows of head h read channels h*d … h*d + d − 1
            for j in range(d):
                w[h * 3 * d + 2 * d + j, h * d + j] = 1.0
        block.qkv.weight.copy_(w[:, :, None])
        block.qkv.bias.zero_()
        block.proj_out.weight.copy_(torch.eye(64)[:, :, None])
        block.proj_out.bias.zero_()
    x = torch.randn(2, 64, 4, 4)
    normed = block.norm(x.reshape(2, 64, 16))
    expected = x + normed.mean(-1, keepdim=True).expand(-1, -1, 16).reshape(2, 64, 4, 4)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def data() -> TinyBars:
    return TinyBars()


@pytest.fixture(scope="module")
def ldm(data) -> LDM:
    vq = VQF4.from_preset("tiny", steps=4).fit(data, seed=0)
    params = {**LDM.presets["tiny"], **ldm_params(DisDiff.from_preset("tiny").get_params()), "steps": 6}
    return LDM(**params).fit(data, seed=0, components={"first_stage": vq})


def test_latent_disdiff_runs_on_the_latent_dpms_latents_and_scale(ldm, data):
    model = DisDiff.from_preset("tiny", **FAST).fit(data, seed=0, components={"ldm": ldm})
    vq = ldm.components_["first_stage"]
    assert model.diffusion_shape == tuple(vq.latent_shape) != tuple(data.image_shape)
    assert model.scale_factor_ == ldm.scale_factor_  # the reference reads the LDM checkpoint's scale_factor
    x = data.images(np.arange(5))
    assert model.encode(x).shape == (5, model.latent_dim)
    assert model.reconstruct(x).shape == (5, *data.image_shape)
    assert model.sample(3, seed=1).shape == (3, *data.image_shape)
    assert not model._image_sampler().clip_x0 and not model._ddim(clip=True).clip_x0  # latents are unbounded


def test_the_disentangling_loss_reencodes_decoded_images_and_weights_by_the_latents(ldm, data):
    """``dis_loss`` (``dis_loss_type = "Z"``): x̂_0 and x̂_0^c are decoded by the first stage *without*
    quantisation before the encoder reads them, w_b is the mean squared latent difference, and the
    gradient reaches the shift decoder through the frozen first stage without touching its weights."""
    model = DisDiff.from_preset("tiny", **FAST, dis_weight=1.0).fit(data, seed=0, components={"ldm": ldm})
    state = model.setup_training(data, seed=0)  # rebuilds the networks: hooks go on the new ones
    with torch.no_grad():  # G ≡ 0 at initialisation (w_b = 0): give the output conv weights
        torch.nn.init.normal_(model.shift_.shift_out[-1].weight, std=0.1)
    vq_before = {k: v.clone() for k, v in model.first_stage_.state_dict().items()}
    seen = []
    model.frozen_encoder_.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    quantised = []
    model.first_stage_.quantize.register_forward_hook(lambda *a: quantised.append(1))
    batch = state.draw(state)
    assert batch["img"].shape[1:] == tuple(data.image_shape) and batch["x0"].shape[1:] == model.diffusion_shape
    terms = model.loss_terms(batch)
    assert seen and all(tuple(s[1:]) == tuple(data.image_shape) for s in seen) and not quantised
    # w_b from the latents, recomputed here from the same frozen pass
    with torch.no_grad():
        from bench.diffusion.samplers import predict_x0, q_sample

        x_t = q_sample(model.schedule_, batch["x0"], batch["noise"], batch["t"])
        eps, h, skips, temb = model._frozen_pass(x_t, batch["t"])
        z = model.encoder_(batch["img"]).float()
        grads = model._unit_gradients(h, skips, temb, z, evaluation=False)
        chosen = grads[batch["unit"], torch.arange(len(batch["unit"]))]
        s = model.schedule_.gather("sqrt_one_minus_alphas_cumprod", batch["t"], x_t.ndim)
        w = (predict_x0(model.schedule_, x_t, eps, batch["t"])
             - predict_x0(model.schedule_, x_t, eps - s * chosen, batch["t"])).pow(2).flatten(1).mean(1)
    assert terms["dis"].shape == w.shape and torch.all(terms["dis"] >= 0)
    ratio = terms["dis"].detach() / w.clamp_min(1e-30)
    assert torch.all(w > 0) and torch.all(ratio > 0)  # dis = w_b · dis_weight · (CE + CE), both CEs > 0
    model.shift_.zero_grad()
    terms["dis"].mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shift_.parameters())
    assert all(p.grad is None for p in model.first_stage_.parameters())
    assert all(torch.equal(v, vq_before[k]) for k, v in model.first_stage_.state_dict().items())


def test_latent_disdiff_needs_the_ldm_component_and_pixel_space_the_ddpm():
    with pytest.raises(ValueError, match=r"components=\{'ldm': <fitted ldm>\}"):
        DisDiff.from_preset("tiny").fit(TinyBars(), seed=0, components={})
    assert DisDiff.components["ldm"].needed(DisDiff.from_preset("tiny").get_params())
    assert not DisDiff.components["dpm"].needed(DisDiff.from_preset("tiny").get_params())
    pixel = DisDiff.from_preset("paper-pixel").get_params()
    assert DisDiff.components["dpm"].needed(pixel) and not DisDiff.components["ldm"].needed(pixel)
    assert DisDiff.components["dpm"].preset_for("paper-pixel") == "paper"
    with pytest.raises(ValueError, match="space"):
        DisDiff(space="voxel")


def test_a_grid_shares_one_vq_between_encdiff_and_disdiff_and_one_latent_dpm_between_seeds(tmp_path):
    from bench.runner import run_profile
    from tests.test_stages import grid

    profile, out, _ = grid(tmp_path, methods=("encdiff", "disdiff"), extra="latent_steps = 4\n")
    p = plan(profile)
    vq = [c for c in p.components if c.method == "vq-f4"]
    ldms = [c for c in p.components if c.method == "ldm"]
    assert len(vq) == 1 and len(ldms) == 1 and ldms[0].components == {"first_stage": vq[0].id}
    disdiff = [m for m in p.models if m.method == "disdiff"]
    encdiff = [m for m in p.models if m.method == "encdiff"]
    assert len(disdiff) == 2 and {m.components["ldm"] for m in disdiff} == {ldms[0].id}
    assert {m.components["first_stage"] for m in encdiff} == {vq[0].id}
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.failed == []
    rows = pd.read_csv(out / "results.csv")
    models = rows[(rows["role"] == "model") & (rows["method"] == "disdiff")]
    assert {json.loads(c)["ldm"] for c in models["components"]} == {ldms[0].id}
    scores = models[models["metric"].isin(["factorvae", "dci_disentanglement"])]
    assert len(scores) == 4 and (scores["status"] == "ok").all() and np.isfinite(scores["value"]).all()


def test_the_part_rotation_is_the_references_expm_of_w_transposed_minus_w():
    """The reference's ``torch_expm(A)`` returns expm(−A) (``benchmarks/disdiff_latent_equivalence.py``: 1.5e-14
    in fp64 against the reference code), so its rotation for W = [[0, θ], [0, 0]] is expm([[0, −θ], [θ, 0]]):
    first row (cos θ, −sin θ). Loading the authors' ``part_latents`` by renaming relies on this."""
    theta = 0.7
    part = PartEmbedding(time_dim=4)
    with torch.no_grad():
        part.latents.copy_(torch.tensor([[0.0, theta], [0.0, 0.0]]))
        part.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
        part.proj.bias.zero_()
        rows = part(2)[:, :2]
    expected = torch.tensor([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], dtype=torch.float32)
    torch.testing.assert_close(rows, expected, atol=1e-6, rtol=1e-6)
