"""The shared diffusion core: schedules, samplers (DDPM, DDIM, inversion), UNet, EMA, latent MLP.

The sampler tests use an *exact* denoiser: for Gaussian data x_0 | z ~ N(m(z), s² I) the
optimal ε-predictor has a closed form, E[ε | x_t] = √(1−ᾱ_t)(x_t − √ᾱ_t m)/(ᾱ_t s² + 1 − ᾱ_t),
so any error left after inversion and sampling is the samplers' own.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.diffusion.ema import EMA
from bench.diffusion.latent_mlp import LatentMLP
from bench.diffusion.samplers import (
    DDIMSampler, DDPMSampler, ddim_invert, epsilon_loss, predict_x0, q_sample, sample_loop, switch_denoiser,
)
from bench.diffusion.schedules import NoiseSchedule, cosine_alpha_bar, make_schedule
from bench.diffusion.unet import HalfUNetEncoder, UNet, UNetMapEncoder, count_parameters


# -- schedules -----------------------------------------------------------------------------
def test_linear_schedules_match_their_definitions():
    np.testing.assert_allclose(make_schedule("linear", 1000).betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
    np.testing.assert_allclose(make_schedule("linear-infodiffusion", 1000).betas.numpy(), np.linspace(1e-5, 1e-2, 1000))
    # another T rescales the betas by 1000 / T (improved-diffusion / DiffAE)
    np.testing.assert_allclose(make_schedule("linear", 100).betas.numpy(), np.linspace(1e-3, 0.2, 100), rtol=1e-12)
    sqrt_linear = np.linspace(math.sqrt(8.5e-4), math.sqrt(1.2e-2), 1000) ** 2
    np.testing.assert_allclose(make_schedule("scaled-linear", 1000).betas.numpy(), sqrt_linear, rtol=1e-12)
    np.testing.assert_allclose(make_schedule("const-0.008", 1000).betas.numpy(), np.full(1000, 0.008))


def test_cosine_schedule_matches_the_closed_form_alpha_bar():
    s = make_schedule("cosine", 1000)
    t = np.arange(1, 1001) / 1000
    expected = cosine_alpha_bar(t)
    unclipped = s.betas.numpy() < 0.999
    np.testing.assert_allclose(s.alphas_cumprod.numpy()[unclipped], expected[unclipped], rtol=1e-9)
    assert s.betas.max() <= 0.999 and abs(float(s.alphas_cumprod[0]) - cosine_alpha_bar(1e-3)) < 1e-12


def test_derived_quantities():
    s = make_schedule("linear", 50)
    b = s.betas.numpy()
    ab = np.cumprod(1 - b)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), ab)
    np.testing.assert_allclose(s.alphas_cumprod_prev.numpy(), np.concatenate([[1.0], ab[:-1]]))
    t = 17
    assert math.isclose(float(s.posterior_variance[t]), b[t] * (1 - ab[t - 1]) / (1 - ab[t]), rel_tol=1e-12)
    gathered = s.gather("sqrt_alphas_cumprod", torch.tensor([0, t]), ndim=4)
    assert gathered.shape == (2, 1, 1, 1) and gathered.dtype == torch.float32
    assert math.isclose(float(gathered[1]), math.sqrt(ab[t]), rel_tol=1e-6)


def test_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        make_schedule("cosin", 100)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        make_schedule("linear", 10)  # 1000/10 * 0.02 = 2
    with pytest.raises(ValueError, match="positive int"):
        make_schedule("linear", 0)


# -- forward process -----------------------------------------------------------------------
def test_add_noise_then_analytic_x0_recovers_x0():
    s = make_schedule("cosine", 200)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, 4, 4, generator=g)
    noise = torch.randn(8, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, 50, 100, 150, 190, 199])
    x_t = DDPMSampler(s).add_noise(x0, noise, t)
    torch.testing.assert_close(x_t, q_sample(s, x0, noise, t))
    torch.testing.assert_close(predict_x0(s, x_t, noise, t), x0, atol=2e-4, rtol=1e-4)


def test_epsilon_loss_mse_and_l1():
    s = make_schedule("linear", 100)
    x0 = torch.zeros(4, 3)
    noise = torch.ones(4, 3) * 2.0
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    t = torch.zeros(4, dtype=torch.long)
    torch.testing.assert_close(epsilon_loss(zero, s, x0, t, noise), torch.full((4,), 4.0))
    torch.testing.assert_close(epsilon_loss(zero, s, x0, t, noise, "l1"), torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="loss_type"):
        epsilon_loss(zero, s, x0, t, noise, "huber")


# -- an exact denoiser for Gaussian data whose mean depends on a code z ---------------------
D, S2 = 16, 0.25  # data dimension, data variance s²


def _mean_of(z: torch.Tensor) -> torch.Tensor:
    """m(z): a fixed linear map from 3-dim codes to the data mean, shaped as 1x4x4 images."""
    A = torch.linspace(-1, 1, 3 * D).reshape(3, D)
    return (z @ A).reshape(-1, 1, 4, 4)


def _oracle(schedule: NoiseSchedule, z: torch.Tensor | None):
    """E[ε | x_t, z] for x_0 | z ~ N(m(z), s² I); z=None plays an inversion that drops z (m = 0)."""
    ab = schedule.alphas_cumprod.float()

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ab[t].reshape(-1, 1, 1, 1)
        m = _mean_of(z) if z is not None else torch.zeros_like(x)
        return (1 - a).sqrt() * (x - a.sqrt() * m) / (a * S2 + 1 - a)

    return eps


def _gaussian_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g)
    return _mean_of(z) + math.sqrt(S2) * torch.randn(n, 1, 4, 4, generator=g), z


def test_ddim_inversion_then_sampling_reconstructs_x0_with_the_right_z():
    s = make_schedule("linear", 1000)
    sampler = DDIMSampler(s, eta=0.0)
    sampler.set_timesteps(250)
    x0, z = _gaussian_data(256, seed=1)
    x_T = ddim_invert(_oracle(s, z), sampler, x0)
    # the ODE maps the data distribution to N(0, I) ...
    assert abs(float(x_T.mean())) < 0.05 and abs(float(x_T.std()) - 1.0) < 0.05
    # ... and sampling back with the same z returns the very images, up to the first-order
    # discretisation error of the two Euler schemes (≈ 0.01 at 250 steps, halving with twice the steps)
    back = sample_loop(_oracle(s, z), sampler, x_T)
    assert float((back - x0).abs().mean()) < 0.015 and float((back - x0).abs().max()) < 0.08
    # an inversion that drops z (the reference's defect) does not reconstruct: the test would catch it
    x_T_without_z = ddim_invert(_oracle(s, None), sampler, x0)
    wrong = sample_loop(_oracle(s, z), sampler, x_T_without_z)
    assert float((wrong - x0).abs().mean()) > 0.2


def test_ddim_with_eta_zero_is_deterministic_and_eta_adds_noise():
    s = make_schedule("cosine", 100)
    x_T = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    z = torch.zeros(16, 3)
    outs = []
    for eta, seed in ((0.0, 1), (0.0, 2), (1.0, 1), (1.0, 1), (1.0, 2)):
        sampler = DDIMSampler(s, eta=eta)
        sampler.set_timesteps(20)
        outs.append(sample_loop(_oracle(s, z), sampler, x_T, torch.Generator().manual_seed(seed)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)  # η = 0 ignores the generator
    torch.testing.assert_close(outs[2], outs[3], rtol=0, atol=0)  # same seed, same draws
    assert not torch.equal(outs[2], outs[4]) and not torch.equal(outs[0], outs[2])


def test_ddpm_step_is_algorithm_2_and_equals_ddim_with_eta_one():
    s = make_schedule("linear", 200)
    ddpm, ddim = DDPMSampler(s), DDIMSampler(s, eta=1.0)
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    t = 120
    out = ddpm.step(eps, t, x_t, torch.Generator().manual_seed(7))
    noise = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    beta, alpha, ab = float(s.betas[t]), float(s.alphas[t]), float(s.alphas_cumprod[t])
    algorithm_2 = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha) + math.sqrt(float(s.posterior_variance[t])) * noise
    torch.testing.assert_close(out, algorithm_2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ddim.step(eps, t, x_t, torch.Generator().manual_seed(7)), out, atol=1e-5, rtol=1e-5)
    # the last step adds no noise
    torch.testing.assert_close(ddpm.step(eps, 0, x_t, g), predict_x0(s, x_t, eps, torch.zeros(4, dtype=torch.long)))


def test_ddpm_ancestral_chain_samples_the_data_distribution():
    s = make_schedule("cosine", 200)
    z = torch.full((4000, 3), 0.5)
    sampler = DDPMSampler(s)
    out = sample_loop(_oracle(s, z), sampler, torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(0)),
                      torch.Generator().manual_seed(1))
    target = _mean_of(z[:1])
    assert float((out.mean(0) - target[0]).abs().max()) < 0.05
    assert abs(float((out - target).std()) - math.sqrt(S2)) < 0.02
    # a respaced chain (50 of 200 steps) still lands on the data distribution
    sampler.set_timesteps(50)
    out = sample_loop(_oracle(s, z), sampler, torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(0)),
                      torch.Generator().manual_seed(1))
    # (taking x̂_0 for a sample of p(x_0 | x_t) loses some variance on long steps: ≈ 0.47 instead of 0.5)
    assert float((out.mean(0) - target[0]).abs().max()) < 0.05 and abs(float((out - target).std()) - math.sqrt(S2)) < 0.05


def test_timestep_spacing_and_chain_errors():
    s = make_schedule("linear", 1000)
    sampler = DDIMSampler(s)
    sampler.set_timesteps(20)
    assert sampler.timesteps[:3].tolist() == [950, 900, 850] and sampler.timesteps[-1] == 0
    assert sampler.prev_timestep(950) == 900 and sampler.prev_timestep(0) == -1 and sampler.alpha_bar(-1) == 1.0
    trailing = DDIMSampler(s, spacing="trailing")
    trailing.set_timesteps(20)
    assert trailing.timesteps[0] == 999 and len(set(trailing.timesteps.tolist())) == 20
    with pytest.raises(ValueError, match="not in the chain"):
        sampler.prev_timestep(951)
    with pytest.raises(ValueError, match=r"in \[1, 1000\]"):
        sampler.set_timesteps(1001)


def test_switch_denoiser_calls_each_model_on_its_side_of_the_switch():
    seen: list[tuple[str, int]] = []

    def spy(name: str):
        def eps(x, t):
            seen.append((name, int(t[0])))
            return torch.zeros_like(x)
        return eps

    s = make_schedule("linear", 100)
    sampler = DDIMSampler(s)
    sampler.set_timesteps(10)
    sample_loop(switch_denoiser(spy("first"), spy("second"), 50), sampler, torch.zeros(2, 1, 4, 4))
    assert [n for n, t in seen if t >= 50] == ["first"] * 5 and [n for n, t in seen if t < 50] == ["second"] * 5


# -- networks ------------------------------------------------------------------------------
def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return module


@pytest.mark.parametrize("layout", ["joint", "separate"])
@pytest.mark.parametrize("side", [16, 24, 32])
def test_unet_shapes_and_conditioning(layout, side):
    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=1, image_size=side, base_channels=8, channel_mult=(1, 2, 2),
               num_res_blocks=1, attention_resolutions=(side // 2,), norm_groups=4, cond_dim=5, cond_layout=layout)
    x = torch.randn(2, 1, side, side)
    t, z = torch.tensor([3, 40]), torch.randn(2, 5)
    assert torch.count_nonzero(net(x, t, z)) == 0  # zero-initialised output: every block starts as the identity
    _randomise(net).eval()
    out = net(x, t, z)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, z + 1.0)) and not torch.allclose(out, net(x, t + 5, z))
    with pytest.raises(ValueError, match="pass z"):
        net(x, t)


def test_unet_rejects_sides_that_do_not_halve():
    with pytest.raises(ValueError, match="divisible by 2\\^\\(levels-1\\) = 4"):
        UNet(in_channels=1, out_channels=1, image_size=18, base_channels=8, channel_mult=(1, 2, 2), norm_groups=4)
    with pytest.raises(ValueError, match="norm_groups"):
        UNet(in_channels=1, out_channels=1, image_size=16, base_channels=12, channel_mult=(1, 2), norm_groups=8)


def test_encoders_map_images_to_codes():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 16, 16)
    half = HalfUNetEncoder(in_channels=1, image_size=16, out_dim=6, base_channels=8, channel_mult=(1, 2),
                           num_res_blocks=1, attention_resolutions=(8,), norm_groups=4)
    full = UNetMapEncoder(in_channels=1, image_size=16, out_dim=6, base_channels=8, channel_mult=(1, 2),
                          num_res_blocks=1, attention_resolutions=(8,), norm_groups=4)
    for enc in (half, full):
        codes = enc.eval()(x)
        assert codes.shape == (3, 6) and not torch.allclose(codes[0], codes[1])


def test_paper_architecture_matches_the_infodiffusion_reference_parameter_count():
    """The reference (isjakewong/InfoDiffusion, dev branch, 64x64, 3 channels) reports 168,803,428
    parameters: 9,095,296 of them belong to cross-attention blocks its residual blocks build but
    never call, 64,000 to the frozen sinusoid table of its time embedding, and 1,056 to the mean
    head fc_mu (we use the encoder features as the posterior mean). The rest must be ours exactly."""
    with torch.device("meta"):
        unet = UNet(in_channels=3, out_channels=3, image_size=64, cond_dim=32, cond_layout="separate")
        encoder = UNetMapEncoder(in_channels=3, image_size=64, out_dim=32, channel_mult=(1, 2, 4, 8))
        logvar_head = nn.Linear(32, 32)
    ours = count_parameters(unet) + count_parameters(encoder) + count_parameters(logvar_head)
    assert ours == 168_803_428 - 9_095_296 - 64_000 - 1_056


def test_latent_mlp_shapes_and_skips():
    torch.manual_seed(0)
    net = LatentMLP(dim=6, hidden=16, num_layers=4)
    assert [layer.linear.in_features for layer in net.layers] == [6, 22, 22, 22]
    out = net(torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 4]))
    assert out.shape == (5, 6)


def test_ema_tracks_the_moving_average():
    live = nn.Linear(2, 1)
    with torch.no_grad():
        live.weight.fill_(0.0)
        live.bias.fill_(0.0)
    ema = EMA(live, decay=0.9)
    with torch.no_grad():
        live.weight.fill_(1.0)
    ema.update(live)
    ema.update(live)
    torch.testing.assert_close(ema.shadow.weight, torch.full((1, 2), 1 - 0.9**2))
    assert not ema.shadow.weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        EMA(live, 1.0)


def test_litema_warmup_follows_latent_diffusions_formula():
    """LDM's LitEma (use_num_upates=True): the n-th update uses min(decay, (1 + n)/(10 + n))."""
    from bench.diffusion.ema import EMA

    live = torch.nn.Linear(1, 1, bias=False)
    live.weight.data.fill_(0.0)
    ema, plain = EMA(live, 0.9999, warmup=True), EMA(live, 0.9999)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        live.weight.data.fill_(value)
        ema.update(live)
        plain.update(live)
        d = min(0.9999, (1 + n) / (10 + n))
        expected = expected - (1 - d) * (expected - value)  # LitEma: shadow -= (1 - decay) (shadow - param)
    assert float(ema.shadow.weight) == pytest.approx(expected, rel=1e-6)
    assert float(plain.shadow.weight) == pytest.approx(1e-4 * (1 + 2 + 3 + 4), rel=1e-2)  # no warm-up: barely moves


def test_ldm_spacing_is_latent_diffusions_ddim():
    """LDM's make_ddim_timesteps ('uniform') and make_ddim_sampling_parameters: τ = i·T/S + 1,
    alphas_prev = [ᾱ_0] + ᾱ[τ[:-1]]; an η = 0 chain on a fixed ε̂ equals LDM's p_sample_ddim loop."""
    from bench.diffusion.samplers import DDIMSampler
    from bench.diffusion.schedules import make_schedule

    schedule = make_schedule("linear", 1000)
    ab = schedule.alphas_cumprod.double().numpy()
    sampler = DDIMSampler(schedule, eta=0.0, spacing="ldm")
    sampler.set_timesteps(50)
    taus = np.arange(0, 1000, 20) + 1
    assert sampler.timesteps.tolist() == taus[::-1].tolist() and sampler.final == 0
    alphas, alphas_prev = ab[taus], np.concatenate([[ab[0]], ab[taus[:-1]]])
    w = np.random.default_rng(0).normal(size=(4, 4))
    eps_np = lambda x, t: np.tanh(x @ w) + 0.01 * t / 1000  # noqa: E731
    x = np.random.default_rng(1).normal(size=(3, 4))
    ref = x.copy()
    for i in reversed(range(len(taus))):  # p_sample_ddim with eta = 0
        e = eps_np(ref, taus[i])
        pred_x0 = (ref - np.sqrt(1 - alphas[i]) * e) / np.sqrt(alphas[i])
        ref = np.sqrt(alphas_prev[i]) * pred_x0 + np.sqrt(1 - alphas_prev[i]) * e
    ours = sample_loop(lambda v, t: torch.from_numpy(eps_np(v.double().numpy(), float(t[0]))).float(), sampler,
                       torch.from_numpy(x).float())
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=1e-5, atol=1e-4)  # float32 against float64
    with pytest.raises(ValueError, match="ldm"):
        sampler.set_timesteps(1000)


def test_ddim_with_eta_adds_noise_down_to_level_zero_as_latent_diffusions_sampler():
    """LDM's p_sample_ddim adds σ_t·z on every step, the last one (to level 0, ᾱ_0 < 1) included:
    x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z, σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)."""
    from bench.diffusion.samplers import DDIMSampler
    from bench.diffusion.schedules import make_schedule

    schedule = make_schedule("linear", 1000)
    ab = schedule.alphas_cumprod.double().numpy()
    sampler = DDIMSampler(schedule, eta=1.0, spacing="ldm")
    sampler.set_timesteps(50)
    x, eps = torch.randn(2, 3, generator=torch.Generator().manual_seed(0)), torch.randn(2, 3)
    for t, t_prev in ((21, 1), (1, 0)):  # the last two steps of the chain
        assert sampler.prev_timestep(t) == t_prev
        a_t, a_prev = ab[t], ab[t_prev]
        sigma = np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)
        assert sigma > 0
        x0 = (x.double() - np.sqrt(1 - a_t) * eps.double()) / np.sqrt(a_t)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
        ref = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps.double() + sigma * z.double()
        ours = sampler.step(eps, t, x, generator=torch.Generator().manual_seed(7))
        np.testing.assert_allclose(ours.double().numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
