"""PDAE and DisDiff: a frozen, shared DPM component, G starting at zero, the sampling and loss identities."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import tests.plugin_stages  # noqa: F401  (registers tiny-bars)
from bench.diffusion.samplers import q_sample, sample_loop
from bench.stages import plan
from methods.ddpm import DDPM
from methods.disdiff import DisDiff
from methods.pdae import PDAE, dpm_params, shift_coefficient, snr_weight
from tests.conftest import TinyBars

def _tiny(cls) -> str:
    """The pixel-space tiny preset (these tests run PDAE and DisDiff on the pixel-space ``ddpm`` component)."""
    return "tiny-pixel" if "tiny-pixel" in cls.presets else "tiny"


FAST = {"steps": 12, "batch_size": 8, "log_every": 4, "latent_steps": 6}


@pytest.fixture(scope="module")
def data():
    return TinyBars()


@pytest.fixture(scope="module")
def dpm(data):
    """The tiny DPM both methods are trained on (as the runner builds it from a PDAE cell's params)."""
    params = {**DDPM.presets["tiny"], **dpm_params(PDAE.from_preset("tiny").get_params()), "steps": 40}
    return DDPM(**params).fit(data, seed=0)


def _unet_state(adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter._eval_net("unet").state_dict().items()}


def _batch(model, data, seed=0, n=6):
    gen = torch.Generator().manual_seed(seed)
    x0 = model._images_in(torch.from_numpy(data.images(np.arange(n))))
    return {"x0": x0, "t": torch.randint(0, model.timesteps, (n,), generator=gen),
            "noise": torch.randn(x0.shape, generator=gen)}


@pytest.mark.parametrize("cls", [PDAE, DisDiff])
def test_stage_two_leaves_the_frozen_dpm_bit_identical(cls, dpm, data):
    before = _unet_state(dpm)
    model = cls.from_preset(_tiny(cls), **FAST).fit(data, seed=0, components={"dpm": dpm})
    after = _unet_state(dpm)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # the model's own copy of the DPM was not trained either, and G was
    mine = model.unet_.state_dict()
    assert all(torch.equal(before[k], mine[k]) for k in before)
    assert not all(torch.count_nonzero(p) == 0 for p in model.shift_.out.parameters())


@pytest.mark.parametrize("cls", [PDAE, DisDiff])
def test_the_gradient_estimator_is_exactly_zero_at_initialisation(cls, dpm, data):
    model = cls.from_preset(_tiny(cls), **FAST)
    model.components_ = {"dpm": dpm}
    model._build(data.image_shape)
    batch = _batch(model, data)
    x_t = q_sample(model.schedule_, batch["x0"], batch["noise"], batch["t"])
    eps, h, skips, temb = model._frozen_pass(x_t, batch["t"])
    z = model.encoder_(batch["x0"])
    gradient = model._gradient(h, skips, temb, z, evaluation=False)
    assert gradient.shape == x_t.shape and torch.count_nonzero(gradient) == 0
    # so the stage-2 denoiser starts as the DPM: ε̂ = ε_θ exactly
    with torch.no_grad():
        np.testing.assert_array_equal(model._denoiser(z)(x_t, batch["t"]).numpy(), eps.numpy())
        np.testing.assert_array_equal(eps.numpy(), dpm._denoiser()(x_t, batch["t"]).numpy())


def test_stop_percent_one_samples_exactly_as_the_frozen_dpm(dpm, data):
    model = PDAE.from_preset("tiny", **FAST, stop_percent=1.0).fit(data, seed=0, components={"dpm": dpm})
    gen = torch.Generator().manual_seed(3)
    z = model._sample_codes(4, gen)
    x_T = model._x_T(4, gen)
    shifted_off = model._render(z, x_T, torch.Generator().manual_seed(0), model._sampling_denoiser)
    plain = dpm._to_numpy_images(sample_loop(dpm._denoiser(), model._image_sampler(), x_T))
    np.testing.assert_array_equal(shifted_off, plain)
    # with the shift on, the trained G changes the samples (the test above can fail)
    model._params["stop_percent"] = 0.0
    shifted = model._render(z, x_T, torch.Generator().manual_seed(0), model._sampling_denoiser)
    assert np.abs(shifted - plain).max() > 1e-4


def test_stop_percent_switches_the_shift_off_for_the_last_steps(dpm, data, monkeypatch):
    model = PDAE.from_preset("tiny", **FAST, ddim_steps=5, stop_percent=0.4).fit(data, seed=0, components={"dpm": dpm})
    shifted_at, real = [], PDAE._gradient

    def spy(self, h, skips, temb, z, *, evaluation):
        shifted_at.append(True)
        return real(self, h, skips, temb, z, evaluation=evaluation)

    monkeypatch.setattr(PDAE, "_gradient", spy)
    model.sample(2, seed=0)
    assert len(shifted_at) == 3  # int(0.4 * 5) = 2 of the 5 DDIM steps run unshifted (shift_ddim_sample_loop)


def test_pdae_loss_is_the_weighted_shift_objective_of_the_reference(dpm, data):
    model = PDAE.from_preset("tiny", **FAST).fit(data, seed=0, components={"dpm": dpm})
    batch = _batch(model, data, seed=1)
    t = batch["t"]
    s = model.schedule_
    alphas, ab, ab_prev = s.alphas.numpy(), s.alphas_cumprod.numpy(), s.alphas_cumprod_prev.numpy()
    coef = -np.sqrt(alphas) * (1 - ab_prev) / np.sqrt(1 - ab)  # gaussian_diffusion.py: shift_coef
    snr = ab / (1 - ab)
    weight = snr**0.1 / (1 + snr)
    np.testing.assert_allclose(shift_coefficient(s).numpy(), coef, rtol=1e-12)
    np.testing.assert_allclose(snr_weight(s, 0.1).numpy(), weight, rtol=1e-12)
    with torch.no_grad():
        z = model.encoder_(batch["x0"])
        x_t = q_sample(s, batch["x0"], batch["noise"], t)
        eps, h, skips, temb = model._frozen_pass(x_t, t)
        g = model._gradient(h, skips, temb, z, evaluation=False)
        expected = (weight[t.numpy()] * ((batch["noise"] - (eps + torch.from_numpy(coef[t.numpy()]).float()
                                                            .view(-1, 1, 1, 1) * g)) ** 2).flatten(1).mean(1).numpy()).mean()
        assert float(model._loss(batch)) == pytest.approx(expected, rel=1e-5)


def test_disdiff_with_one_unit_is_the_unweighted_pdae_objective(dpm, data):
    model = DisDiff.from_preset("tiny-pixel", **FAST, num_units=1, loss_type="mse", dis_weight=0.05)
    model = model.fit(data, seed=0, components={"dpm": dpm})
    batch = _batch(model, data, seed=2)
    batch["unit"] = torch.zeros(6, dtype=torch.long)
    t = batch["t"]
    with torch.no_grad():
        terms = model.loss_terms(batch)
        assert torch.count_nonzero(terms["dis"]) == 0  # a cross-entropy over one unit is zero
        z = model.encoder_(batch["x0"])
        x_t = q_sample(model.schedule_, batch["x0"], batch["noise"], t)
        eps, h, skips, temb = model._frozen_pass(x_t, t)
        g = model._unit_gradients(h, skips, temb, z, evaluation=False)
        assert g.shape[0] == 1
        coef = shift_coefficient(model.schedule_)[t].float().view(-1, 1, 1, 1)
        pdae_form = ((batch["noise"] - (eps + coef * g[0])) ** 2).mean()  # w_t = 1
        assert float(model._loss(batch)) == pytest.approx(float(pdae_form), rel=1e-5)


def test_disdiff_disentangling_loss_trains_g_through_a_frozen_encoder_copy(dpm, data):
    model = DisDiff.from_preset("tiny-pixel", **FAST).fit(data, seed=0, components={"dpm": dpm})
    model.encoder_.train()
    batch = _batch(model, data, seed=4)
    batch["unit"] = torch.tensor([0, 1, 2, 0, 1, 2])
    dis = model.loss_terms(batch)["dis"]
    assert dis.shape == (6,) and torch.isfinite(dis).all() and float(dis.detach().sum()) > 0
    dis.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shift_.parameters())
    assert all(not p.requires_grad for p in model.frozen_encoder_.parameters())
    # the copy holds this step's encoder weights
    for a, b in zip(model.frozen_encoder_.parameters(), model.encoder_.parameters()):
        assert torch.equal(a, b.detach())


def test_disdiff_encodes_units_and_swaps_them(dpm, data):
    model = DisDiff.from_preset("tiny-pixel", **FAST).fit(data, seed=0, components={"dpm": dpm})
    assert "latent_units" in model.capabilities and model.code_dim == 3 * 4 and model.latent_unit_dim == 4
    from bench.evaluation import unit_encoder
    from bench.figures import unit_swaps

    swaps = unit_swaps(model, data.images(np.arange(4)), 3)
    assert swaps.shape == (3, 4, *data.image_shape)
    reduced = unit_encoder(model.encode, model, data, seed=0, limit=64)(data.images(np.arange(10)))
    assert reduced.shape == (10, 3) and np.isfinite(reduced).all()


def test_a_missing_or_mismatched_dpm_is_a_clear_error_before_training(dpm, data):
    with pytest.raises(ValueError, match=r"pass components=\{'dpm'"):
        PDAE.from_preset("tiny").fit(data, seed=0)
    with pytest.raises(ValueError, match="'dpm' component has base_channels=8, but this model expects base_channels=16"):
        PDAE.from_preset("tiny", base_channels=16).fit(data, seed=0, components={"dpm": dpm})
    with pytest.raises(ValueError, match="sampler must be 'ddim'"):
        PDAE.from_preset("tiny", sampler="ddpm")
    with pytest.raises(ValueError, match="num_units=200 exceeds"):
        DisDiff.from_preset("tiny-pixel", num_units=200).fit(data, seed=0, components={"dpm": dpm})


def test_pdae_and_disdiff_cells_share_one_dpm_trained_once(tmp_path):
    from tests.test_stages import grid

    from bench.runner import run_profile

    # the line joins the profile's "*" overrides table (steps = 6, batch_size = 8, ...); pixel-space DisDiff
    profile, out, _ = grid(tmp_path, methods=("pdae", "disdiff"),
                           extra="latent_steps = 4\n[profiles.t.presets]\ndisdiff = \"tiny-pixel\"\n")
    p = plan(profile)
    assert len(p.components) == 1 and p.components[0].method == "ddpm"
    assert {m.components["dpm"] for m in p.models} == {p.components[0].id} and len(p.models) == 4
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.failed == []
    rows = pd.read_csv(out / "results.csv")
    assert len(rows[(rows["role"] == "component") & (rows["metric"] == "final_loss")]) == 1
    models = rows[rows["role"] == "model"]
    assert {json.loads(c)["dpm"] for c in models["components"]} == {p.components[0].id}
    for method in ("pdae", "disdiff"):
        mine = models[(models["method"] == method) & models["metric"].isin(["factorvae", "dci_disentanglement"])]
        assert len(mine) == 4 and (mine["status"] == "ok").all() and np.isfinite(mine["value"]).all()


def test_the_encoders_have_the_reference_parameter_counts():
    """CELEBA64Encoder (z = 512) and Encoder4 (d = 128, 6 × 32) of the reference code, layer by layer.

    PDAE: conv 3→64 (1,792) + GN (128) + conv 64→128 (73,856) + 4-head attention (66,304) +
    GN (256) + 2 × [conv 128→128 (147,584) + GN (256)] + Linear 2048→512 (1,049,088) = 1,487,104.
    DisDiff: 4×4 convs 6,272 + 3 × 262,272, four BatchNorms 4 × 256, two residual blocks
    2 × 164,352, BatchNorm 256, Linear 2048→192 (393,408) = 1,516,480
    (``benchmarks/reference_counts.py`` builds the reference networks and prints the same).
    """
    from bench.diffusion.encoders import DisDiffEncoder, PDAEEncoder

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(PDAEEncoder(in_channels=3, image_size=64, out_dim=512)) == 1_487_104
    assert count(PDAEEncoder(in_channels=3, image_size=64, out_dim=32)) == 503_584
    assert count(DisDiffEncoder(in_channels=3, image_size=64, out_dim=192)) == 1_516_480


# -- the reference's DDIM chains (PDAE diffusion/ddim.py, transcribed as the oracle) ----------
def _reference_chain(alphas_cumprod: np.ndarray, steps: int):
    """get_ddim_betas_and_timestep_map: the used levels and their ᾱ (level 0 stands for the data)."""
    T = len(alphas_cumprod)
    use = {int(s) for s in np.linspace(0, T - 1, steps + 1)}
    levels = [i for i in range(T) if i in use]
    return levels, alphas_cumprod[levels]


def _reference_step(eps_fn, x, level_t, ab_from, ab_to):
    eps = eps_fn(x, level_t)
    x0 = (np.sqrt(1 / ab_from) * x - np.sqrt(1 / ab_from - 1) * eps).clip(-1, 1)
    eps = (np.sqrt(1 / ab_from) * x - x0) / np.sqrt(1 / ab_from - 1)
    return x0 * np.sqrt(ab_to) + np.sqrt(1 - ab_to) * eps


def _reference_sample(eps_fn, alphas_cumprod, steps, x_T):  # ddim_sample_loop
    levels, ab = _reference_chain(alphas_cumprod, steps)
    x = x_T
    for i in reversed(range(1, len(levels))):
        x = _reference_step(eps_fn, x, levels[i], ab[i], ab[i - 1])
    return x


def _reference_encode(eps_fn, alphas_cumprod, steps, x_0):  # ddim_encode_loop
    levels, ab = _reference_chain(alphas_cumprod, steps)
    x = x_0
    for i in range(len(levels) - 1):
        x = _reference_step(eps_fn, x, levels[i], ab[i], ab[i + 1])
    return x


@pytest.mark.parametrize("steps", [100, 1000, 7])
def test_linspace_ddim_chains_equal_the_references(steps):
    """Decoding and inversion with PDAE's spacing equal the reference's loops on a fixed ε̂
    (one that pushes x̂_0 out of [-1, 1], so the clipping matters), both meeting at t = 999."""
    from bench.diffusion.samplers import DDIMSampler, ddim_invert
    from bench.diffusion.schedules import make_schedule

    schedule = make_schedule("linear", 1000)
    ab = schedule.alphas_cumprod.double().numpy()
    w = np.random.default_rng(0).normal(size=(5, 5))

    def eps_np(x, t):
        return np.tanh(x @ w) * 1.5 + 0.3 * np.sin(t / 50.0)

    def eps_torch(x, t):
        return torch.from_numpy(eps_np(x.double().numpy(), float(t[0]))).float()

    sampler = DDIMSampler(schedule, eta=0.0, spacing="linspace", clip_x0=True)
    sampler.set_timesteps(steps)
    assert int(sampler.timesteps[0]) == 999 and sampler.final == 0
    x_T = np.random.default_rng(1).normal(size=(4, 5))
    ours = sample_loop(eps_torch, sampler, torch.from_numpy(x_T).float()).double().numpy()
    np.testing.assert_allclose(ours, _reference_sample(eps_np, ab, steps, x_T), atol=2e-4)
    x_0 = np.random.default_rng(2).uniform(-1, 1, size=(4, 5))
    inverted = ddim_invert(eps_torch, sampler, torch.from_numpy(x_0).float()).double().numpy()
    np.testing.assert_allclose(inverted, _reference_encode(eps_np, ab, steps, x_0), atol=2e-4)


def test_pdae_and_disdiff_use_the_reference_chains_and_clipping():
    for cls in (PDAE, DisDiff):
        model = cls.from_preset(_tiny(cls))
        assert model.spacing == "linspace" and model.clip_inversion and model.latent_clip_x0
        assert cls.defaults["spacing"] == "linspace"


def test_disdiff_shift_decoder_has_the_reference_dropout_and_heads_and_the_dpm_trains_with_flips(data):
    """The shift UNet's own config (dropout 0, 8 heads), LitEma's warm-up and LDM's warm-up start;
    PDAE's DPM component trains with the stage's flips (the reference DPMs do)."""
    from bench.diffusion.unet import AttentionBlock

    disdiff = DisDiff.from_preset("tiny-pixel", **FAST, attention_resolutions=[8])
    params = {**DDPM.presets["tiny"], **dpm_params(disdiff.get_params()), "steps": 1}
    model = disdiff.fit(data, seed=0, components={"dpm": DDPM(**params).fit(data, seed=0)})
    heads = {m.num_heads for m in model.shift_.modules() if isinstance(m, AttentionBlock)}
    drops = {m.p for m in model.shift_.modules() if isinstance(m, torch.nn.Dropout)}
    assert heads == {8} and drops <= {0.0}
    assert DisDiff.ema_warmup and DisDiff.warmup_start == 1e-6 and not PDAE.ema_warmup
    assert dpm_params(PDAE(hflip=True).get_params())["hflip"] is True


def test_disdiff_can_freeze_the_dpms_live_weights_as_the_reference_does(data):
    """``frozen_weights = "live"`` (the reference's ``load_ema_ckpt`` reads the live ``model.`` keys): the component
    keeps its live weights in its checkpoint and DisDiff freezes those; the default freezes the EMA ones and leaves
    the shared component's parameters (and so its stage id) as they were."""
    live = DisDiff.from_preset("tiny-pixel", **FAST, frozen_weights="live")
    params = {**DDPM.presets["tiny"], **DisDiff.components["dpm"].params(live.get_params()), "steps": 6,
              "ema_decay": 0.5}
    assert params["keep_live"] is True
    assert "keep_live" not in DisDiff.components["dpm"].params(DisDiff.from_preset("tiny-pixel").get_params())
    assert DDPM.identity_params(DDPM(**{**params, "keep_live": False}).get_params()) == \
        DDPM.identity_params({k: v for k, v in DDPM(**params).get_params().items() if k != "keep_live"})

    trained = DDPM(**params).fit(data, seed=0)
    state = trained.state_dict()
    reloaded = DDPM(**params)
    reloaded.load_state_dict(state, trained.input_shape)
    reloaded._fitted = True
    live_weights = {k: v.clone() for k, v in trained.unet_.state_dict().items()}
    ema_weights = _unet_state(trained)
    assert any(not torch.equal(live_weights[k], ema_weights[k]) for k in live_weights)

    model = live.fit(data, seed=0, components={"dpm": reloaded})
    assert all(torch.equal(model.unet_.state_dict()[k], live_weights[k]) for k in live_weights)
    default = DisDiff.from_preset("tiny-pixel", **FAST).fit(data, seed=0, components={"dpm": reloaded})
    assert all(torch.equal(default.unet_.state_dict()[k], ema_weights[k]) for k in ema_weights)

    ema_only = DDPM(**{**params, "keep_live": False})
    ema_only.load_state_dict(DDPM(**{**params, "keep_live": False}).fit(data, seed=0).state_dict(), trained.input_shape)
    ema_only._fitted = True
    with pytest.raises(ValueError, match="keep_live"):
        DisDiff.from_preset("tiny-pixel", **FAST, frozen_weights="live").fit(data, seed=0, components={"dpm": ema_only})
