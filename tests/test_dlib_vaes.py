"""FactorVAE, β-TCVAE, DIP-VAE-I/II and AnnealedVAE against disentanglement_lib's formulas.

Oracles: each loss is recomputed here in numpy, written down from
``disentanglement_lib/methods/unsupervised/vae.py`` (``BaseVAE.model_fn``, ``compute_gaussian_kl``,
``total_correlation``, ``compute_covariance_z_mean``, ``regularize_diag_off_diag_dip``,
``anneal``, ``FactorVAE.model_fn``) and ``methods/shared/architectures.py: fc_discriminator``
— never by calling our own loss; β-TCVAE's estimator is checked on codes worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench import registry
from methods.dlib_vaes import annealed_capacity, total_correlation
from methods.factorvae import permute_dims

STUDY = ("factor-vae", "beta-tcvae", "dip-vae-i", "dip-vae-ii", "annealed-vae")
SHAPE = (1, 16, 16)


# -- numpy oracles (dlib's formulas) ----------------------------------------------------------------
def np_logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_kl(mu, logvar):  # compute_gaussian_kl: batch mean of 0.5 Σ (μ² + σ² − log σ² − 1)
    return np.mean(0.5 * np.sum(mu ** 2 + np.exp(logvar) - logvar - 1, axis=1))


def np_total_correlation(z, mu, logvar):
    log_q = -0.5 * ((z[:, None, :] - mu[None]) ** 2 * np.exp(-logvar[None]) + logvar[None] + np.log(2 * np.pi))
    log_qz_product = np_logsumexp(log_q, axis=1).sum(axis=1)
    log_qz = np_logsumexp(log_q.sum(axis=2), axis=1)
    return np.mean(log_qz - log_qz_product)


def np_dip(cov, lambda_od, lambda_d):
    diag = np.diag(cov)
    off = cov - np.diag(diag)
    return lambda_od * np.sum(off ** 2) + lambda_d * np.sum((diag - 1) ** 2)


def np_cov_mean(mu):
    return np.mean(mu[:, :, None] * mu[:, None, :], axis=0) - np.outer(mu.mean(0), mu.mean(0))


def np_bernoulli(logits, x):  # bernoulli_loss with logits: Σ_pixels [max(l,0) − l·x + log(1 + e^−|l|)], batch mean
    per = np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))
    return per.reshape(len(x), -1).sum(1).mean()


def np_discriminator(net: nn.Module, z: np.ndarray) -> np.ndarray:
    h = z
    for layer in net.hidden:
        h = h @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
        h = np.where(h > 0, h, 0.2 * h)  # tf.nn.leaky_relu's default slope
    return h @ net.logits.weight.detach().double().numpy().T + net.logits.bias.detach().double().numpy()


# -- fixtures -------------------------------------------------------------------------------------
class Fixed(nn.Module):
    """A network stand-in that returns a fixed output (the "fixed network outputs" of the oracle test)."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):  # noqa: ARG002
        return self.out + 0 * self.anchor


def built(name: str, **params):
    cls = registry.methods().load(name)
    model = cls.from_preset("tiny", **params)
    torch.manual_seed(0)
    model._build(SHAPE)
    return model


@pytest.fixture()
def batch():
    rng = np.random.default_rng(0)
    b, d = 8, 10
    mu = rng.normal(size=(b, d))
    logvar = rng.normal(scale=0.5, size=(b, d))
    noise = rng.normal(size=(b, d))
    x = (rng.random((b, *SHAPE)) < 0.3).astype(np.float64)
    logits = rng.normal(size=(b, *SHAPE))
    return mu, logvar, noise, x, logits


def our_loss(model, mu, logvar, noise, x, logits, step: int = 0) -> float:
    model.encoder_ = Fixed(torch.from_numpy(np.concatenate([mu, logvar], 1)).float())
    model.decoder_ = Fixed(torch.from_numpy(logits).float())
    model.step_ = step
    loss = model._loss(torch.from_numpy(x).float(), torch.from_numpy(noise).float(), torch.Generator())
    return float(loss.detach())


# -- the losses -----------------------------------------------------------------------------------
def test_beta_tcvae_estimator_on_hand_made_codes():
    # two codes, two latents, unit variances, z = μ: by hand, for either j,
    # log q(z_j) − Σ_l log q(z_jl) = log(1 + e^−1) − 2·log(1 + e^−1/2) (the log 2π terms cancel)
    mu = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    expected = math.log(1 + math.exp(-1)) - 2 * math.log(1 + math.exp(-0.5))
    assert float(total_correlation(mu, mu, torch.zeros_like(mu))) == pytest.approx(expected, abs=1e-6)
    # with a single latent dimension the product of marginals is the joint: exactly 0
    one = torch.tensor([[0.3], [-1.2], [2.0]])
    assert float(total_correlation(one, one * 0.5, torch.full_like(one, -0.3))) == pytest.approx(0.0, abs=1e-6)


def test_beta_tcvae_loss_equals_dlib(batch):
    mu, logvar, noise, x, logits = batch
    model = built("beta-tcvae", beta=6.0)
    z = mu + np.exp(0.5 * logvar) * noise
    expected = np_bernoulli(logits, x) + (6.0 - 1.0) * np_total_correlation(z, mu, logvar) + np_kl(mu, logvar)
    assert our_loss(model, *batch) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name, factor", [("dip-vae-i", 10.0), ("dip-vae-ii", 1.0)])
def test_dip_vae_loss_equals_dlib(batch, name, factor):
    mu, logvar, noise, x, logits = batch
    model = built(name, lambda_od=5.0)
    assert model.lambda_d_factor == factor  # the study's lambda_d_factor: 10 for DIP-VAE-I, 1 for DIP-VAE-II
    cov = np_cov_mean(mu)
    if name == "dip-vae-ii":
        cov = np.diag(np.exp(logvar).mean(0)) + cov  # E[Cov_enc] + Cov[μ]
    expected = np_bernoulli(logits, x) + np_kl(mu, logvar) + np_dip(cov, 5.0, factor * 5.0)
    assert our_loss(model, *batch) == pytest.approx(expected, rel=1e-5)


def test_annealed_vae_capacity_schedule_and_loss(batch):
    assert [annealed_capacity(25.0, s, 100) for s in (0, 1, 50, 100, 250)] == [0.0, 0.25, 12.5, 25.0, 25.0]
    mu, logvar, noise, x, logits = batch
    model = built("annealed-vae", gamma=1000.0, c_max=25.0, iteration_threshold=100)
    for step in (0, 40, 100, 400):
        c = min(25.0, 25.0 * step / 100)
        expected = np_bernoulli(logits, x) + 1000.0 * abs(np_kl(mu, logvar) - c)
        assert our_loss(model, *batch, step=step) == pytest.approx(expected, rel=1e-5)


def test_factor_vae_loss_equals_dlib(batch):
    mu, logvar, noise, x, logits = batch
    model = built("factor-vae", gamma=40.0)
    model._setup_extra(torch.device("cpu"))
    z = mu + np.exp(0.5 * logvar) * noise
    d = np_discriminator(model.discriminator_, z)
    expected = np_bernoulli(logits, x) + np_kl(mu, logvar) + 40.0 * np.mean(d[:, 0] - d[:, 1])
    assert our_loss(model, *batch) == pytest.approx(expected, rel=1e-5)
    assert [type(m).__name__ for m in model.discriminator_.modules()].count("Linear") == 3  # tiny: 2 hidden + logits
    paper = registry.methods().load("factor-vae").from_preset("paper")
    paper._build((1, 64, 64))
    assert [(m.in_features, m.out_features) for m in paper.discriminator_.modules() if isinstance(m, nn.Linear)] == \
        [(10, 1000)] + [(1000, 1000)] * 5 + [(1000, 2)]  # fc_discriminator: six dense 1,000 + logits


def test_discriminator_objective_equals_dlib():
    from methods.factorvae import discriminator_objective

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    softmax = lambda v: np.exp(v) / np.exp(v).sum(1, keepdims=True)  # noqa: E731
    expected = 0.5 * np.mean(np.log(softmax(a)[:, 0])) + 0.5 * np.mean(np.log(softmax(b)[:, 1]))
    got = float(discriminator_objective(torch.from_numpy(a), torch.from_numpy(b)))
    assert got == pytest.approx(expected, rel=1e-10)


def test_permute_dims_permutes_each_dimension_independently():
    z = torch.arange(40.0).reshape(8, 5)
    out = permute_dims(z, torch.Generator().manual_seed(0))
    for j in range(5):
        assert sorted(out[:, j].tolist()) == z[:, j].tolist()
    assert not torch.equal(out, z)
    assert len({tuple(out[:, j].argsort().tolist()) for j in range(5)}) > 1  # not one shared permutation


# -- FactorVAE's training: alternating updates on a second batch -----------------------------------
def test_factor_vae_alternates_updates_and_feeds_the_discriminator_a_second_batch(monkeypatch):
    data = registry.datasets().create("dsprites-procedural-32")
    model = registry.methods().load("factor-vae").from_preset("tiny", steps=4, log_every=2, batch_size=16)
    events: list[str] = []
    drawn: list[torch.Tensor] = []
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_draw, real_step = type(model)._draw_batch, type(model).discriminator_step

    def draw(self, *args):
        x, noise = real_draw(self, *args)
        drawn.append(x.clone())
        return x, noise

    def disc_step(self, z, z_perm):
        events.append("discriminator")
        calls.append((z.clone(), z_perm.clone()))
        return real_step(self, z, z_perm)

    monkeypatch.setattr(type(model), "_draw_batch", draw)
    monkeypatch.setattr(type(model), "discriminator_step", disc_step)
    real_adam_step = torch.optim.Adam.step

    def adam_step(opt, *a, **k):
        if opt is not getattr(model, "discriminator_optimiser_", None):
            events.append("vae")
        return real_adam_step(opt, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", adam_step)
    model.fit(data, seed=0)
    assert events == ["vae", "discriminator"] * 4
    assert len(drawn) == 8  # each step: the VAE's batch, then a second batch for the discriminator
    for i, (z, z_perm) in enumerate(calls):
        assert not torch.equal(drawn[2 * i], drawn[2 * i + 1])
        # z̃ is not a permutation of the first batch's codes: it comes from the second batch
        same = all(sorted(z_perm[:, j].tolist()) == sorted(z[:, j].tolist()) for j in range(z.shape[1]))
        assert not same


def test_factor_vae_same_batch_variant_shuffles_the_first_batch_codes(monkeypatch):
    data = registry.datasets().create("dsprites-procedural-32")
    model = registry.methods().load("factor-vae").from_preset("tiny", steps=2, log_every=1, batch_size=16,
                                                               discriminator_batch="same")
    calls = []
    real_step = type(model).discriminator_step
    monkeypatch.setattr(type(model), "discriminator_step",
                        lambda self, z, zp: (calls.append((z.clone(), zp.clone())), real_step(self, z, zp))[1])
    model.fit(data, seed=0)
    for z, z_perm in calls:
        assert all(sorted(z_perm[:, j].tolist()) == sorted(z[:, j].tolist()) for j in range(z.shape[1]))


@pytest.mark.parametrize("name", STUDY)
def test_registered_with_both_presets(name):
    cls = registry.methods().load(name)
    assert {"tiny", "paper"} <= set(cls.presets)
    paper = cls.from_preset("paper")
    assert (paper.batch_size, paper.steps, paper.lr, paper.latent_dim) == (64, 300_000, 1e-4, 10)  # the study's
