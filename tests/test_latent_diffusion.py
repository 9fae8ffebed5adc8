"""Latent diffusion (VQ-f4 first stage, LPIPS, cross-attention UNet) and EncDiff on top of it.

Reference counts: SelenaGeRuiqi/EncDiff at 596a29d, its ``ldm/modules/diffusionmodules/model.py``
``Encoder``/``Decoder`` and ``openaimodel_enc.py`` ``UNetModel``/``Encoder4`` built with the shipped
``shapes3d`` configs (third-party imports stubbed; ``benchmarks/reference_counts.py`` style).
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from bench.diffusion.first_stage import VQAutoencoder, VectorQuantizer
from bench.diffusion.ldm_unet import CrossAttentionUNet
from bench.diffusion.schedules import make_schedule
from bench.metrics import lpips as lpips_mod
from methods.encdiff import EncDiff, EncDiffEncoder
from methods.vqgan import VQF4

count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
FAST = {"steps": 6, "batch_size": 8, "log_every": 3}


def test_ldm_linear_schedule_is_sqrt_linear_between_ldms_endpoints():
    betas = make_schedule("ldm-linear", 1000).betas.numpy()
    assert betas[0] == pytest.approx(0.0015) and betas[-1] == pytest.approx(0.0155)
    np.testing.assert_allclose(np.sqrt(betas), np.linspace(np.sqrt(0.0015), np.sqrt(0.0155), 1000))


def test_networks_have_the_reference_parameter_counts():
    vq = VQAutoencoder()  # configs/autoencoder/shapes3d_vq_4_16.yaml
    assert (count(vq.encoder), count(vq.decoder), count(vq.quantize)) == (1_403_363, 2_068_547, 2048 * 3)
    assert count(CrossAttentionUNet(in_channels=3, out_channels=3)) == 37_469_635
    enc = EncDiffEncoder(in_channels=3, image_size=64, n_units=20, context_dim=16, channels=128, mode="scalar")
    assert (count(enc), count(enc.mlps)) == (1_374_292, 210_240)
    h = vq.encode_prequant(torch.zeros(1, 3, 64, 64))
    assert h.shape == (1, 3, 16, 16)  # f4: 64x64x3 -> 16x16x3


def test_vector_quantizer_uses_tamings_legacy_weights_and_straight_through():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, beta=0.25)
    z = torch.randn(1, 2, 2, 2, requires_grad=True)
    zq, loss, idx = vq(z)
    codes = vq.embedding.weight[idx].permute(0, 3, 1, 2)
    torch.testing.assert_close(zq, codes)  # forward: the nearest entries
    diff = (codes - z).pow(2).mean()
    torch.testing.assert_close(loss, 1.25 * diff)
    loss.backward(retain_graph=True)
    # commitment (encoder side) at weight 1: d/dz mean((sg[zq] - z)^2)
    torch.testing.assert_close(z.grad, 2 * (z - codes).detach() / z.numel())
    # codebook side at weight beta = 0.25
    used = idx.flatten()
    grad = vq.embedding.weight.grad[used[0]]
    expected = sum(0.25 * 2 * (codes - z).detach().permute(0, 2, 3, 1).reshape(-1, 2)[i] / z.numel()
                   for i in range(4) if used[i] == used[0])
    torch.testing.assert_close(grad, expected)
    z.grad = None
    zq.sum().backward()  # straight-through: d zq / d z = identity
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_tokens_reach_the_unet_only_through_cross_attention():
    torch.manual_seed(0)
    net = CrossAttentionUNet(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), attention_ds=(1, 2),
                             num_heads=4, context_dim=8, n_tokens=5)
    for m in net.modules():  # wake the zero-initialised output layers up
        if isinstance(m, torch.nn.Conv2d) and not m.weight.abs().sum():
            torch.nn.init.normal_(m.weight, std=0.05)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    a, b = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    assert not torch.allclose(net(x, t, a), net(x, t, b))
    for name, p in net.named_parameters():
        if "attn2.to_k" in name or "attn2.to_v" in name:
            p.data.zero_()
    torch.testing.assert_close(net(x, t, a), net(x, t, b))


def _fake_vgg_and_linear(tmp_path):
    """Files in the official formats: torchvision's vgg16 state dict and LPIPS v0.1's vgg.pth (random values)."""
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in lpips_mod.vgg16_features().state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(1)  # torchvision's file has the classifier too; it is ignored
    vgg_path = tmp_path / lpips_mod.VGG_FILENAME
    torch.save(vgg, vgg_path)
    linear = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(lpips_mod.CHANNELS)}
    lin_path = tmp_path / "vgg.pth"
    torch.save(linear, lin_path)
    wheel = tmp_path / "lpips-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(lin_path, lpips_mod.LINEAR_MEMBER)
    return vgg_path, lin_path, wheel


def test_lpips_loads_the_official_files_and_measures_distance(tmp_path):
    vgg_path, lin_path, wheel = _fake_vgg_and_linear(tmp_path)
    for linear in (lin_path, wheel):  # the .pth, or read out of the wheel without installing it
        net = lpips_mod.load_lpips(vgg_path, linear)
        x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
        torch.testing.assert_close(net(x, x), torch.zeros(2))
        assert (net(x, y) > 0).all()


def test_without_weights_lpips_is_skipped_and_the_first_stage_records_perceptual_weight_zero(tmp_path, monkeypatch,
                                                                                               tiny_data):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.delenv("BENCH_VGG16_WEIGHTS", raising=False)
    assert lpips_mod.lpips_available() is not None
    params = VQF4.check_params({"perceptual_weight": 1.0})
    assert params["perceptual_weight"] == 0.0
    from bench.evaluation import evaluate

    model = VQF4.from_preset("tiny", steps=2, log_every=1).fit(tiny_data, seed=0)
    rows = evaluate("lpips", {}, model, tiny_data, 0, {"model_id": "m"})
    assert [r["status"] for r in rows] == ["skipped"] and "LPIPS" in rows[0]["reason"]
    # ... and with the weights in place, the weight stays
    vgg_path, lin_path, _ = _fake_vgg_and_linear(tmp_path)
    monkeypatch.setenv("BENCH_VGG16_WEIGHTS", str(vgg_path))
    monkeypatch.setenv("BENCH_LPIPS_LINEAR", str(lin_path))
    assert VQF4.check_params({"perceptual_weight": 1.0})["perceptual_weight"] == 1.0


def test_first_stage_records_its_held_out_reconstruction_quality(tiny_data):
    vq = VQF4.from_preset("tiny", steps=20).fit(tiny_data, seed=0)
    assert set(vq.fit_metrics_) == {"first_stage_mse", "first_stage_psnr", "first_stage_ssim"}
    assert "sample" not in vq.capabilities and vq.code_dim == 3 * 8 * 8
    x = tiny_data.images(np.arange(4))
    np.testing.assert_allclose(vq.decode(vq.encode(x)), vq.reconstruct(x), atol=1e-6)


@pytest.fixture(scope="module")
def first_stage():
    from conftest import TinyBars

    return VQF4.from_preset("tiny", steps=20).fit(TinyBars(), seed=0)


def test_encdiff_needs_its_first_stage(first_stage, tiny_data):
    model = EncDiff.from_preset("tiny", **FAST)
    with pytest.raises(ValueError, match="first-stage autoencoder"):
        model.fit(tiny_data, seed=0)
    model.fit(tiny_data, seed=0, components={"first_stage": first_stage})
    assert model._first_stage() is first_stage and model.diffusion_shape == first_stage.latent_shape


def test_encdiff_scale_by_std_reads_a_random_batch_not_the_first_items(first_stage, tiny_data, monkeypatch):
    """Ordered datasets (Shapes3D, MPI3D) start with runs of near-identical images: the scale
    must come from a random batch (the reference's shuffled loader), i.e. near 1/std of all
    latents, not from the first items in dataset order (here: one blank scene, std 0)."""

    class Ordered:  # the first half is one blank scene, the second varied images
        image_shape = tiny_data.image_shape

        def __len__(self):
            return 256

        def images(self, idx):
            idx = np.asarray(idx)
            noise = np.stack([np.random.default_rng(i).random(self.image_shape, dtype=np.float32) for i in idx])
            return np.where((idx < 128)[:, None, None, None], np.float32(0.5), noise)

    c, h, _ = first_stage.latent_shape
    f = tiny_data.image_shape[1] // h

    def latents(x):  # a first stage whose latents are the images' local means: a blank scene's are constant
        return torch.nn.functional.avg_pool2d(x.float(), f).mean(1, keepdim=True).expand(-1, c, -1, -1)

    monkeypatch.setattr(first_stage, "latents", latents)
    data = Ordered()
    model = EncDiff.from_preset("tiny", **{**FAST, "steps": 1, "batch_size": 64, "data_pool": 0})
    model.fit(data, seed=0, components={"first_stage": first_stage})
    everything = latents(torch.from_numpy(data.images(np.arange(256))))
    assert float(latents(torch.from_numpy(data.images(np.arange(64)))).std()) == 0  # the trap: pool[:B] is blank
    assert model.scale_factor_ == pytest.approx(float(1 / everything.flatten().std()), rel=0.15)


def test_encdiff_variants(first_stage, tiny_data):
    x = tiny_data.images(np.arange(5))
    vector = EncDiff.from_preset("tiny", token_mode="vector", **FAST).fit(
        tiny_data, seed=0, components={"first_stage": first_stage})
    assert vector.latent_dim == 32  # n_units x context_dim, from latent_dim = 0
    assert "latent_units" in vector.capabilities and vector.latent_unit_dim == 8 and vector.encode(x).shape == (5, 32)
    from bench.evaluation import unit_encoder

    reduced = unit_encoder(vector.encode, vector, tiny_data, seed=0)(x)  # the paper's per-unit PCA
    assert reduced.shape == (5, vector.n_units)  # one column per token
    pixel = EncDiff.from_preset("tiny", space="pixel", **FAST).fit(tiny_data, seed=0)
    assert pixel.diffusion_shape == tiny_data.image_shape and pixel.sample(2).shape == (2, *tiny_data.image_shape)
    with pytest.raises(ValueError, match="latent_dim .* must be 32"):
        EncDiff.from_preset("tiny", token_mode="vector", latent_dim=4)


def test_a_grid_trains_one_first_stage_for_every_latent_encdiff_and_none_for_pixel_space():
    from bench.config import Profile
    from bench.stages import plan

    profile = Profile(name="p", methods=["encdiff"], datasets=["dsprites-procedural-32"], seeds=[0, 1], preset="tiny",
                      sweep={"encdiff": {"space": ["latent", "pixel"]}}, metrics=["factorvae"])
    stages = plan(profile)
    vq = [m for m in stages.components if m.method == "vq-f4"]
    cells = [m for m in stages.models if m.method == "encdiff"]
    assert len(vq) == 1 and len(cells) == 4
    assert {tuple(m.components.values()) for m in cells if m.params["space"] == "latent"} == {(vq[0].id,)}
    assert all(not m.components for m in cells if m.params["space"] == "pixel")


def test_first_stage_round_trip_beats_a_tenth_of_the_data_variance(tiny_data):
    """Bound: predicting every pixel by its mean over the data has MSE = the per-pixel variance
    (about 0.09 on TinyBars); a working autoencoder must get below a tenth of that on its training images."""
    vq = VQF4.from_preset("tiny", steps=250, holdout=0).fit(tiny_data, seed=0)
    x = tiny_data.images(np.arange(len(tiny_data)))
    variance = float(x.var(axis=0).mean())
    assert float(((vq.reconstruct(x) - x) ** 2).mean()) < 0.1 * variance


def test_attention_maps_are_per_token_weights_that_sum_to_one(first_stage, tiny_data):
    model = EncDiff.from_preset("tiny", attention_ds=[1, 2], **FAST).fit(tiny_data, seed=0,
                                                                          components={"first_stage": first_stage})
    x = tiny_data.images(np.arange(3))
    maps = model.attention_maps(x)
    side = model.diffusion_shape[1]
    assert maps.shape == (3, model.n_units, side, side)
    np.testing.assert_allclose(maps.sum(axis=1), 1.0, rtol=1e-5)  # at every pixel, over the tokens
    adagn = EncDiff.from_preset("tiny", conditioning="adagn")
    with pytest.raises(ValueError, match="no cross-attention maps"):
        adagn.attention_maps(x)


def test_encdiff_trains_and_samples_like_latent_diffusion(first_stage, tiny_data):
    """EncDiff's reference is LDM's LatentDiffusion: LambdaLinearScheduler's warm-up from 1e-6 of the rate
    (f_start in the shipped configs), LitEma's decay warm-up min(d, (1 + n)/(10 + n)) with n counted from 1, DDIM on LDM's
    timesteps τ_i = i·T/S + 1, and fp32 (no autocast) like every reference."""
    model = EncDiff.from_preset("tiny", **{**FAST, "warmup_steps": 100, "ema_decay": 0.999})
    model.components_ = {"first_stage": first_stage}
    state = model.setup_training(tiny_data, seed=0)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(model.lr * 1e-6)
    state.scheduler.step()
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(model.lr * (1e-6 + (1 - 1e-6) / 100))
    ema, _ = state.emas[0]
    assert ema.current_decay() == pytest.approx(2 / 11)  # LitEma counts the update first: min(0.999, (1 + 1)/(10 + 1))
    assert model.amp_bf16 is False
    for steps in (25, 20):  # make_ddim_timesteps: range(0, T, T // S) + 1 (T = 50: 25 steps for S = 20 too)
        taus = np.asarray(list(range(0, model.timesteps, model.timesteps // steps))) + 1
        assert model._ddim(steps).timesteps.tolist() == taus[::-1].tolist() and len(taus) == 25
