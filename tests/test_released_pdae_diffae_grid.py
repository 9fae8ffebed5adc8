"""PDAE / DiffAE checkpoints as grid stages: ``pretrained`` on ``ddpm``, ``pdae`` and ``diffae`` (bench.released.convert).

Tiny networks with the authors' block layout (``resample = "resblock"``) and multi-head attention, so
that the per-key rearrangements (1×1 ``Conv1d`` weights, the legacy ``qkv`` head order) are exercised;
the authors'-format files are written from our layout functions with random values.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.adapter import NotGenerativeError
from bench.config import ConfigError, load_config
from bench.released import _keymap as km
from bench.released import convert as R
from bench.released import diffae as rdiffae
from bench.released import pdae as rpdae
from bench.released.checkpoint import CheckpointError, TensorInfo, read_layout, read_tensors
from bench.runner import run_profile
from methods.diffae import DiffAE
from methods.pdae import PDAE, pdae_dpm_params
from tests import plugin_stages

SHAPE = (1, 16, 16)  # tiny-bars
#: PDAE's tiny preset with the authors' blocks, attention at 8×8 with 2 heads in the DPM and in the encoder
PDAE_TINY = {**PDAE.presets["tiny"], "resample": "resblock", "attention_resolutions": [8], "num_heads": 2,
             "enc_attention_resolutions": [8], "enc_num_heads": 2}
DIFFAE_TINY = {**DiffAE.presets["tiny"], "resample": "resblock", "attention_resolutions": [8],
               "enc_attention_resolutions": [8]}


def test_the_authors_layouts_are_consumed_exactly_through_the_releases():
    """PDAE's CelebA-64 autoencoder checkpoint: its ddpm (the decoder's frozen DPM) and pdae stages read every key
    once; its DPM checkpoint fills the ddpm; DiffAE's latent checkpoint fills diffae, its latent DDPM included."""
    from methods.ddpm import DDPM

    def info(layout):
        return {k: TensorInfo(tuple(v), "float32") for k, v in layout.items()}

    layouts = rpdae.load_layout()
    dpm = R.skeleton("ddpm", DDPM(**DDPM.presets["released-pdae-celeba64"]).get_params(), (3, 64, 64), {})
    pdae = R.skeleton("pdae", PDAE(**PDAE.presets["released"]).get_params(), (3, 64, 64), {"dpm": dpm})
    taken = []
    for method, skel in (("ddpm", dpm), ("pdae", pdae)):
        plan_ = R.conversion(R.release_for(method)(skel.get_params()), skel, info(layouts["pdae"]), "checkpoint.pt")
        assert set(plan_.slots.values()) | set(plan_.left) == set(layouts["pdae"])  # the other stage's: explained
        taken += plan_.slots.values()
    assert sorted(taken) == sorted(layouts["pdae"]) and len(taken) == 638  # 356 frozen DPM + 282 encoder and G
    plan_ = R.conversion(R.release_for("ddpm")(dpm.get_params()), dpm, info(layouts["dpm"]), "checkpoint.pt")
    assert sorted(plan_.slots.values()) == sorted(layouts["dpm"])
    del dpm, pdae
    diffae = R.skeleton("diffae", DiffAE(**DiffAE.presets["released-celeba64"]).get_params(), (3, 64, 64), {})
    layout = rdiffae.load_layout(latent=True)
    plan_ = R.conversion(R.release_for("diffae")(diffae.get_params()), diffae, info(layout), "last.ckpt")
    assert len(plan_.slots) == 568 and len(plan_.left) == 18  # the left: MLPLNAct's cond_layers.1 copies
    assert all(".cond_layers.1." in k for k in plan_.left) and set(plan_.slots.values()) | set(plan_.left) == set(layout)


def _pdae_params(**extra) -> dict:
    return PDAE(**{**PDAE_TINY, **extra}).get_params()


def _dpm_params(pdae_params: dict) -> dict:
    from methods.ddpm import DDPM
    return DDPM(**{**DDPM.presets["tiny"], **pdae_dpm_params(pdae_params)}).get_params()


def _nest(flat: dict) -> dict:
    """``{"a.b.c": t}`` → ``{"a": {"b.c": t}}`` (the authors' torch.save of state dicts by network)."""
    out: dict = {}
    for key, value in flat.items():
        top, rest = key.split(".", 1)
        out.setdefault(top, {})[rest] = value
    return out


def _pdae_file(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A PDAE trained-models/autoencoder checkpoint: random EMA weights, non-EMA copies, optimiser and scaler."""
    gen = torch.Generator().manual_seed(seed)
    flat = {k: torch.randn(shape, generator=gen) * 0.1 for k, shape in rpdae.layout(_pdae_params(), SHAPE).items()}
    nested = _nest(flat)
    nested.update({"encoder": {k: torch.zeros(1) for k in nested["ema_encoder"]}, "decoder": {"out.2.bias": torch.zeros(1)},
                   "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-4}]},
                   "scaler": {"scale": 1.0}})
    torch.save(nested, path)
    return flat


def _convert_pdae(path: Path):
    params = _pdae_params()
    dpm = R.convert("ddpm", path, _dpm_params(params), SHAPE, {})
    return dpm, R.convert("pdae", path, params, SHAPE, {"dpm": dpm})


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_pdae_checkpoint_converts_like_the_key_map_and_exports_back_unchanged(tmp_path):
    path = tmp_path / "checkpoint.pt"
    flat = _pdae_file(path)
    dpm, model = _convert_pdae(path)
    free = rpdae.to_ours(read_tensors(path), _pdae_params(), SHAPE)  # the free function: the same rules
    assert _equal(dpm.unet_.state_dict(), free["unet"])
    assert _equal(model.encoder_.state_dict(), free["encoder"]) and _equal(model.shift_.state_dict(), free["shift"])
    # a 2-head qkv: the authors' legacy head order is permuted into ours, not merely reshaped
    key = next(k for k in flat if k.startswith("ema_encoder.") and k.endswith(".qkv.weight"))
    ours_key = next(k for k, (ref, _) in rpdae.encoder_rules(model.encoder_, "ema_encoder.").items() if ref == key)
    ours = model.encoder_.state_dict()[ours_key]
    assert torch.equal(ours, km.to_ours_tensor("qkv:2", flat[key], tuple(ours.shape)))
    assert not torch.equal(ours, flat[key].reshape(ours.shape))
    # export -> convert -> export is the identity (the ddpm's keys named as in the file it came from)
    exported = {**R.export("ddpm", dpm, read_layout(path)), **R.export("pdae", model)}
    assert _equal(exported, flat)
    assert set(R.export("ddpm", dpm)) == set(rpdae.dpm_layout(dpm.get_params(), SHAPE))  # bare: ema_denoise_fn.*
    again = tmp_path / "again.pt"
    torch.save(_nest(exported), again)
    dpm2, model2 = _convert_pdae(again)
    assert _equal({**R.export("ddpm", dpm2, read_layout(again)), **R.export("pdae", model2)}, flat)
    # the release has no latent DDPM: codes cannot be sampled (FID is a skipped row), encoding works
    with pytest.raises(NotGenerativeError, match="no latent DDPM"):
        model.sample(2)
    assert model.encode(torch.rand(3, *SHAPE).numpy()).shape == (3, model.latent_dim)


def test_a_pdae_dpm_file_converts_into_ddpm(tmp_path):
    params = _dpm_params(_pdae_params())
    gen = torch.Generator().manual_seed(1)
    flat = {k: torch.randn(shape, generator=gen) for k, shape in rpdae.dpm_layout(params, SHAPE).items()}
    path = tmp_path / "dpm.pt"
    torch.save({"step": 7, **_nest(flat), "denoise_fn": {"out.2.bias": torch.zeros(1)}}, path)
    dpm = R.convert("ddpm", path, params, SHAPE, {})
    assert _equal(dpm.unet_.state_dict(), rpdae.dpm_to_ours(read_tensors(path), params, SHAPE)["unet"])
    assert _equal(R.export("ddpm", dpm), flat)


def _check(path: Path, method: str = "pdae", **extra):
    params = _pdae_params(**extra)
    dpm = R.skeleton("ddpm", _dpm_params(params), SHAPE, {})
    skel = dpm if method == "ddpm" else R.skeleton("pdae", params, SHAPE, {"dpm": dpm})
    return R.check(method, path, skel.get_params(), skel)


def test_a_wrong_shape_a_missing_or_extra_key_and_conv_resampling_are_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    flat = _pdae_file(path)
    assert _check(path).slots and _check(path, "ddpm").slots

    def changed(change) -> Path:
        state = dict(flat)
        change(state)
        out = tmp_path / "changed.pt"
        torch.save(_nest(state), out)
        return out

    qkv = next(k for k in flat if k.startswith("ema_encoder.") and k.endswith(".qkv.weight"))
    o, i, _ = flat[qkv].shape
    wrong = changed(lambda s: s.__setitem__(qkv, torch.zeros(o, i, 1, 1)))  # our Conv2d shape, not the authors'
    with pytest.raises(CheckpointError, match=rf"key '{qkv}' has shape \({o}, {i}, 1, 1\), expected \({o}, {i}, 1\)"):
        _check(wrong)
    missing = changed(lambda s: s.pop("ema_decoder.shift_out.2.weight"))
    with pytest.raises(CheckpointError, match=r"key 'ema_decoder\.shift_out\.2\.weight' is missing"):
        _check(missing)
    frozen = changed(lambda s: s.pop("ema_decoder.out.2.weight"))  # the frozen DPM: the dpm component's key
    with pytest.raises(CheckpointError, match=r"key 'ema_decoder\.out\.2\.weight' is missing \(it holds ddpm's unet"):
        _check(frozen, "ddpm")
    extra = changed(lambda s: s.__setitem__("ema_decoder.something_new.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"'ema_decoder\.something_new\.weight' is not consumed"):
        _check(extra)
    with pytest.raises(CheckpointError, match=r"pdae: these hyperparameters do not build the authors' networks.*"
                                              r"resample = 'resblock'"):
        _check(path, resample="conv")


def test_a_diffae_latent_checkpoint_converts_with_its_latent_ddpm_and_exports_back(tmp_path):
    params = DiffAE(**DIFFAE_TINY).get_params()
    gen = torch.Generator().manual_seed(2)
    flat = {k: torch.randn(shape, generator=gen) for k, shape in rdiffae.layout(params, SHAPE, latent=True).items()}
    km.add_duplicates(flat, f"{rdiffae.PREFIX}latent_net.")
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {**{k[len("state_dict."):]: v for k, v in flat.items()},
                               "x_T": torch.zeros(2, *SHAPE), "model.out.2.bias": torch.zeros(1)},
                "epoch": 3, "global_step": 9, "optimizer_states": [{"state": {}}]}, path)
    model = R.convert("diffae", path, params, SHAPE, {})
    free = rdiffae.adapter_state(rdiffae.to_ours(read_tensors(path), params, SHAPE))
    assert _equal(model.unet_.state_dict(), free["nets"]["unet"]) and _equal(model.latent_net_.state_dict(),
                                                                              free["latent"]["net"])
    assert torch.equal(model.z_std_, flat["state_dict.conds_std"][0])
    assert _equal(R.export("diffae", model), flat)  # with the cond_layers.1 copies
    assert model.sample(2).shape == (2, *SHAPE)  # a latent DDPM: codes can be sampled
    dup = next(k for k in flat if ".cond_layers.1." in k)
    torch.save({"state_dict": {**{k[len("state_dict."):]: v for k, v in flat.items()},
                               dup[len("state_dict."):]: flat[dup] + 1}}, path)
    with pytest.raises(CheckpointError, match=repr(dup).replace(".", r"\.")):
        R.convert("diffae", path, params, SHAPE, {})


GRID = """
[profiles.t]
methods = ["pdae"]
datasets = ["tiny-bars"]
seeds = [0]
preset = "tiny"
metrics = ["dci"]
device = "cpu"
results = "out"
[profiles.t.overrides.pdae]
pretrained = "{path}"
resample = "resblock"
attention_resolutions = [8]
num_heads = 2
enc_attention_resolutions = [8]
enc_num_heads = 2
[profiles.t.metric_params.dci]
num_train = 64
num_test = 32
"""


def _grid(folder: Path, ckpt: Path):
    assert "tiny-bars" in plugin_stages.DATASETS  # registered by importing the test plugin
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.toml").write_text(textwrap.dedent(GRID.format(path=ckpt)))
    config = load_config(folder / "bench.toml")
    profile = config.profile("t")
    return profile, config.results_dir(profile)


def test_a_grid_scores_a_released_pdae_and_never_converts_it_twice(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    _pdae_file(ckpt)
    profile, out = _grid(tmp_path, ckpt)
    first = run_profile(profile, out, progress=False, report=False)
    assert first.failed == [] and first.fitted == 0 and first.ran == 3  # ddpm and pdae converted; DCI scored
    rows = pd.read_csv(out / "results.csv")
    models = rows[rows["stage"] == "model"]
    assert set(models["method"]) == {"ddpm", "pdae"} and models["metric"].eq("convert_seconds").all()
    dci = rows[rows["stage"] == "evaluation"]
    assert len(dci) >= 3 and dci["status"].eq("ok").all() and dci["value"].between(0, 1).all(), dci[["metric", "value"]]
    assert dci["weights"].str.contains(str(ckpt)).all() and dci["weights"].str.contains("sha256").all()
    again = run_profile(profile, out, progress=False, report=False)
    assert again.ran == 0 and again.skipped == 3


def test_a_pdae_grid_stops_before_any_work_on_a_file_of_another_layout(tmp_path):
    other = tmp_path / "dpm-only.pt"  # a DPM checkpoint where the autoencoder's is expected
    torch.save({"ema_denoise_fn": {"out.2.weight": torch.zeros(1)}}, other)
    profile, out = _grid(tmp_path, other)
    with pytest.raises(ConfigError, match=r"dpm-only\.pt: key 'ema_denoise_fn\.time_embed\.0\.weight' is missing.*"
                                          r"nothing was run"):
        run_profile(profile, out, progress=False, report=False)
