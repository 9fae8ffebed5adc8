"""InfoDiffusion's own AE / VAE / β-VAE / InfoVAE baselines (``architecture = "infodiffusion"``).

The reference numbers come from isjakewong/InfoDiffusion (main 75c7b31 and dev 759f79c give
the same counts): ``models.VAE(args, "cpu", shape)`` with ``encoder_channels`` and ``a_dim = 32``
as its ``data.get_dataset_config`` sets them; ``benchmarks/reference_counts.py`` prints ours.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench import reported
from bench.diffusion.unet import count_parameters
from bench.report import leaderboard
from methods.vae import AE, VAE, BetaVAE, InfoVAE, mmd_infovae

#: a small UNet for CPU tests (the shape of the reference's, at 8 channels and two levels; no dropout, so
#: that the global random stream the InfoVAE prior draws from is the same in the reference computation)
SMALL = dict(unet_channels=8, unet_channel_mult=[1, 2], unet_res_blocks=1, unet_norm_groups=8,
             unet_attention_resolutions=[8], batch_size=8, steps=3, log_every=1, dropout=0.0)


@pytest.mark.parametrize("shape, channels, attention, encoder, decoder", [
    ((1, 32, 32), 32, [8], 14_127_041, 14_125_921),   # Fashion-MNIST (dSprites, too)
    ((3, 32, 32), 64, [8], 56_347_553, 56_415_171),   # CIFAR-10
    ((3, 64, 64), 64, [16], 56_445_857, 56_719_299),  # CelebA
])
def test_parameter_counts_equal_the_reference_networks(shape, channels, attention, encoder, decoder):
    for cls in (AE, VAE):  # the heads fc_mu / fc_var exist for every baseline, as in the reference
        model = cls.from_preset("infodiffusion", unet_channels=channels, unet_attention_resolutions=attention)
        model._build(shape)
        assert (count_parameters(model.encoder_), count_parameters(model.decoder_)) == (encoder, decoder)


def test_the_presets_are_the_reference_baselines():
    vae, beta, info, ae = (c.from_preset("infodiffusion") for c in (VAE, BetaVAE, InfoVAE, AE))
    for m in (vae, beta, info, ae):
        assert (m.architecture, m.latent_dim, m.reconstruction, m.lr, m.weight_decay, m.grad_clip, m.lr_schedule,
                m.batch_size, m.steps) == ("infodiffusion", 32, "mse-mean", 1e-4, 1e-5, 1.0, "infodiffusion", 32, 93_750)
    assert vae.beta == 1.0 and info.alpha == 1.0 and info.lambda_ == 0.1 and ae.code_sampler == "prior"


def _batch(model, shape=(1, 16, 16), n=8, seed=0):
    model._build(shape)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    noise = torch.randn((n, model.latent_dim), generator=g)
    return x, noise


def test_vae_loss_is_the_reference_mean_squared_error_plus_weighted_kl():
    model = BetaVAE.from_preset("infodiffusion", **SMALL)
    x, noise = _batch(model)
    loss = model._loss(x, noise, torch.Generator())
    # independently: the encoder's features a, heads fc_mu / fc_var, decoder on mu + sigma * eps
    with torch.no_grad():
        a = model.encoder_.features(x)
        mu, logvar = model.encoder_.fc_mu(a), model.encoder_.fc_var(a)
        rec = model.decoder_(mu + torch.exp(0.5 * logvar) * noise)
        mse = (rec - (x * 2 - 1)).square().mean()  # models.py: (reconstruction - x).square().mean(), x in [-1, 1]
        kld = torch.mean(-0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp(), dim=1), dim=0)
    assert float(loss.detach()) == pytest.approx(float(mse + 4.0 * kld), rel=1e-5)


def test_infovae_is_mmd_only_with_weight_one_tenth_on_sampled_codes():
    model = InfoVAE.from_preset("infodiffusion", **SMALL)
    x, noise = _batch(model)
    torch.manual_seed(7)
    loss = model._loss(x, noise, torch.Generator())
    torch.manual_seed(7)  # the prior draws come from the global stream
    prior = torch.randn((x.shape[0], model.latent_dim))
    with torch.no_grad():
        a = model.encoder_.features(x)
        mu, logvar = model.encoder_.fc_mu(a), model.encoder_.fc_var(a)
        z = mu + torch.exp(0.5 * logvar) * noise  # main branch: decoder(a_q), compute_mmd(true, a_q)
        mse = (model.decoder_(z) - (x * 2 - 1)).square().mean()
        expected = mse + 0.1 * mmd_infovae(prior, z)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_ae_codes_are_the_features_and_its_samples_decode_standard_normal_codes(tiny_data):
    model = AE.from_preset("infodiffusion", **SMALL).fit(tiny_data, seed=0)
    x = tiny_data.images(np.arange(6))
    with torch.no_grad():
        a = model.encoder_.features(torch.from_numpy(x))
    np.testing.assert_allclose(model.encode(x), a.numpy(), rtol=1e-5, atol=1e-6)
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(model.sample(5, seed=3), model.decode(z))
    # decoded images: the [-1, 1] output mapped back to [0, 1]
    with torch.no_grad():
        raw = model.decoder_(torch.from_numpy(z))
    np.testing.assert_allclose(model.decode(z), ((raw + 1) / 2).clamp(0, 1).numpy(), atol=1e-6)


def test_the_reference_schedule_drives_the_learning_rate(tiny_data):
    logged = []
    model = VAE.from_preset("infodiffusion", **{**SMALL, "steps": 8, "lr": 1e-3})
    model._logger = lambda phase, step, values: logged.append(values["lr"])
    model.fit(tiny_data, seed=0)  # 16 images at batch 8: an epoch is 2 steps, 4 epochs
    late = 1 + np.cos(np.pi / 4)  # epoch 3: the cosine over 4 epochs, one epoch late
    assert logged == pytest.approx([1e-3, 1e-3, 2e-3, 2e-3, 2e-3, 2e-3, late * 1e-3, late * 1e-3])


def test_gradient_clipping_and_flips_change_training_only_when_asked(tiny_data):
    def weights(**kw):
        m = VAE.from_preset("infodiffusion", **{**SMALL, **kw}).fit(tiny_data, seed=0)
        return torch.cat([p.detach().flatten() for p in m.decoder_.parameters()])

    base = weights(grad_clip=0.0)
    assert torch.equal(base, weights(grad_clip=0.0))
    assert not torch.equal(base, weights(grad_clip=1e-3))
    assert not torch.equal(base, weights(grad_clip=0.0, hflip=True))


def test_adding_these_options_left_stored_models_valid():
    from bench.config import Cell, Profile
    from bench.stages import plan

    profile = Profile(name="p", methods=["ae", "vae"], datasets=["dsprites-procedural-32"], seeds=[0], preset="tiny")
    default, = [m for m in plan(profile).models if m.method == "ae"]
    # the options added for these baselines, at their defaults, are not part of the identity...
    assert {"architecture", "weight_decay", "code_sampler", "hflip"} <= set(default.omitted)
    assert "architecture" not in default.identity()["params"] and default.params["architecture"] == "conv"
    # ... and a model that uses one is another model
    cell = Cell("ae", "dsprites-procedural-32", 0, "infodiffusion", AE.check_params(AE.presets["infodiffusion"]), {})
    other = Profile(name="p", methods=["ae"], datasets=["dsprites-procedural-32"], seeds=[0], preset="infodiffusion")
    assert plan(other).models[0].identity()["params"]["architecture"] == "infodiffusion" == cell.params["architecture"]
    assert plan(other).models[0].id != default.id


def test_the_table_3_profile_plans_the_baselines_and_the_leaderboard_shows_their_published_values():
    from pathlib import Path

    from bench.config import load_config
    from bench.stages import plan

    profile = load_config(Path(__file__).resolve().parents[1] / "bench.toml").profile("infodiffusion-table3-fmnist")
    models = {m.method: m for m in plan(profile).models}
    assert {"ae", "vae", "beta-vae", "infovae", "diffae", "infodiffusion"} <= set(models)
    assert models["infovae"].params["architecture"] == "infodiffusion" and models["infovae"].params["hflip"]
    assert models["diffae"].params["attention_resolutions"] == [8]
    rows = []
    for method, value in (("ae", 0.80), ("infovae", None)):  # infovae's evaluation failed
        stage = models[method]
        rows.append({"dataset": "fashion-mnist-32", "method": method, "config_id": stage.config_id, "seed": 0,
                     "n_seeds_planned": 1, "role": "model", "metric": "latent_accuracy",
                     "value": np.nan if value is None else value, "status": "failed" if value is None else "ok",
                     "params": json.dumps(stage.params), "metric_params": json.dumps({"protocol": "infodiffusion"})})
    rows = pd.DataFrame(rows)
    board = reported.attach(leaderboard(rows), rows, reported.load()).set_index("method")
    assert board.loc["ae", "latent_accuracy_reported"] == 0.819
    assert board.loc["ae", "latent_accuracy_diff"] == pytest.approx(0.80 - 0.819)
    assert board.loc["infovae", "latent_accuracy_reported"] == 0.807
    assert np.isnan(board.loc["infovae", "latent_accuracy_mean"]) and np.isnan(board.loc["infovae", "latent_accuracy_diff"])
