"""`bench ls` tells what exists and what can be set, without reading the code (issue 28, item 6)."""

from __future__ import annotations

import inspect
import textwrap

from bench import registry
from bench.cli import main


def test_ls_methods_name_lists_every_hyperparameter_with_default_range_and_presets(capsys):
    assert main(["ls", "methods", "factor-vae"]) == 0
    out = capsys.readouterr().out
    cls = registry.methods().load("factor-vae")
    for key in cls.defaults:
        assert f"    {key} " in out, key
    assert "gamma" in out and "40.0; >= 0" in out and '"second"; second | same' in out
    assert "tiny: " in out and "discriminator_hidden=64" in out and "paper: the defaults" in out
    assert "stochastic_encode" in out


def test_ls_metrics_name_lists_the_parameters_the_function_takes(capsys):
    assert main(["ls", "metrics", "factorvae"]) == 0
    out = capsys.readouterr().out
    fn = registry.metrics().get("factorvae").load()
    keyword = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert keyword and all(f"    {k} " in out for k in keyword)
    assert "needs: factors" in out and "outputs: factorvae" in out


def test_ls_metrics_name_shows_ranges_choices_and_what_bench_score_accepts(capsys):
    assert main(["ls", "metrics", "dci"]) == 0
    out = capsys.readouterr().out
    assert 'importance  "gbt"; gbt | sklearn_gbt | hist_gbt' in out and "num_train   10000; >= 2" in out
    assert "bench score --param accepts: dci.importance (the tables' sizes are bench score's --num-train" in out
    assert main(["ls", "metrics", "fid"]) == 0
    out = capsys.readouterr().out
    assert "bench score: not computed on a codes table" in out and "``" not in out


def test_ls_profiles_gives_name_description_and_grid_size(tmp_path, capsys):
    config = tmp_path / "bench.toml"
    config.write_text(textwrap.dedent("""
        [profiles.two]
        description = "two methods, two seeds"
        methods = ["ae", "vae"]
        datasets = ["dsprites-procedural-32"]
        seeds = [0, 1]
        preset = "tiny"
        metrics = ["factorvae", "dci"]
        device = "cpu"
    """))
    assert main(["ls", "profiles", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert ("  two\n      two methods, two seeds\n      4 grid points → 0 components, 4 models, 8 evaluations "
            "(2 methods × 1 dataset × 2 seeds)") in out


def test_ls_profiles_counts_in_the_singular_and_keeps_training_warnings_for_bench_run(tmp_path, capsys, monkeypatch):
    """One model is "1 model"; planning vq-f4 without LPIPS weights warns about training, which is not for a listing."""
    import methods.vqgan

    monkeypatch.setattr(methods.vqgan, "_WARNED", set())  # a warning said earlier in this process is said again
    config = tmp_path / "bench.toml"
    config.write_text(textwrap.dedent("""
        [profiles.one]
        methods = ["vq-f4"]
        datasets = ["dsprites-procedural-32"]
        seeds = [0]
        preset = "tiny"
        metrics = ["reconstruction"]
        device = "cpu"
    """))
    assert main(["ls", "profiles", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "1 grid point → 0 components, 1 model, 1 evaluation (1 method × 1 dataset × 1 seed)" in captured.out
    assert captured.err == ""


def test_a_name_without_methods_or_metrics_is_refused(capsys):
    assert main(["ls", "datasets", "mnist"]) == 2
    assert "goes with `methods` or `metrics`" in capsys.readouterr().err


def test_run_narrows_a_profile_to_some_methods_and_seeds_with_the_same_stage_ids(tmp_path, capsys):
    from bench import stages
    from bench.config import load_config

    config = tmp_path / "bench.toml"
    config.write_text(textwrap.dedent("""
        [profiles.two]
        methods = ["ae", "vae"]
        datasets = ["dsprites-procedural-32"]
        seeds = [0, 1]
        preset = "tiny"
        metrics = ["factorvae"]
        device = "cpu"
    """))
    full = {s.id for s in stages.plan(load_config(config).profile("two")).stages}
    assert main(["run", "--config", str(config), "--methods", "vae", "--seeds", "1", "--dry-run"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(listed) == 2 and set(listed) <= full  # vae seed 1 and its evaluation: the same ids, no retraining
    assert main(["run", "--config", str(config), "--methods", "beta-vae", "--dry-run"]) == 2
    assert "--methods 'beta-vae': beta-vae is not among the methods of profile 'two' (ae, vae)" in capsys.readouterr().err


def test_report_takes_config_and_profile(tmp_path, capsys):
    config = tmp_path / "bench.toml"
    config.write_text('[profiles.p]\nmethods = ["ae"]\ndatasets = ["dsprites-procedural-32"]\nseeds = [0]\n'
                      'results = "elsewhere"\n')
    (tmp_path / "elsewhere").mkdir()
    from bench.results import COLUMNS

    (tmp_path / "elsewhere" / "results.csv").write_text(",".join(COLUMNS) + "\n")  # an empty table
    assert main(["report", "--config", str(config), "--profile", "p"]) == 0
    assert (tmp_path / "elsewhere" / "index.html").is_file() and str(tmp_path / "elsewhere") in capsys.readouterr().out


def test_report_with_a_missing_config_says_so_like_status(tmp_path, capsys, monkeypatch):
    """`bench report --config nosuch.toml --profile paper` must not quietly render ./results."""
    monkeypatch.chdir(tmp_path)
    for argv in (["report", "--config", "nosuch.toml", "--profile", "paper"], ["report", "--profile", "paper"],
                 ["status", "--config", "nosuch.toml", "--profile", "paper"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "configuration file not found" in err and "--results" in err, (argv, err)
    assert not (tmp_path / "results" / "index.html").exists()


def test_narrowed_runs_keep_the_whole_grid_in_the_plan_and_the_results(tmp_path):
    """`bench run --methods ae` then `--methods vae`: results.csv holds both methods' rows and the plan
    file the whole grid (a narrowed run must not shrink the profile's table to its own part)."""
    import json

    import pandas as pd

    import tests.plugin_stages  # noqa: F401  (tiny-bars)

    config = tmp_path / "bench.toml"
    config.write_text(textwrap.dedent(f"""
        [profiles.two]
        methods = ["ae", "vae"]
        datasets = ["tiny-bars"]
        seeds = [0]
        preset = "tiny"
        metrics = ["reconstruction"]
        device = "cpu"
        results = "{tmp_path / 'res'}"
        [profiles.two.overrides."*"]
        steps = 4
        batch_size = 8
        log_every = 2
        [profiles.two.metric_params.reconstruction]
        num_samples = 8
    """))
    for method in ("ae", "vae"):
        assert main(["run", "--config", str(config), "--methods", method, "--no-progress"]) == 0
    rows = pd.read_csv(tmp_path / "res" / "results.csv")
    assert set(rows["method"]) == {"ae", "vae"}
    plan = json.loads((tmp_path / "res" / "plan" / "two.json").read_text())
    assert {s["label"].split("/")[0] for s in plan["stages"] if s["kind"] == "model"} == {"ae", "vae"}
