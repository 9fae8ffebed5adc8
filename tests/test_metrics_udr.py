"""UDR: relative strength on known matrices, scores on constructed model sets, the KL
threshold fix, and the runner scoring a setting's seeds together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from bench.config import Profile
from bench.metrics.udr import gaussian_kl_per_latent, relative_strength, spearman_matrix, udr_from_codes
from bench.runner import run_profile


def test_relative_strength_known_values():
    assert relative_strength(np.eye(4)) == pytest.approx(1.0)
    assert relative_strength(np.ones((4, 4))) == pytest.approx(0.25)  # every latent matches all four equally
    assert relative_strength(np.zeros((3, 3))) == 0.0  # 0/0 counts as 0, as in the reference
    # one row latent matching both column latents: each column scores 1 (one match), the
    # rows 1/2 (split between two) and 0 (no match): ((1 + 1)/2 + (1/2 + 0)/2) / 2
    m = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert relative_strength(m) == pytest.approx(0.625)
    assert relative_strength(np.zeros((0, 3))) == 0.0


def test_spearman_matrix_equals_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    b[:, 1] = a[:, 0] ** 3  # monotone: rank correlation 1
    ours = spearman_matrix(a, b)
    for i in range(3):
        for j in range(2):
            assert ours[i, j] == pytest.approx(abs(scipy.stats.spearmanr(a[:, i], b[:, j])[0]))
    assert ours[0, 1] == pytest.approx(1.0)


def _factors(n=1000, k=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, k))


@pytest.mark.parametrize("correlation", ["lasso", "spearman"])
def test_models_that_agree_up_to_permutation_and_scale_score_high(correlation):
    f = _factors()
    rng = np.random.default_rng(1)
    codes = [f[:, rng.permutation(4)] * rng.uniform(0.5, 3, size=4) * rng.choice([-1, 1], size=4) for _ in range(4)]
    codes = [c + 0.05 * rng.normal(size=c.shape) for c in codes]
    scores = udr_from_codes(codes, correlation=correlation)["model_scores"]
    assert scores.shape == (4,)
    if correlation == "lasso":  # the L1 penalty (alpha 0.1 on standardised codes) shrinks a match to 0.9
        np.testing.assert_allclose(scores, 0.9, atol=0.01)
    else:  # chance rank correlations (~0.025 at n = 1,000) between unrelated latents add to each sum
        assert ((scores > 0.9) & (scores < 1.0)).all()


def test_entangled_models_score_lower_than_disentangled_ones():
    f = _factors()
    rng = np.random.default_rng(2)
    aligned = [f[:, rng.permutation(4)] + 0.05 * rng.normal(size=f.shape) for _ in range(3)]
    rotations = [np.linalg.qr(rng.normal(size=(4, 4)))[0] for _ in range(3)]
    mixed = [f @ r + 0.05 * rng.normal(size=f.shape) for r in rotations]
    good = udr_from_codes(aligned)["model_scores"]
    bad = udr_from_codes(mixed)["model_scores"]
    assert bad.max() < good.min() - 0.2


def test_unrelated_models_score_near_zero_with_lasso():
    rng = np.random.default_rng(3)
    codes = [rng.normal(size=(1000, 5)) for _ in range(3)]
    assert (udr_from_codes(codes)["model_scores"] < 0.2).all()


def test_kl_threshold_governs_both_zeroing_and_filtering():
    """The reference zeroes latents with KL <= 0.01 but filters with kl_filter_threshold;
    here a latent with KL 0.3 under threshold 0.5 is both zeroed and filtered out."""
    f = _factors(k=3)
    rng = np.random.default_rng(4)
    codes = [np.column_stack([f, rng.normal(size=(1000, 1))]) for _ in range(3)]  # a 4th latent of noise
    kl = [np.array([2.0, 2.0, 2.0, 0.3])] * 3
    kept = udr_from_codes(codes, kl, kl_threshold=0.01)["model_scores"]
    filtered = udr_from_codes(codes, kl, kl_threshold=0.5)["model_scores"]
    # kept: the noise latents' rows and columns are ~0 and pull the mean down to 3/4 of 0.9
    np.testing.assert_allclose(kept, 0.75 * 0.9, atol=0.02)
    np.testing.assert_allclose(filtered, 0.9, atol=0.01)
    unfiltered = udr_from_codes(codes, kl, kl_threshold=0.5, filter_low_kl=False)["model_scores"]
    np.testing.assert_allclose(unfiltered, kept, atol=1e-9)


def test_all_inactive_model_scores_zero_instead_of_raising():
    f = _factors(k=2)
    scores = udr_from_codes([f, f, f], [np.zeros(2), np.ones(2), np.ones(2)])["model_scores"]
    assert scores[0] == 0.0 and scores[1] == pytest.approx(0.45, abs=0.01)  # median of (0, 0.9)


def test_gaussian_kl_per_latent():
    mean = np.array([[0.0, 1.0], [0.0, -1.0]])
    logvar = np.zeros((2, 2))
    np.testing.assert_allclose(gaussian_kl_per_latent(mean, logvar), [0.0, 0.5])


@pytest.mark.parametrize("codes, kl, match", [
    ([np.zeros((10, 2))], None, "at least 2 models"),
    ([np.zeros((10, 2)), np.zeros((9, 2))], None, "model 1 has codes for 9"),
    ([np.zeros((10, 2)), np.full((10, 2), np.nan)], None, "model 1 contain NaN"),
    ([np.zeros((10, 2)), np.zeros((10, 2))], [np.zeros(3), None], "2 latents but 3 KL"),
])
def test_malformed_inputs_are_named(codes, kl, match):
    with pytest.raises(ValueError, match=match):
        udr_from_codes(codes, kl)


def test_runner_scores_the_seeds_of_a_setting_together(tmp_path):
    profile = Profile(
        name="udr", methods=["vae", "ae"], datasets=["dsprites-procedural-32"], seeds=[0, 1, 2], preset="tiny",
        metrics=["udr"], overrides={"*": {"steps": 30}}, metric_params={"udr": {"num_data_points": 200}},
    )
    summary = run_profile(profile, tmp_path, progress=False, report=False)
    assert summary.failed == []
    frame = pd.read_csv(tmp_path / "results.csv")
    udr = frame[frame.metric == "udr"]
    assert len(udr) == 6 and (udr.status == "ok").all()
    assert udr.value.between(0, 1).all()
    assert sorted(udr.seed) == [0, 0, 1, 1, 2, 2]
    # resumed: nothing is recomputed while the set of finished seeds is unchanged
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("stages/group/*/rows.csv")}
    assert len(stamps) == 2  # one group per setting (vae, ae)
    assert run_profile(profile, tmp_path, progress=False, report=False).ran == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("stages/group/*/rows.csv")} == stamps


def test_runner_skips_udr_with_a_single_seed(tmp_path):
    profile = Profile(
        name="udr1", methods=["ae"], datasets=["dsprites-procedural-32"], seeds=[0], preset="tiny",
        metrics=["udr"], overrides={"*": {"steps": 10}},
    )
    run_profile(profile, tmp_path, progress=False, report=False)
    frame = pd.read_csv(tmp_path / "results.csv")
    row = frame[frame.metric == "udr"].iloc[0]
    assert row.status == "skipped" and "at least 2" in row.reason


def test_a_failed_udr_is_recorded_and_retried(tmp_path, monkeypatch):
    profile = Profile(
        name="udrf", methods=["ae"], datasets=["dsprites-procedural-32"], seeds=[0, 1], preset="tiny",
        metrics=["udr"], overrides={"*": {"steps": 10}}, metric_params={"udr": {"num_data_points": 100}},
    )
    import bench.metrics.udr as udr_module

    def broken(*args, **kwargs):
        raise RuntimeError("lasso exploded")

    monkeypatch.setattr(udr_module, "udr_from_codes", broken)
    summary = run_profile(profile, tmp_path, progress=False, report=False)
    assert len(summary.failed) == 1 and "lasso exploded" in summary.failed[0]
    frame = pd.read_csv(tmp_path / "results.csv")
    assert (frame[frame.metric == "udr"].status == "failed").all()
    monkeypatch.undo()
    summary = run_profile(profile, tmp_path, progress=False, report=False)
    assert summary.failed == [] and (summary.ran, summary.fitted) == (1, 0)  # the models are kept; only UDR is scored again
    frame = pd.read_csv(tmp_path / "results.csv")
    assert (frame[frame.metric == "udr"].status == "ok").all() and len(frame[frame.metric == "udr"]) == 2
    # a new UDR implementation version rescores the group (and only the group)
    from bench import registry

    monkeypatch.setitem(registry.metrics().get("udr").meta, "version", 2)
    summary = run_profile(profile, tmp_path, progress=False, report=False)
    assert (summary.ran, summary.fitted) == (1, 0)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert set(frame[frame.metric == "udr"].metric_version) == {2}
