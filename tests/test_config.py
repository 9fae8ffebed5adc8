"""bench.toml validation: every mistake is caught before training, naming file, key and a fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.config import ConfigError, load_config

GOOD = """
default_profile = "smoke"
[profiles.smoke]
methods = ["ae", "beta-vae"]
datasets = ["dsprites-procedural-32"]
seeds = [0, 1]
preset = "tiny"
metrics = ["factorvae", "dci"]
[profiles.smoke.overrides."*"]
steps = 10
[profiles.smoke.sweep.beta-vae]
beta = [1.0, 4.0]
[profiles.smoke.metric_params.dci]
num_train = 100
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_expands_the_grid(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    cells = config.profile().cells()
    # ae: 2 seeds; beta-vae: 2 betas x 2 seeds
    assert len(cells) == 6
    assert {c.params["beta"] for c in cells if c.method == "beta-vae"} == {1.0, 4.0}
    assert all(c.params["steps"] == 10 for c in cells)
    assert cells[0].metrics["dci"] == {"num_train": 100}
    from bench.stages import plan

    models = plan(config.profile()).models
    assert len({m.id for m in models}) == 6  # the hash tells every model apart
    # ...and is stable: the same config gives the same ids
    assert [m.id for m in plan(load_config(write(tmp_path, GOOD)).profile()).models] == [m.id for m in models]


def test_a_method_can_start_from_its_own_preset(tmp_path):
    text = GOOD.replace('preset = "tiny"', 'preset = "tiny"\npresets = { ae = "infodiffusion" }')
    cells = load_config(write(tmp_path, text)).profile().cells()
    ae = [c for c in cells if c.method == "ae"]
    assert {c.preset for c in ae} == {"infodiffusion"} and ae[0].params["architecture"] == "infodiffusion"
    assert ae[0].params["steps"] == 10  # overrides still apply on top
    assert {c.preset for c in cells if c.method == "beta-vae"} == {"tiny"}


def test_the_repository_bench_toml_is_valid():
    config = load_config(Path(__file__).resolve().parents[1] / "bench.toml")
    assert config.default_profile == "smoke"
    assert len(config.profile().cells()) == 8
    assert config.profile("paper").preset == "paper"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.replace('seeds = [0, 1]', 'seeds = [0, 1'), "not valid TOML"),
        (lambda s: s.replace('preset = "tiny"', 'presett = "tiny"'), r"unknown key 'profiles.smoke.presett'.*did you mean 'preset'"),
        (lambda s: s.replace('seeds = [0, 1]', 'seeds = "0, 1"'), r"profiles.smoke.seeds must be a list"),
        (lambda s: s.replace('"beta-vae"]', '"betavae"]'), r"methods\[1\]: unknown method 'betavae'.*did you mean 'beta-vae'"),
        (lambda s: s.replace('"dsprites-procedural-32"', '"dsprite-procedural-32"'), r"unknown dataset.*did you mean"),
        (lambda s: s.replace('"factorvae", "dci"', '"factor-vae", "dci"'), r"unknown metric 'factor-vae'.*did you mean 'factorvae'"),
        (lambda s: s.replace('steps = 10', 'stepz = 10'), r"overrides: .*unknown hyperparameter 'stepz'.*did you mean 'steps'"),
        (lambda s: s.replace('steps = 10', 'steps = "ten"'), r"'steps' must be int"),
        (lambda s: s.replace('beta = [1.0, 4.0]', 'beta = 4.0'), r"sweep.beta-vae.beta must be a non-empty list"),
        (lambda s: s.replace('num_train = 100', 'num_trian = 100'), r"metric_params.dci.num_trian.*did you mean 'num_train'"),
        (lambda s: s.replace('preset = "tiny"', 'preset = "huge"'), r"preset = 'huge'.*has no such preset"),
        (lambda s: s.replace('default_profile = "smoke"', 'default_profile = "smok"'), r"did you mean 'smoke'"),
        (lambda s: s.replace('seeds = [0, 1]', 'seeds = [0, 0]'), r"seeds has duplicates"),
        (lambda s: s.replace('num_train = 100', 'representation = "median"'), r"representation = 'median'; expected one of"),
        (lambda s: 'data_root = 3\n' + s, r"data_root must be a str"),
        # ranges, not only types, before anything trains
        (lambda s: s.replace('steps = 10', 'steps = 10\nlatent_dim = 0'), r"overrides: .*'latent_dim' = 0 is out of range; expected >= 1"),
        (lambda s: s.replace('steps = 10', 'steps = 10\nlr = -1.0'), r"'lr' = -1.0 is out of range; expected > 0"),
        (lambda s: s.replace('beta = [1.0, 4.0]', 'beta = [1.0, -4.0]'), r"sweep.beta-vae.beta: .*'beta' = -4.0 is out of range; expected >= 0"),
        (lambda s: s.replace('num_train = 100', 'num_train = 100\nbatch_size = "big"'),
         r"metric_params.dci.batch_size: metric 'dci': parameter 'batch_size' must be int .*got str 'big'"),
        (lambda s: s.replace('num_train = 100', 'num_train = 0'), r"metric_params.dci.num_train: .*= 0 is out of range; expected >= 2"),
        (lambda s: s.replace('num_train = 100', 'importance = "xgb"'), r"'importance' = 'xgb' is out of range; expected one of 'gbt'"),
        # per-method presets
        (lambda s: s.replace('preset = "tiny"', 'preset = "tiny"\npresets = { vae = "infodiffusion" }'),
         r"presets.vae: method 'vae' is not in profiles.smoke.methods"),
        (lambda s: s.replace('preset = "tiny"', 'preset = "tiny"\npresets = { ae = "infodiffusoin" }'),
         r"presets.ae = 'infodiffusoin': method 'ae' has no such preset.*did you mean 'infodiffusion'"),
        (lambda s: s.replace('preset = "tiny"', 'preset = "tiny"\npresets = { ae = 1 }'), r"presets.ae must be a preset name"),
    ],
)
def test_bad_config_names_file_key_and_suggestion(tmp_path, change, message):
    path = write(tmp_path, change(GOOD))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_unknown_profile_suggests(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="did you mean 'smoke'"):
        config.profile("smoek")


def test_set_items_edit_the_profile_and_are_checked_like_the_file(tmp_path):
    import shutil
    from pathlib import Path

    from bench.config import ConfigError, load_config

    path = tmp_path / "bench.toml"
    shutil.copy(Path(__file__).parents[1] / "bench.toml", path)
    base = load_config(path).profile("smoke")
    edited = load_config(path, sets=['overrides.vae.lr=0.0005', 'overrides."*".steps=7', "seeds=[3]",
                                     "metric_params.dci.num_train=123"], profile="smoke").profile("smoke")
    assert edited.seeds == [3] and base.seeds != [3]
    assert edited.overrides["vae"]["lr"] == 0.0005 and edited.overrides["*"]["steps"] == 7
    assert edited.metric_params["dci"]["num_train"] == 123
    with pytest.raises(ConfigError, match=r"overrides\.vae\.lrr.*did you mean 'lr'"):
        load_config(path, sets=["overrides.vae.lrr=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, sets=["seeds"])
    with pytest.raises(ConfigError, match="not a table"):
        load_config(path, sets=["description.x=1"])
