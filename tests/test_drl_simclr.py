"""DRL / VDRL (score-based representations) and SimCLR / SimCLR-Gauss (contrastive, not generative)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.adapter import NotGenerativeError
from bench.diffusion.sde import VESDE, VPSDE, dsm_loss
from bench.diffusion.unet import UNet
from bench.metrics.probe import TimedEncoder, latent_probe, probe_splits
from methods.backbones import ResNet, WideResNet
from methods.drl import DRL, VDRL
from methods.simclr import SimCLR, SimCLRGauss, nt_xent, random_resized_crop

FAST = {"steps": 6, "batch_size": 8, "log_every": 3}


# -- the SDEs --------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE(0.1, 20.0)])
def test_simulating_the_forward_sde_gives_the_perturbation_kernel(sde):
    """Euler–Maruyama on dx = f dt + g dw from x_0 reaches the kernel's mean and variance
    (VE: score_sde's kernel std σ(t), which differs from the exact σ²(t) − σ²(0) by σ_min² = 1e-4)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    x, steps, t_end = x0.clone(), 400, 0.6
    dt = t_end / steps
    for i in range(steps):
        t = torch.full((len(x),), i * dt, dtype=torch.float64)
        f, gt = sde.drift_diffusion(x, t)
        x = x + f * dt + gt[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    mean, std = sde.marginal(x0, torch.full((len(x),), t_end, dtype=torch.float64))
    assert float(x.mean()) == pytest.approx(float(mean.mean()), abs=0.03 * float(std[0]) + 1e-3)
    assert float(x.var()) == pytest.approx(float(std[0] ** 2), rel=0.03)
    if isinstance(sde, VESDE):  # score_sde's VESDE.marginal_prob: std = σ_min (σ_max/σ_min)^t, never below σ_min
        t = torch.tensor([0.0, 1e-5, 0.05], dtype=torch.float64)
        torch.testing.assert_close(sde.marginal(x0[:3], t)[1], 0.01 * 5000.0 ** t)


class _ExactScoreNet(torch.nn.Module):
    """What DRL's score network would output for the exact score of the data set ``data`` under
    the SDE's own kernel (a mixture of Gaussians N(x_k, std(t)² I)): DRL divides it by std(t).
    The network reads s = log σ(t) (VE)."""

    def __init__(self, data: torch.Tensor, sde: VESDE) -> None:
        super().__init__()
        self.data, self.sde = data.double().flatten(1), sde

    def forward(self, x, s, z):
        t = (s.double() - math.log(self.sde.sigma_min)) / math.log(self.sde.sigma_max / self.sde.sigma_min)
        std = self.sde.marginal(x, t)[1].double()[:, None]
        flat = x.double().flatten(1)
        w = torch.softmax(-((flat[:, None] - self.data[None]) ** 2).sum(-1) / (2 * std ** 2), dim=1)
        return ((w @ self.data - flat) / std).reshape(x.shape).float()


def test_ode_round_trip_with_the_exact_score_is_within_a_grey_level(tiny_data):
    """The oracle: with the data set's exact score, x_0 → x_1 → x_0 is the identity up to the
    solver. With the DRL profile's own settings (bench.toml, drl-simclr-fmnist) the round trip
    must be within 1/255 RMSE (the exact kernel √(σ² − σ_min²) with the profile's former 20 Heun steps gave
    7.35/255 here; score_sde's kernel gives 0.0066/255 with those steps and 0.00016/255 with RK45)."""
    import tomllib
    from pathlib import Path

    overrides = tomllib.loads((Path(__file__).parents[1] / "bench.toml").read_text())["profiles"]["drl-simclr-fmnist"]
    params = {**overrides["overrides"]["*"], **overrides["overrides"]["drl"], **FAST}
    model = DRL.from_preset("tiny", **params).fit(tiny_data, seed=0)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 4, (64, *model.input_shape), generator=g).float() / 3  # images on a grid of 4 levels
    model.unet_ = _ExactScoreNet(data, model.sde_)
    model.emas_.pop("unet", None)
    x = data[::8].numpy()
    rec = model.reconstruct(x)
    rmse = float(np.sqrt(((rec - x) ** 2).mean()))
    assert rmse <= 1 / 255, f"round-trip RMSE {rmse * 255:.3f}/255"


def test_dsm_loss_is_half_the_summed_weighted_error():
    sde = VESDE()
    x0, noise = torch.rand(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9])
    perfect = lambda x, tt: -(x - x0) / sde.marginal(x0, tt)[1].view(-1, 1, 1, 1) ** 2  # the true conditional score
    torch.testing.assert_close(dsm_loss(perfect, sde, x0, t, noise), torch.zeros(4), atol=1e-4, rtol=0)
    zero = lambda x, tt: torch.zeros_like(x)
    torch.testing.assert_close(dsm_loss(zero, sde, x0, t, noise), 0.5 * noise.pow(2).flatten(1).sum(1))


# -- DRL's conditioning ----------------------------------------------------------------------
def test_the_code_adds_nothing_to_the_score_model_before_training():
    torch.manual_seed(0)
    kw = dict(in_channels=1, out_channels=1, image_size=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
              attention_resolutions=(), norm_groups=4, cond_layout="bias", time_encoding="fourier", dropout=0.0)
    with_z = UNet(cond_dim=6, **kw)
    without = UNet(cond_dim=None, **kw)
    missing = without.load_state_dict({k: v for k, v in with_z.state_dict().items() if k in without.state_dict()})
    assert not missing.missing_keys
    for net in (with_z, without):  # give the (zero-initialised) output convs weights, so outputs are not all zero
        for block in [*net.down.blocks, *net.down.middle, *net.up]:
            if hasattr(block, "stages"):
                torch.nn.init.normal_(block.stages[-1].rest[-1].weight, std=0.1)
        torch.nn.init.normal_(net.out[-1].weight, std=0.1)
    without.load_state_dict({k: v for k, v in with_z.state_dict().items() if k in without.state_dict()})
    x, s, z = torch.randn(3, 1, 16, 16), torch.randn(3), torch.randn(3, 6)
    torch.testing.assert_close(with_z(x, s, z), without(x, s), rtol=0, atol=0)
    torch.nn.init.normal_(with_z.cond_embed[-1].weight)  # once the code path's last layer moves, z matters
    assert not torch.allclose(with_z(x, s, z), without(x, s))


def test_probability_flow_ode_round_trip_recovers_the_image(tiny_data):
    """x_0 → x_1 → x_0 with the image's own code. Bound: the round trip's error is the solver's
    (the same score field is integrated both ways), so it must be far below the distance to any
    other training image; we require mean squared error < 1e-3, where the mean squared distance
    between two TinyBars images is about 0.1."""
    model = DRL.from_preset("tiny", steps=150).fit(tiny_data, seed=0)
    x = tiny_data.images(np.arange(16))
    rec = model.reconstruct(x)
    err = float(((rec - x) ** 2).mean())
    others = float(((x[:, None] - x[None]) ** 2).mean(axis=(2, 3, 4))[~np.eye(16, dtype=bool)].mean())
    assert err < 1e-3 and others > 0.05
    assert np.abs(rec - x).max() < 0.25


def test_drl_score_network_attends_at_16x16_like_ddpmpp():
    """App. D builds on DDPM++ cont. (deep): attention at 16x16 (score_sde attn_resolutions = (16,))."""
    from bench.diffusion.unet import AttentionBlock

    model = DRL()
    assert model.attention_resolutions == [16] and (model.ema_decay, model.batch_size) == (0.9999, 128)
    model._build((3, 32, 32))
    assert sum(isinstance(m, AttentionBlock) for m in model.unet_.modules()) > 0


def test_drl_encodes_with_the_live_encoder_unless_asked_for_its_ema(tiny_data):
    model = DRL.from_preset("tiny", **FAST).fit(tiny_data, seed=0)
    x = tiny_data.images(np.arange(4))
    x0 = model._images_in(torch.from_numpy(x))
    with torch.no_grad():
        live, ema = model.encoder_(x0).numpy(), model.emas_["encoder"].shadow(x0).numpy()
    assert np.abs(live - ema).max() > 1e-4  # the two differ after training
    np.testing.assert_allclose(model.encode(x), live, rtol=1e-5, atol=1e-6)
    model._params["encoder_ema"] = True
    np.testing.assert_allclose(model.encode(x), ema, rtol=1e-5, atol=1e-6)


def test_time_conditioned_codes_depend_on_t_and_the_model_is_not_generative(tiny_data):
    model = DRL.from_preset("tiny", time_conditioned=True, steps=40).fit(tiny_data, seed=0)
    assert "time_conditioned" in model.capabilities and "sample" not in model.capabilities
    x = tiny_data.images(np.arange(6))
    assert not np.allclose(model.encode(x, t=0.0), model.encode(x, t=1.0))
    np.testing.assert_array_equal(model.encode(x), model.encode(x, t=model.encode_t))
    with pytest.raises(NotGenerativeError, match="time_conditioned=True cannot sample"):
        model.sample(2)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        model.encode(x, t=1.5)
    static = DRL.from_preset("tiny", **FAST).fit(tiny_data, seed=0)
    with pytest.raises(ValueError, match="does not depend on t"):
        static.encode(x, t=0.5)


def test_drl_and_vdrl_regularisers_are_the_papers(tiny_data):
    drl, vdrl = DRL.from_preset("tiny"), VDRL.from_preset("tiny")
    assert (drl.l1_weight, vdrl.kl_weight, drl.sigma_min, drl.sigma_max) == (1e-5, 1e-7, 0.01, 50.0)
    z = torch.tensor([[1.0, -2.0]])
    assert float(drl._regulariser(z, z, None)) == pytest.approx(3e-5)
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    kl = 0.5 * (1.0 + (2.0 - 1.0 - math.log(2.0)))
    assert float(vdrl._regulariser(mu, mu, logvar)) == pytest.approx(1e-7 * kl)


def test_bad_sde_settings_fail_before_training():
    with pytest.raises(ValueError, match="sigma-uniform.*VE SDE"):
        DRL.from_preset("tiny", sde="vp", t_sampling="sigma-uniform")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        DRL.from_preset("tiny", sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="names a discrete DDPM sampler"):
        with DRL.from_preset("tiny").using_sampler("ancestral-1000"):
            pass


# -- SimCLR ----------------------------------------------------------------------------------
def test_backbone_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ResNet(18, 3, 32)) == 11_168_832  # torchvision's 11,176,512 without fc, 3x3 stem instead of 7x7
    assert count(ResNet(18, 3, 64)) == 11_176_512
    assert count(ResNet(50, 3, 32)) == 23_500_352
    # sarthmit/traj_drl models/wrn.py, WRN-28-2 with its 64-d time embedding: 1,534,171 parameters, of which
    # 1,290 are its classifier and 6,289 its time embedding
    assert count(WideResNet(3, 28, 2, 0.0, time_dim=64)) == 1_534_171 - 1_290 - 6_289


def _reference_contrastive_loss(hidden: np.ndarray, temperature: float) -> float:
    """google-research/simclr tf2/objective.py ``add_contrastive_loss`` (one replica), in NumPy."""
    large = 1e9
    hidden = hidden / np.linalg.norm(hidden, axis=1, keepdims=True)
    h1, h2 = np.split(hidden, 2)
    n = len(h1)
    labels, masks = np.eye(n, 2 * n), np.eye(n)

    def xent(logits):
        logits = logits - logits.max(1, keepdims=True)
        return -(labels * (logits - np.log(np.exp(logits).sum(1, keepdims=True)))).sum(1)

    aa, bb = h1 @ h1.T / temperature - masks * large, h2 @ h2.T / temperature - masks * large
    ab, ba = h1 @ h2.T / temperature, h2 @ h1.T / temperature
    return float(np.mean(xent(np.concatenate([ab, aa], 1)) + xent(np.concatenate([ba, bb], 1))))


def test_nt_xent_equals_the_reference_loss():
    z = np.random.default_rng(0).normal(size=(16, 8))
    ours = nt_xent(torch.from_numpy(z[:8]), torch.from_numpy(z[8:]), 0.5)
    assert float(ours) == pytest.approx(_reference_contrastive_loss(z, 0.5), rel=1e-9)


def test_projection_head_is_the_references():
    """tf2/model.py with num_proj_layers = 3 on 512-d features: two (512x512 dense, BN γ β, ReLU)
    and a 512x128 dense with BN γ only: 2 (262,144 + 1,024) + 65,536 + 128 = 592,000 parameters."""
    from methods.simclr import ProjectionHead

    head = ProjectionHead(512, 128, 3)
    assert sum(p.numel() for p in head.parameters()) == 592_000
    bns = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 3 and bns[-1].bias is None and all(b.bias is not None for b in bns[:2])
    assert not any(isinstance(m, torch.nn.Linear) and m.bias is not None for m in head.modules())
    head.train()
    out = head(torch.randn(64, 512) * 3 + 1)
    torch.testing.assert_close(out.mean(0), torch.zeros(128), atol=1e-5, rtol=0)  # BN on the output, no β
    assert SimCLRGauss.defaults["backbone"] == "wrn28" and SimCLRGauss.defaults["widen"] == 2  # DRL App. F


def test_nt_xent_prefers_matching_views():
    a = torch.eye(4)
    assert float(nt_xent(a, a, 0.5)) < float(nt_xent(a, a.roll(1, 0), 0.5))


def test_random_resized_crop_keeps_the_shape_and_is_seeded():
    x = torch.rand(5, 3, 16, 16)
    a = random_resized_crop(x, torch.Generator().manual_seed(1))
    b = random_resized_crop(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)


def _view_similarity(model, x, seed):
    """Mean cosine similarity in the contrastive embedding z = g(f(view)): same image, and different images."""
    for net in model._nets():
        net.eval()
    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        z1 = torch.nn.functional.normalize(model.head_(model._representation(model.views(xt, g))), dim=1)
        z2 = torch.nn.functional.normalize(model.head_(model._representation(model.views(xt, g))), dim=1)
    sim = z1 @ z2.T
    positive = sim.diag().mean()
    negative = (sim.sum() - sim.diag().sum()) / (len(x) * (len(x) - 1))
    return float(positive), float(negative)


@pytest.mark.parametrize("cls", [SimCLR, SimCLRGauss])
def test_two_views_of_one_image_end_up_closer_than_views_of_different_images(cls, tiny_data):
    x = tiny_data.images(np.arange(16))
    untrained = _view_similarity(cls.from_preset("tiny", steps=1, batch_size=16).fit(tiny_data, seed=0), x, seed=5)
    trained = _view_similarity(cls.from_preset("tiny", steps=150, batch_size=16).fit(tiny_data, seed=0), x, seed=5)
    gap = trained[0] - trained[1]
    assert gap > 0.2 and gap > untrained[0] - untrained[1] + 0.2


def test_simclr_declares_it_cannot_generate_and_fid_is_skipped(tiny_data):
    from bench.evaluation import evaluate

    model = SimCLR.from_preset("tiny", **FAST).fit(tiny_data, seed=0)
    assert not {"sample", "decode", "reconstruct"} & set(model.capabilities)
    with pytest.raises(NotGenerativeError, match="SimCLR cannot generate images"):
        model.sample(2)
    rows = evaluate("fid", {}, model, tiny_data, 0, {"model_id": "m"})
    assert [r["status"] for r in rows] == ["skipped"] and "'sample'" in rows[0]["reason"]


# -- the downstream protocol -----------------------------------------------------------------
class _Labelled:
    """A labelled dataset whose images are their class id (for a fake encoder)."""

    def __init__(self, n=600, classes=3):
        self.y = np.arange(n) % classes

    def __len__(self):
        return len(self.y)

    def labels(self, idx):
        return self.y[np.asarray(idx)]

    def images(self, idx):
        return self.y[np.asarray(idx)].astype(np.float32)[:, None]


def test_latent_probe_scores_every_t_and_finds_the_best():
    data = _Labelled()

    def encode(x, t=None):  # the class plus noise that grows with |t - 0.3|
        rng = np.random.default_rng(int(1000 * (t or 0)))
        return np.concatenate([x, np.zeros_like(x)], 1) + rng.normal(0, 0.05 + 3 * abs((t or 0) - 0.3), (len(x), 2))

    out = latent_probe(data, TimedEncoder(encode, True), 0, num_train=300, num_test=200, num_val=100, epochs=30,
                       few_shot=[30], t_values=[0.0, 0.3, 1.0])
    assert out["probe_mlp_best_t"] == 0.3 and out["probe_mlp"] == out["probe_mlp_t0.3"] > 0.9
    assert out["probe_mlp_t1.0"] < 0.6 and {"probe_svc30_t0.0", "probe_svc30"} <= set(out)
    static = latent_probe(data, TimedEncoder(lambda x: encode(x, 0.3), False), 0, num_train=300, num_test=200,
                          epochs=30, few_shot=[30])
    assert set(static) == {"probe_mlp", "probe_svc30"}


def test_the_headline_t_is_chosen_on_validation_not_on_the_test_split():
    """An encoder that is perfect on the test images at t = 0.0 but label-flipped on the
    validation images there, and good everywhere at t = 0.5: choosing t on the test split
    (the max of the test accuracies) would report t = 0.0 and accuracy 1; the headline must
    be t = 0.5's test accuracy."""
    data = _Labelled(n=900)
    train, test, val = probe_splits(len(data), 0, 300, 200, 200)
    assert not (set(train) & set(test) or set(train) & set(val) or set(test) & set(val))
    index = np.arange(len(data))
    where = {"val": np.isin(index, val)}

    class Indexed(_Labelled):
        def images(self, idx):
            return np.asarray(idx, np.float32)[:, None]  # the encoder reads the image's index

    def encode(x, t=None):
        i = x[:, 0].astype(int)
        y = data.y[i].astype(np.float64)
        rng = np.random.default_rng(int(10 * t) + len(i))
        if t == 0.0:  # the class, but the validation images show another class
            y = np.where(where["val"][i], (y + 1) % 3, y)
            return np.stack([y, np.zeros_like(y)], 1) + rng.normal(0, 0.01, (len(i), 2))
        return np.stack([y, np.zeros_like(y)], 1) + rng.normal(0, 0.45, (len(i), 2))

    out = latent_probe(Indexed(n=900), TimedEncoder(encode, True), 0, num_train=300, num_test=200, num_val=200,
                       epochs=60, few_shot=[60], t_values=[0.0, 0.5])
    assert out["probe_mlp_t0.0"] > 0.95 > out["probe_mlp_t0.5"] > 0.6  # the trap is there
    assert out["probe_mlp_best_t"] == 0.5 and out["probe_mlp"] == out["probe_mlp_t0.5"]
    assert out["probe_svc60"] == out["probe_svc60_t0.5"]


def test_the_report_plots_accuracy_against_t(tmp_path):
    from bench.report import _probe_t_plots

    rows = []
    for t in (0.0, 0.5, 1.0):
        rows.append({"dataset": "d", "method": "drl", "config_id": "c1", "metric": f"probe_mlp_t{t:.1f}", "value": t,
                     "status": "ok"})
    rows.append({"dataset": "d", "method": "ae", "config_id": "c2", "metric": "probe_mlp", "value": 0.4, "status": "ok"})
    _probe_t_plots(pd.DataFrame(rows), tmp_path)
    assert (tmp_path / "probe_t__d.png").is_file()
