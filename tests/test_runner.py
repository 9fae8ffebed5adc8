"""The runner: a whole grid end to end, resume after a kill, failures recorded, exit status."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

import tests.plugin_stages  # noqa: F401  (registers tiny-bars)
from bench import registry
from bench.cli import main
from bench.config import load_config
from bench.runner import run_profile

GRID = """
[profiles.t]
methods = ["ae", "beta-vae"]
datasets = ["tiny-bars"]
seeds = [0, 1]
preset = "tiny"
metrics = ["factorvae", "dci"]
device = "cpu"
results = "out"
[profiles.t.overrides."*"]
steps = 6
batch_size = 8
log_every = 3
[profiles.t.metric_params.factorvae]
num_variance_estimate = 64
num_train = 20
num_eval = 10
batch_size = 8
[profiles.t.metric_params.dci]
num_train = 60
num_test = 30
"""


def grid(tmp_path: Path, text: str = GRID):
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(text))
    config = load_config(path)
    profile = config.profile("t")
    return profile, config.results_dir(profile)


def test_grid_end_to_end_writes_tidy_rows_leaderboard_and_plots(tmp_path):
    profile, out = grid(tmp_path)
    summary = run_profile(profile, out, progress=False)
    assert (summary.planned, summary.fitted, summary.failed) == ({"model": 4, "evaluation": 8}, 4, [])
    rows = pd.read_csv(out / "results.csv")
    metrics = {"factorvae", "dci_disentanglement", "dci_completeness", "dci_informativeness"}
    assert metrics <= set(rows["metric"])
    assert (rows["status"] == "ok").all()
    # one row per cell x metric, with the context a reader needs
    per_cell = rows[rows["metric"].isin(metrics)].groupby("model_id").size()
    assert len(per_cell) == 4 and (per_cell == 4).all()
    assert rows.loc[rows["metric"].isin(metrics), "eval_id"].notna().all()
    for col in ("model_id", "method", "dataset", "seed", "params", "packages", "git_commit", "device", "fit_seconds"):
        assert rows[col].notna().all(), col
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["method"]) == {"ae", "beta-vae"} and (board["seeds"] == "2/2").all()
    assert "factorvae" in (out / "leaderboard.md").read_text()
    plots = {p.name for p in (out / "plots").iterdir()}
    assert "metric_factorvae.png" in plots
    assert "tiny-bars__beta-vae__images.png" in plots and "tiny-bars__beta-vae__traversal.png" in plots


def test_killed_run_resumes_only_missing_stages(tmp_path, monkeypatch):
    import bench.runner as runner

    profile, out = grid(tmp_path)
    real, models = runner.Worker.execute, []

    def dies_on_third_model(self, stage, claim):
        if stage.kind == "model":
            models.append(stage.id)
            if len(models) == 3:
                raise KeyboardInterrupt  # the user presses Ctrl-C (or the job is killed) mid-grid
        return real(self, stage, claim)

    monkeypatch.setattr(runner.Worker, "execute", dies_on_third_model)
    with pytest.raises(KeyboardInterrupt):
        run_profile(profile, out, progress=False)
    assert len(list((out / "stages" / "model").glob("*/done.json"))) == 2

    monkeypatch.setattr(runner.Worker, "execute", real)
    summary = run_profile(profile, out, progress=False)
    assert (summary.skipped, summary.fitted, summary.failed) == (6, 2, [])  # 2 models + their 4 evaluations kept
    assert len(set(pd.read_csv(out / "results.csv")["model_id"])) == 4


def test_a_model_whose_evaluation_was_cut_short_is_reloaded_not_retrained(tmp_path):
    profile, out = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    evaluation = next((out / "stages" / "evaluation").iterdir())
    (evaluation / "done.json").unlink()  # killed after training, before the evaluation finished
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "stages" / "model").glob("*/model.pt")}
    summary = run_profile(profile, out, progress=False, report=False)
    assert (summary.ran, summary.fitted) == (1, 0)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # loaded, not retrained


def test_nan_loss_fails_the_cell_with_a_reason_and_the_grid_goes_on(tmp_path):
    text = GRID + "[profiles.t.overrides.beta-vae]\nlr = 1e12\nsteps = 30\n"
    profile, out = grid(tmp_path, text)
    summary = run_profile(profile, out, progress=False)
    assert len(summary.failed) == 2 and all("NaN" in f for f in summary.failed)
    rows = pd.read_csv(out / "results.csv")
    failed = rows[rows["status"] == "failed"]
    assert set(failed["method"]) == {"beta-vae"} and failed["reason"].str.contains("DivergedError").all()
    assert (rows[rows["method"] == "ae"]["status"] == "ok").all()
    board = (out / "leaderboard.md").read_text()
    assert "| tiny-bars | beta-vae | 0/2 | — (0 seeds)" in board


def test_cli_exit_status_counts_failed_stages(tmp_path, capsys):
    text = GRID + "[profiles.t.overrides.beta-vae]\nlr = 1e12\nsteps = 30\n"
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(text))
    assert main(["run", "--config", str(path), "--profile", "t", "--no-progress"]) == 2
    assert "2 failed" in capsys.readouterr().out


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "bench.toml"
    path.write_text(GRID.replace('"beta-vae"]', '"beta_vae"]'))
    assert main(["run", "--config", str(path), "--profile", "t"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'beta_vae'" in err and "did you mean 'beta-vae'" in err and "Traceback" not in err


def test_shards_partition_the_grid(tmp_path):
    profile, out = grid(tmp_path)
    a = run_profile(profile, out, shard=(0, 2), progress=False, report=False)
    b = run_profile(profile, out, shard=(1, 2), progress=False, report=False)
    assert (a.fitted, b.fitted, b.skipped) == (2, 2, 0)


def test_sampled_representation_scores_stochastic_codes_and_skips_deterministic_ones(tmp_path):
    text = GRID.replace("num_train = 60\n", "num_train = 60\nrepresentation = \"sampled\"\n")
    profile, out = grid(tmp_path, text)
    run_profile(profile, out, progress=False, report=False)
    rows = pd.read_csv(out / "results.csv")
    dci = rows[rows["metric_params"].str.contains("sampled")]
    assert set(dci[dci["method"] == "beta-vae"]["status"]) == {"ok"}
    ae = dci[dci["method"] == "ae"]
    assert set(ae["status"]) == {"skipped"} and ae["reason"].str.contains("stochastic encoder").all()


def test_bench_leaderboard_regenerates_results_from_the_table(tmp_path, capsys):
    profile, out = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    assert not (out / "leaderboard.md").exists()
    assert main(["leaderboard", "--results", str(out)]) == 0
    assert (out / "leaderboard.md").is_file() and (out / "plots" / "metric_dci_completeness.png").is_file()
    assert main(["leaderboard", "--results", str(tmp_path / "nowhere")]) == 2
    assert "run `bench run` first" in capsys.readouterr().err


def _eval_rows(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted((out / "stages" / "evaluation").glob("*/rows.csv"))],
                     ignore_index=True)


def test_a_metric_version_bump_reevaluates_only_that_metric_on_the_saved_checkpoints(tmp_path, monkeypatch):
    profile, out = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    models = {p: p.stat().st_mtime_ns for p in (out / "stages" / "model").glob("*/model.pt")}
    before = pd.read_csv(out / "results.csv")
    assert set(before.loc[before["metric"].str.startswith("dci_"), "metric_version"]) == {2}
    assert set(before.loc[before["metric"] == "factorvae", "metric_version"]) == {1}

    monkeypatch.setitem(registry.metrics().get("dci").meta, "version", 3)  # the DCI implementation changed
    summary = run_profile(profile, out, progress=False, report=False)
    assert (summary.ran, summary.fitted, summary.failed) == (4, 0, [])
    assert {p: p.stat().st_mtime_ns for p in models} == models  # reloaded, never retrained
    after = pd.read_csv(out / "results.csv")
    dci = after[after["metric"].str.startswith("dci_")]
    assert len(dci) == 12 and set(dci["metric_version"]) == {3} and (dci["status"] == "ok").all()
    keep = ["model_id", "metric", "value", "timestamp"]
    fvae = lambda f: f.loc[f["metric"] == "factorvae", keep].sort_values("model_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(fvae(after), fvae(before))  # the other metric's rows are kept as they were
    assert len(after) == len(before)  # no duplicated rows: the version-2 evaluations are not in this grid now
    assert run_profile(profile, out, progress=False, report=False).ran == 0


def test_a_failed_metric_is_retried_alone_by_the_next_run(tmp_path, monkeypatch):
    import bench.metrics.factorvae as factorvae

    profile, out = grid(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("transient failure")

    monkeypatch.setattr(factorvae, "factor_vae_score", broken)
    summary = run_profile(profile, out, progress=False, report=False)
    assert len(summary.failed) == 4 and all("transient failure" in f for f in summary.failed)
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.loc[rows["metric"] == "factorvae", "status"]) == {"failed"}
    monkeypatch.undo()
    summary = run_profile(profile, out, progress=False, report=False)
    assert (summary.ran, summary.fitted, summary.failed) == (4, 0, [])
    rows = pd.read_csv(out / "results.csv")
    assert (rows["status"] == "ok").all() and (rows["metric"] == "factorvae").sum() == 4
    assert run_profile(profile, out, progress=False, report=False).ran == 0
