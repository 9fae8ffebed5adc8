"""Released checkpoints (bench.released): the authors' layouts convert exactly, bad files fail before any work,
and a grid scores a converted model without training it.

``tests/data/released/disdiff_shapes3d.json`` holds the key names and shapes of DisDiff's
``disdiff.ckpt`` as the authors' code builds them (written by ``benchmarks/released_layouts.py``);
the files here are built from it or in its layout, with random values.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import tests.plugin_stages  # noqa: F401  (tiny-bars)
from bench import registry
from bench.config import ConfigError, load_config
from bench.released import convert as R
from bench.released.checkpoint import CheckpointError, TensorInfo, read_layout
from bench.released.ldm_family import SHIFT
from bench.runner import run_profile
from bench.stages import plan

LAYOUT = Path(__file__).parent / "data" / "released" / "disdiff_shapes3d.json"
STACK = (("vq-f4", "first_stage"), ("ldm", "ldm"), ("disdiff", None))


def params(method: str, preset: str) -> dict:
    return registry.methods().load(method).from_preset(preset).get_params()


def skeletons(preset: str, shape) -> dict:
    vq = R.skeleton("vq-f4", params("vq-f4", preset), shape, {})
    ldm = R.skeleton("ldm", params("ldm", preset), shape, {"first_stage": vq})
    return {"vq-f4": vq, "ldm": ldm, "disdiff": R.skeleton("disdiff", params("disdiff", preset), shape, {"ldm": ldm})}


def test_the_authors_disdiff_layout_is_consumed_exactly_by_the_paper_networks():
    keys = json.loads(LAYOUT.read_text())["keys"]
    layout = {f"state_dict.{k}": TensorInfo(tuple(v), "float32") for k, v in keys.items()}
    taken: list[str] = []
    for method, skel in skeletons("paper", (3, 64, 64)).items():
        plan_ = R.conversion(R.release_for(method)(skel.get_params()), skel, layout, "disdiff.ckpt")
        taken += plan_.slots.values()
    assert len(taken) == len(set(taken)) == 969  # no tensor read twice; 205 first stage + 414 DPM + 350 DisDiff
    left = set(layout) - set(taken)
    live_of_ema = {k for k in left if k.startswith("state_dict.model.diffusion_model.")}
    assert all(k.split(".")[3] in ("shift_middle_block", "shift_output_blocks", "shift_out", "repre_embed",
                                   "part_latents", "part_emb", "scale_factor") for k in live_of_ema)
    assert len(left - live_of_ema) == 17  # 14 schedule buffers, scale_factor, LitEma's decay and num_updates


def _release_file(tmp_path: Path, shape=(1, 16, 16), ema_offset: float = 0.0) -> tuple[Path, dict, dict]:
    """A tiny DisDiff stack in the authors' Lightning layout: random live weights, EMA copies = live + offset."""
    torch.manual_seed(0)
    skels = skeletons("tiny", shape)
    state: dict[str, torch.Tensor] = {}
    for method, skel in skels.items():
        out = R.export(method, skel)
        state.update({("first_stage_model." + k if method == "vq-f4" else k): v for k, v in out.items()})
    state = {k: (0.5 + torch.rand_like(v) if k.endswith("running_var") else torch.randn_like(v) / max(1, v[0].numel() if v.ndim else 1) ** 0.5)
             if v.is_floating_point() else v for k, v in state.items()}
    state["scale_factor"] = torch.tensor(0.75)
    ema = {"model_ema." + k[len("model."):].replace(".", ""): v + ema_offset
           for k, v in state.items() if k.startswith(tuple("model.diffusion_model." + m for m in SHIFT))}
    state.update({**ema, "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7)})
    path = tmp_path / "disdiff.ckpt"

    class Config:  # Lightning pickles hyperparameters as arbitrary objects: read inert, never run
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"config": Config()}}, path)
    return path, state, {m: s.get_params() for m, s in skels.items()}


def _convert_stack(path: Path, ps: dict, shape=(1, 16, 16)) -> dict:
    vq = R.convert("vq-f4", path, ps["vq-f4"], shape, {})
    ldm = R.convert("ldm", path, ps["ldm"], shape, {"first_stage": vq})
    return {"vq-f4": vq, "ldm": ldm, "disdiff": R.convert("disdiff", path, ps["disdiff"], shape, {"ldm": ldm})}


def test_a_released_file_converts_with_its_ema_weights_and_exports_back_unchanged(tmp_path, capsys):
    path, state, ps = _release_file(tmp_path, ema_offset=1.0)
    got = _convert_stack(path, ps)
    assert "must never run" not in capsys.readouterr().out
    assert got["ldm"].scale_factor_ == got["disdiff"].scale_factor_ == pytest.approx(0.75)
    shift = got["disdiff"].shift_.state_dict()
    key = next(k for k in shift if k.endswith("weight"))
    live = state[R.release_for("disdiff")(ps["disdiff"]).reference_key("shift", key, {})]
    assert torch.equal(shift[key], live + 1.0)  # LDM evaluates with the EMA: the EMA copy is what we load
    layout = read_layout(path)
    exported: dict[str, torch.Tensor] = {}
    for method, adapter in got.items():
        exported.update(R.export(method, adapter, {k[len("state_dict."):]: v for k, v in layout.items()}))
    for k, v in exported.items():  # export -> import -> export is the identity, tensor for tensor
        assert torch.equal(v, state[k]), k
    again = tmp_path / "again.ckpt"
    torch.save({"state_dict": exported}, again)
    twice = _convert_stack(again, ps)
    for method in got:
        assert R.export(method, twice[method]).keys() == R.export(method, got[method]).keys()
        for k, v in R.export(method, twice[method]).items():
            assert torch.equal(v, R.export(method, got[method])[k]), (method, k)
    x = torch.rand(3, 1, 16, 16).numpy()
    assert got["disdiff"].encode(x).shape == (3, ps["disdiff"]["num_units"] * ps["disdiff"]["unit_dim"])


def _rewrite(path: Path, change) -> Path:
    payload = torch.load(path, weights_only=False)
    change(payload["state_dict"])
    out = path.with_name("changed.ckpt")
    torch.save({"state_dict": payload["state_dict"]}, out)
    return out


def _check(path: Path, ps: dict, method: str = "disdiff", shape=(1, 16, 16)):
    skels = skeletons("tiny", shape)
    return R.check(method, path, ps[method], skels[method])


def test_a_renamed_key_a_wrong_shape_and_a_truncated_file_are_named(tmp_path):
    path, state, ps = _release_file(tmp_path)
    key = "cond_stage_model.encoder.0.weight"
    assert key in state
    renamed = _rewrite(path, lambda s: s.__setitem__("cond_stage_model.encoder.0.weights", s.pop(key)))
    with pytest.raises(CheckpointError, match=r"'state_dict\.cond_stage_model\.encoder\.0\.weight' is missing"):
        _check(renamed, ps)
    wrong = _rewrite(path, lambda s: s.__setitem__(key, torch.zeros(2, 2)))
    with pytest.raises(CheckpointError, match=r"'state_dict\.cond_stage_model\.encoder\.0\.weight' has shape \(2, 2\)"):
        _check(wrong, ps)
    extra = _rewrite(path, lambda s: s.__setitem__("cond_stage_model.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"'state_dict\.cond_stage_model\.extra\.weight' is not consumed"):
        _check(extra, ps)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt: not a complete torch\.save checkpoint"):
        _check(cut, ps)


GRID = """
[profiles.t]
methods = ["disdiff"]
datasets = ["tiny-bars"]
seeds = [0]
preset = "tiny"
metrics = ["dci"]
device = "cpu"
results = "out"
[profiles.t.overrides.disdiff]
pretrained = "{path}"
[profiles.t.metric_params.dci]
num_train = 64
num_test = 32
"""


def _grid(tmp_path: Path, ckpt: Path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(GRID.format(path=ckpt)))
    config = load_config(path)
    profile = config.profile("t")
    return profile, config.results_dir(profile)


def test_a_grid_scores_a_released_checkpoint_and_never_converts_it_twice(tmp_path):
    ckpt, _, _ = _release_file(tmp_path)
    profile, out = _grid(tmp_path, ckpt)
    first = run_profile(profile, out, progress=False, report=False)
    assert first.failed == [] and first.fitted == 0 and first.ran == 4  # vq-f4, ldm, disdiff converted; DCI scored
    rows = pd.read_csv(out / "results.csv")
    dci = rows[rows["stage"] == "evaluation"]
    assert len(dci) >= 3 and dci["status"].eq("ok").all() and dci["value"].between(0, 1).all(), dci[["metric", "value"]]
    assert dci["weights"].str.contains(str(ckpt)).all() and dci["weights"].str.contains("sha256").all()
    again = run_profile(profile, out, progress=False, report=False)
    assert again.ran == 0 and again.skipped == 4
    ids = {s.id for s in plan(profile).models}
    changed = tmp_path / "other.ckpt"
    changed.write_bytes(ckpt.read_bytes() + b"")  # the same bytes elsewhere: the same model
    assert {s.id for s in plan(_grid(tmp_path / "same", changed)[0]).models} == ids
    (tmp_path / "o").mkdir()
    other, _, _ = _release_file(tmp_path / "o", ema_offset=0.5)  # other weights: another model
    assert {s.id for s in plan(_grid(tmp_path / "other", other)[0]).models}.isdisjoint(ids)


def test_a_missing_or_other_format_file_stops_the_run_before_any_work(tmp_path):
    profile, out = _grid(tmp_path, tmp_path / "nowhere.ckpt")
    with pytest.raises(ConfigError, match=r"pretrained = '.*nowhere\.ckpt'.*no such checkpoint file"):
        run_profile(profile, out, progress=False, report=False)
    other = tmp_path / "pdae.pt"  # another method's layout
    torch.save({"ema_encoder": {"conv.weight": torch.zeros(3)}}, other)
    profile, out = _grid(tmp_path, other)
    with pytest.raises(ConfigError, match=r"pdae\.pt: key 'encoder\.conv_in\.weight' is missing.*nothing was run"):
        run_profile(profile, out, progress=False, report=False)
    assert not (out / "stages").exists() or not any((out / "stages").rglob("done.json"))
