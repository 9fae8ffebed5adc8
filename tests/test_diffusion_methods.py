"""DDPM, DiffAE and InfoDiffusion adapters: the objective, the special case, sampling modes, I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.adapter import DivergedError
from methods.ddpm import DDPM
from methods.diffae import DiffAE
from methods.infodiffusion import InfoDiffusion
from methods.priors import GaussianPrior
from methods.vae import mmd_infovae

FAST = {"steps": 4, "batch_size": 8, "log_every": 1, "latent_steps": 4, "ddim_steps": 4, "latent_ddim_steps": 4}


def _shared_diffae_params() -> dict:
    """DiffAE's tiny hyperparameters that InfoDiffusion shares (``pretrained``, for DiffAE's released files, is DiffAE's own)."""
    return {k: v for k, v in DiffAE.from_preset("tiny", **FAST).get_params().items() if k in InfoDiffusion.defaults}


def _fit(cls, data, seed=0, **params):
    return cls(**params).fit(data, seed=seed)


def _net_states(adapter) -> dict[str, dict[str, torch.Tensor]]:
    return {name: adapter._eval_net(name).state_dict() for name in ("unet", "encoder")}


def test_infodiffusion_with_zeta_one_lambda_zero_is_diffae(tiny_data):
    """Both regulariser weights (1 − ζ) and (λ + ζ − 1) vanish: DiffAE's loss, draws and updates, step by step."""
    shared = _shared_diffae_params()
    assert shared["dropout"] > 0  # dropout masks must match too
    diffae = _fit(DiffAE, tiny_data, **shared)
    info = _fit(InfoDiffusion, tiny_data, **shared, zeta=1.0, lambda_=0.0, sample_z="latent")
    assert len(diffae.history_) == shared["steps"] and info.history_ == diffae.history_
    assert info.latent_history_ == diffae.latent_history_
    for name, state in _net_states(diffae).items():
        for key, value in state.items():
            torch.testing.assert_close(_net_states(info)[name][key], value, rtol=0, atol=0)
    x = tiny_data.images(np.arange(6))
    np.testing.assert_array_equal(info.encode(x), diffae.encode(x))
    np.testing.assert_array_equal(info.sample(3, seed=4), diffae.sample(3, seed=4))
    # a non-zero prior weight changes the trajectory (the comparison above can fail)
    regularised = _fit(InfoDiffusion, tiny_data, **shared, zeta=1.0, lambda_=0.5, sample_z="latent")
    assert regularised.history_ != diffae.history_


def test_weights_follow_the_paper_parametrisation():
    assert InfoDiffusion(zeta=1.0, lambda_=0.1).weights() == (0.0, pytest.approx(0.1))
    assert InfoDiffusion(zeta=0.25, lambda_=2.0).weights() == (0.75, 1.25)
    assert not InfoDiffusion(zeta=1.0, lambda_=0.1).stochastic_encoder()
    assert InfoDiffusion(zeta=0.5, lambda_=0.5).stochastic_encoder()
    assert InfoDiffusion(zeta=1.0, lambda_=0.5, divergence="kl").stochastic_encoder()
    with pytest.raises(ValueError, match=r"\(lambda_ \+ zeta - 1\) = -1 .* DiffAE is zeta=1, lambda_=0"):
        InfoDiffusion(zeta=0.0, lambda_=0.0)
    with pytest.raises(ValueError, match=r"\(1 - zeta\) = -0.5"):
        InfoDiffusion(zeta=1.5, lambda_=0.0)
    with pytest.raises(ValueError, match="divergence must be one of"):
        InfoDiffusion(divergence="wasserstein")
    with pytest.raises(ValueError, match="two_phase_t must be in"):
        InfoDiffusion(two_phase_t=1000)


def _batch_and_terms(adapter, data):
    state = adapter.setup_training(data, seed=0)
    for net in adapter._nets().values():
        net.eval()  # no dropout, so the terms can be recomputed by hand
    batch = adapter._draw(state)
    with torch.no_grad():
        return batch, adapter.loss_terms(batch)


def test_kl_and_mmd_prior_terms(tiny_data):
    adapter = InfoDiffusion.from_preset("tiny", zeta=0.5, lambda_=1.0)
    batch, terms = _batch_and_terms(adapter, tiny_data)
    assert set(terms) == {"denoise", "kl", "mmd"} and {"eps_z", "prior_z"} <= set(batch)
    with torch.no_grad():
        mu = adapter.encoder_(batch["x0"])
        logvar = adapter.logvar_head_(mu)
        z = mu + (0.5 * logvar).exp() * batch["eps_z"]
        torch.testing.assert_close(terms["kl"], GaussianPrior.kl_from_diagonal(mu, logvar).mean())
        torch.testing.assert_close(terms["mmd"], mmd_infovae(z, batch["prior_z"]))
        loss = adapter._loss(batch)
    torch.testing.assert_close(loss, terms["denoise"] + 0.5 * terms["kl"] + 0.5 * terms["mmd"])
    assert float(terms["kl"]) > 0 and float(terms["mmd"]) > 0


def test_kl_divergence_option_and_mixture_prior(tiny_data):
    adapter = InfoDiffusion.from_preset("tiny", zeta=1.0, lambda_=0.5, divergence="kl", prior="mog", mog_components=4)
    batch, terms = _batch_and_terms(adapter, tiny_data)
    assert set(terms) == {"denoise", "kl"} and "prior_z" not in batch
    with torch.no_grad():
        mu = adapter.encoder_(batch["x0"])
        logvar = adapter.logvar_head_(mu)
        z = mu + (0.5 * logvar).exp() * batch["eps_z"]
        log_q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
        torch.testing.assert_close(terms["kl"], (log_q - adapter.prior_.log_prob(z)).mean(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(adapter._loss(batch), terms["denoise"] + 0.5 * terms["kl"])


def test_mmd_only_setting_keeps_the_encoder_deterministic(tiny_data):
    adapter = InfoDiffusion.from_preset("tiny")  # the paper's zeta = 1, lambda_ = 0.1
    batch, terms = _batch_and_terms(adapter, tiny_data)
    assert set(terms) == {"denoise", "mmd"} and "eps_z" not in batch
    prior_z = adapter._prior_draw(4096, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert abs(float(prior_z.mean())) < 0.05 and abs(float(prior_z.std()) - 1) < 0.05


def _spy(net, calls: list, name: str):
    """Record (name, timestep, code) of every forward call of ``net``."""
    def hook(module, args):
        calls.append((name, int(args[1][0]), args[2].clone() if len(args) > 2 else None))
    return net.register_forward_pre_hook(hook)


def test_two_phase_sampling_switches_from_the_vanilla_to_the_conditional_model(tiny_data):
    adapter = InfoDiffusion.from_preset("tiny", **{**FAST, "ddim_steps": 10}, two_phase_t=25).fit(tiny_data, seed=0)
    assert isinstance(adapter.vanilla_, DDPM) and adapter.vanilla_.history_
    calls: list = []
    handles = [_spy(adapter.vanilla_._eval_net("unet"), calls, "vanilla"),
               _spy(adapter._eval_net("unet"), calls, "conditional")]
    adapter.sample(2, seed=0)
    for h in handles:
        h.remove()
    order = [(name, t) for name, t, _ in calls]
    assert order == [("vanilla", t) for t in (45, 40, 35, 30, 25)] + [("conditional", t) for t in (20, 15, 10, 5, 0)]
    assert all(z is not None and z.shape == (2, adapter.latent_dim) for name, _, z in calls if name == "conditional")
    # without two_phase_t the conditional model runs the whole chain
    plain = InfoDiffusion.from_preset("tiny", **{**FAST, "ddim_steps": 10}).fit(tiny_data, seed=0)
    calls.clear()
    handle = _spy(plain._eval_net("unet"), calls, "conditional")
    plain.sample(2, seed=0)
    handle.remove()
    assert [name for name, _, _ in calls] == ["conditional"] * 10 and plain.vanilla_ is None


@pytest.mark.parametrize("cls", [DiffAE, InfoDiffusion])
def test_reconstruct_inverts_and_decodes_with_the_images_own_code(cls, tiny_data):
    adapter = cls.from_preset("tiny", **FAST).fit(tiny_data, seed=0)
    x = tiny_data.images(np.arange(3))
    codes = torch.from_numpy(adapter.encode(x))
    calls: list = []
    handle = _spy(adapter._eval_net("unet"), calls, "conditional")
    out = adapter.reconstruct(x)
    handle.remove()
    assert out.shape == x.shape and len(calls) == 2 * adapter.ddim_steps  # inversion, then decoding
    ascending = [t for _, t, _ in calls[: adapter.ddim_steps]]
    assert ascending == sorted(ascending)
    for _, _, z in calls:
        torch.testing.assert_close(z, codes)


def test_decode_renders_every_code_from_the_same_noise(tiny_data):
    adapter = DiffAE.from_preset("tiny", **FAST).fit(tiny_data, seed=0)
    z = adapter.encode(tiny_data.images([3, 3, 5]))
    images = adapter.decode(z)
    np.testing.assert_array_equal(images[0], images[1])
    with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
        adapter.decode(np.zeros((2, 3), np.float32))


def test_save_load_round_trip_with_latent_ddpm_and_vanilla_model(tiny_data, tmp_path):
    adapter = InfoDiffusion.from_preset("tiny", **FAST, sample_z="latent", two_phase_t=20).fit(tiny_data, seed=1)
    adapter.save(tmp_path / "model.pt")
    loaded = InfoDiffusion.load(tmp_path / "model.pt")
    x = tiny_data.images(np.arange(4))
    np.testing.assert_array_equal(loaded.sample(3, seed=2), adapter.sample(3, seed=2))
    np.testing.assert_array_equal(loaded.reconstruct(x), adapter.reconstruct(x))
    np.testing.assert_array_equal(loaded.decode(loaded.encode(x)), adapter.decode(adapter.encode(x)))
    assert loaded.latent_history_ == adapter.latent_history_ and loaded.vanilla_.history_ == adapter.vanilla_.history_


def test_reference_layout_and_encoder_train_and_encode(tiny_data):
    """InfoDiffusion's reference blocks (four convs, z by scale and shift) and its UNet-map encoder."""
    adapter = InfoDiffusion.from_preset("tiny", **FAST, cond_layout="separate", encoder="unet_map").fit(tiny_data, seed=0)
    x = tiny_data.images(np.arange(4))
    assert adapter.encode(x).shape == (4, adapter.latent_dim)
    assert adapter.sample(2, seed=0).shape == (2, 1, 16, 16)


def test_ddpm_codes_are_the_inverted_noise(tiny_data):
    adapter = DDPM.from_preset("tiny", **{k: FAST[k] for k in ("steps", "batch_size", "log_every", "ddim_steps")})
    adapter.fit(tiny_data, seed=0)
    x = tiny_data.images(np.arange(3))
    codes = adapter.encode(x)
    assert adapter.code_dim == 256 and codes.shape == (3, 256)
    with torch.no_grad():
        x_T = adapter._invert(x)
    # encode runs under native_convs; the direct call may pick another conv kernel, so compare to float tolerance
    np.testing.assert_allclose(codes, x_T.flatten(1).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="deterministic"):
        adapter.encode(x, stochastic=True)


def test_data_pool_and_diverged_training(tiny_data):
    adapter = DDPM.from_preset("tiny", data_pool=8)
    state = adapter.setup_training(tiny_data, seed=0)
    assert state.pool.shape == (8, 1, 16, 16) and state.pool.dtype == torch.float32
    assert len({tuple(img.flatten().tolist()) for img in state.pool}) == 8  # distinct images
    with pytest.raises(DivergedError, match="lower the learning rate"):
        DDPM.from_preset("tiny", lr=1e12, steps=6, log_every=3, grad_clip=0.0).fit(tiny_data, seed=0)


def test_infodiffusion_lr_schedule_matches_the_reference_schedulers():
    """GradualWarmupScheduler(2, 1) + CosineAnnealingLR(T_max=E) of InfoDiffusion's run.py, stepped per epoch."""
    import math

    from methods.lr_schedules import infodiffusion_lr_factor

    E, per_epoch = 50, 10
    assert [infodiffusion_lr_factor(s, per_epoch, E) for s in (0, 9)] == [1.0, 1.0]  # epoch 0: the base rate
    assert [infodiffusion_lr_factor(s, per_epoch, E) for s in (10, 19, 20)] == [2.0, 2.0, 2.0]  # epoch 1, 2
    assert infodiffusion_lr_factor(30, per_epoch, E) == pytest.approx(1 + math.cos(math.pi / E))  # epoch 3
    assert infodiffusion_lr_factor(270, per_epoch, E) == pytest.approx(1.0)  # epoch 27: half the doubled rate
    # the same numbers from torch's own schedulers driven as run.py drives them (chainable cosine form)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=E, eta_min=0)
    lrs = [1.0, 2.0]
    opt.param_groups[0]["lr"] = 2.0  # what the warm-up sets for epoch 1 and hands to the cosine
    cosine.base_lrs = [2.0]
    for _ in range(2, 12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert lrs == pytest.approx([infodiffusion_lr_factor(e * per_epoch, per_epoch, E) for e in range(12)])
    # and the training loop uses it: epoch = one pass over the data
    from tests.conftest import TinyBars

    data = TinyBars()
    model = DDPM.from_preset("tiny", lr_schedule="infodiffusion", lr=1e-3, batch_size=len(data) // 2, steps=6)
    state = model.setup_training(data, seed=0)
    seen = []
    for _ in range(6):
        seen.append(state.optimizer.param_groups[0]["lr"])
        model.train_step(state)
    assert seen == pytest.approx([1e-3, 1e-3, 2e-3, 2e-3, 2e-3, 2e-3])
    with pytest.raises(ValueError, match="warmup_steps=5 applies to lr_schedule='constant' only"):
        DDPM.from_preset("tiny", lr_schedule="infodiffusion", warmup_steps=5)


def test_diffae_encoder_has_the_reference_blocks_and_parameter_count():
    """phizaz/diffae's CelebA-64 encoder (BeatGANsEncoderConfig: ch 64, mult (1,2,4,8,8), attention 16, z 512).

    Built from the reference code it has 19,320,512 parameters; ours has the same blocks (one
    conv each, no dropout) and lacks only the GroupNorm of the four resampling residual blocks
    (2 · (64 + 128 + 256 + 512) = 1,920), where it downsamples with a stride-2 conv.
    """
    from bench.diffusion.unet import HalfUNetEncoder

    encoder = HalfUNetEncoder(in_channels=3, image_size=64, out_dim=512)
    assert sum(p.numel() for p in encoder.parameters()) == 19_320_512 - 1_920
    assert not any(isinstance(m, torch.nn.Dropout) for m in encoder.modules())


def test_hflip_flips_about_half_of_the_training_images():
    from types import SimpleNamespace

    pool = torch.rand((64, 1, 8, 8), generator=torch.Generator().manual_seed(1))  # no image is its own mirror
    state = SimpleNamespace(generator=torch.Generator().manual_seed(0), device=torch.device("cpu"), pool=pool)
    plain = DDPM.from_preset("tiny", batch_size=256)
    flipped = DDPM.from_preset("tiny", batch_size=256, hflip=True)
    plain.device_ = flipped.device_ = torch.device("cpu")
    a = plain._draw(state)["x0"]
    state.generator.manual_seed(0)
    b = flipped._draw(state)["x0"]
    same = (a == b).flatten(1).all(1)
    mirrored = (a.flip(-1) == b).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0.3 < float((~same).float().mean()) < 0.7


def test_named_sampling_protocols_for_fid():
    from bench.diffusion.protocols import parse_sampling_protocol
    from tests.conftest import TinyBars

    assert parse_sampling_protocol("model") is None
    assert parse_sampling_protocol("ancestral-1000") == ("ddpm", 1000)
    assert parse_sampling_protocol("ddim-20") == ("ddim", 20)
    with pytest.raises(ValueError, match="unknown sampling protocol 'ddim'"):
        parse_sampling_protocol("ddim")
    data = TinyBars()
    model = DDPM.from_preset("tiny", steps=4, log_every=2).fit(data, seed=0)
    with model.using_sampler("ancestral-50"):
        assert (model.sampler, model.ddim_steps) == ("ddpm", 50)
        ancestral = model.sample(2, seed=1)
    assert (model.sampler, model.ddim_steps) == ("ddim", 5)  # restored
    reference = DDPM(**{**model.get_params(), "sampler": "ddpm", "ddim_steps": 50})
    reference.__dict__.update({k: v for k, v in model.__dict__.items() if k != "_params"})
    np.testing.assert_array_equal(ancestral, reference.sample(2, seed=1))
    from bench.evaluation import protocol_sampler  # what the runner hands to fid for metric_params.fid.sampler

    np.testing.assert_array_equal(protocol_sampler(model, "ancestral-50")(2, seed=1), ancestral)
    with pytest.raises(ValueError, match="more than the model's timesteps=50"):
        with model.using_sampler("ancestral-1000"):
            pass


def test_fid_sampler_is_checked_when_bench_toml_is_read(tmp_path):
    from bench.config import ConfigError, load_config

    path = tmp_path / "bench.toml"
    path.write_text('[profiles.p]\nmethods = ["ddpm"]\ndatasets = ["tiny-bars"]\nmetrics = ["fid"]\nseeds = [0]\n'
                    '[profiles.p.metric_params.fid]\nsampler = "ancestral"\n')
    import tests.plugin_stages  # noqa: F401  (registers tiny-bars)

    with pytest.raises(ConfigError, match="fid.sampler: .*'ancestral': unknown sampling protocol 'ancestral'; expected 'model', 'ancestral-N'"):
        load_config(path).profile("p")
