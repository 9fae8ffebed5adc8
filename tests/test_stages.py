"""Stages with their own identities: train once, evaluate any time, shared components, many workers, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import tests.plugin_stages  # noqa: F401  (tiny-bars, tiny-shared)
from bench.cli import main
from bench.config import ConfigError, load_config
from bench.runner import run_profile
from bench.stages import plan

REPO = Path(__file__).resolve().parents[1]

GRID = """
[profiles.t]
methods = {methods}
datasets = ["tiny-bars"]
seeds = [0, 1]
preset = "tiny"
metrics = {metrics}
device = "cpu"
results = "out"
[profiles.t.overrides."*"]
steps = 6
batch_size = 8
log_every = 3
{extra}
[profiles.t.metric_params.factorvae]
num_variance_estimate = 64
num_train = 20
num_eval = 10
batch_size = 8
[profiles.t.metric_params.dci]
num_train = 60
num_test = 30
"""
SHARED_EXTRA = "[profiles.t.overrides.tiny-shared]\nbase_steps = 5\n"


def grid(tmp_path: Path, methods=("ae", "beta-vae"), metrics=("factorvae", "dci"), extra: str = ""):
    text = GRID.format(methods=json.dumps(list(methods)), metrics=json.dumps(list(metrics)), extra=extra)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(text))
    config = load_config(path)
    profile = config.profile("t")
    return profile, config.results_dir(profile), path


def count_fits(monkeypatch) -> list[tuple[str, int]]:
    from methods.vae import AutoencoderFamily

    calls, real = [], AutoencoderFamily.fit

    def counted(self, data, *, seed=0, **kwargs):
        calls.append((type(self).__name__, seed))
        return real(self, data, seed=seed, **kwargs)

    monkeypatch.setattr(AutoencoderFamily, "fit", counted)
    return calls


def mtimes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "stages" / "model").glob("*/model.pt")}


def test_ids_separate_models_from_evaluations(tmp_path):
    profile, _, _ = grid(tmp_path)
    more, _, _ = grid(tmp_path / "b", metrics=("factorvae", "dci", "mig"))
    a, b = plan(profile), plan(more)
    assert [m.id for m in a.models] == [m.id for m in b.models]  # a metric never changes a model's id
    assert {e.id for e in a.of("evaluation")} < {e.id for e in b.of("evaluation")}
    changed, _, _ = grid(tmp_path / "c", extra="[profiles.t.overrides.beta-vae]\nbeta = 2.0\n")
    ids = {m.id: m.method for m in plan(changed).models}
    assert sorted(m for i, m in ids.items() if i not in {x.id for x in a.models}) == ["beta-vae", "beta-vae"]


def test_adding_a_metric_to_a_finished_grid_runs_only_that_metric(tmp_path, monkeypatch):
    profile, out, _ = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    before, rows_before = mtimes(out), pd.read_csv(out / "results.csv")
    fits = count_fits(monkeypatch)
    more, _, _ = grid(tmp_path, metrics=("factorvae", "dci", "mig"))
    summary = run_profile(more, out, progress=False, report=False)
    assert fits == [] and summary.fitted == 0 and summary.ran == 4  # one new evaluation per model
    assert mtimes(out) == before  # the model files are untouched
    rows = pd.read_csv(out / "results.csv")
    assert (rows["metric"] == "mig").sum() == 4 and (rows["status"] == "ok").all()
    keep = ["model_id", "metric", "value", "timestamp"]
    old = rows_before[keep].sort_values(keep[:2]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows[rows["metric"] != "mig"][keep].sort_values(keep[:2]).reset_index(drop=True), old)
    # a changed metric parameter is a new evaluation, not a new model
    again, _, _ = grid(tmp_path, metrics=("factorvae", "dci", "mig"), extra="")
    again.metric_params["mig"] = {"num_bins": 10}
    assert run_profile(again, out, progress=False, report=False).fitted == 0 and fits == []


def test_changing_a_hyperparameter_retrains_only_the_affected_models(tmp_path, monkeypatch):
    profile, out, _ = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    before = mtimes(out)
    fits = count_fits(monkeypatch)
    changed, _, _ = grid(tmp_path, extra="[profiles.t.overrides.beta-vae]\nbeta = 2.0\n")
    summary = run_profile(changed, out, progress=False, report=False)
    assert sorted(fits) == [("BetaVAE", 0), ("BetaVAE", 1)] and summary.fitted == 2
    assert all(mtimes(out)[p] == t for p, t in before.items())  # the AE models were not touched
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.loc[rows["method"] == "beta-vae", "params"].map(lambda p: json.loads(p)["beta"])) == {2.0}


def test_a_shared_component_is_trained_once_for_all_seeds_and_named_in_the_rows(tmp_path, monkeypatch):
    profile, out, _ = grid(tmp_path, methods=("tiny-shared",), extra=SHARED_EXTRA)
    p = plan(profile)
    assert len(p.components) == 1 and {m.components["base"] for m in p.models} == {p.components[0].id}
    fits = count_fits(monkeypatch)
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.failed == [] and sorted(fits) == [("AE", 0), ("TinyShared", 0), ("TinyShared", 1)]
    rows = pd.read_csv(out / "results.csv")
    component = rows[rows["role"] == "component"]
    assert set(component["method"]) == {"ae"} and set(component["metric"]) == {"train_images_per_s", "final_loss"}
    models = rows[rows["role"] == "model"]
    assert {json.loads(c)["base"] for c in models["components"]} == {p.components[0].id}
    assert (models["status"] == "ok").all() and {"factorvae", "dci_disentanglement"} <= set(models["metric"])
    # the loaded dependant gets its component loaded with it
    from bench.worker import Worker
    from bench.store import Store

    w = Worker(p, Store(out), {"device": "cpu", "run_started": 0.0, "run": "t"})
    assert all(w.status(s) == "done" for s in p.stages)
    dependant = w.load_model(p.models[0])
    assert dependant.components_["base"].get_params() == p.components[0].params
    # dry run lists the component
    assert main(["run", "--config", str(tmp_path / "bench.toml"), "--profile", "t", "--dry-run"]) == 0


def test_a_failed_component_fails_its_dependants_with_its_name(tmp_path, monkeypatch):
    extra = "[profiles.t.overrides.tiny-shared]\nbase_lr = 1e12\nbase_steps = 30\nlog_every = 10\n"
    profile, out, _ = grid(tmp_path, methods=("tiny-shared",), extra=extra)
    fits = count_fits(monkeypatch)
    summary = run_profile(profile, out, progress=False, report=False)
    assert fits == [("AE", 0)]  # the dependants never start
    assert len(summary.failed) == 3  # the component and its two dependants
    rows = pd.read_csv(out / "results.csv")
    dependants = rows[(rows["role"] == "model") & (rows["status"] == "failed")]
    assert len(dependants) == 2
    assert dependants["reason"].str.contains(r"component ae/tiny-bars/seed0 \(\w+\) failed: DivergedError").all()


def test_a_truncated_checkpoint_is_moved_aside_and_its_model_retrained(tmp_path, capsys):
    profile, out, _ = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    victim = sorted((out / "stages" / "model").glob("*/model.pt"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a disk fault or a half-copied results folder
    summary = run_profile(profile, out, progress=False, report=False)
    err = capsys.readouterr().err
    assert "was corrupt" in err and "moved to" in err
    assert summary.fitted == 1 and summary.ran == 3 and summary.failed == []  # the model and its 2 evaluations
    kept = list((out / "quarantine").glob("model-*/model.pt"))
    assert len(kept) == 1 and kept[0].stat().st_size == len(data) // 2  # kept for inspection, not deleted
    assert victim.stat().st_size == len(data)
    assert (pd.read_csv(out / "results.csv")["status"] == "ok").all()
    # a checkpoint corrupted in place (same size) is caught by its checksum when it is read
    done = json.loads((victim.parent / "done.json").read_text())
    evaluation = next(p for p in (out / "stages" / "evaluation").glob("*/done.json")
                      if json.loads(p.read_text())["deps"] == {victim.parent.name: done["token"]})
    evaluation.unlink()
    broken = bytearray(victim.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    victim.write_bytes(bytes(broken))
    summary = run_profile(profile, out, progress=False, report=False)
    assert summary.fitted == 1 and summary.failed == [] and "checksum" in capsys.readouterr().err


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, BENCH_PLUGINS="tests.plugin_stages", PYTHONPATH=str(REPO), **extra)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _bench(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "run", "--config", str(config), "--profile", "t", "--no-progress", *args]


def test_two_concurrent_runs_train_each_model_and_component_exactly_once(tmp_path):
    profile, out, config = grid(tmp_path, methods=("ae", "tiny-shared"), extra=SHARED_EXTRA)
    log = tmp_path / "fits.log"
    env = _env(BENCH_TEST_FIT_LOG=str(log), BENCH_TEST_SLOW_FIT="AE", BENCH_TEST_SLOW_SECONDS="1.5")
    procs = [subprocess.Popen(_bench(config), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    fits = [tuple(line.split()[:2]) for line in log.read_text().splitlines()]
    # ae seeds 0 and 1, the ae component (other hyperparameters, seed 0), tiny-shared seeds 0 and 1
    assert sorted(fits) == [("AE", "0"), ("AE", "0"), ("AE", "1"), ("TinyShared", "0"), ("TinyShared", "1")]
    assert len({line.split()[2] for line in log.read_text().splitlines()}) == 2  # both processes did work
    rows = pd.read_csv(out / "results.csv")
    assert (rows["status"] == "ok").all() and rows["model_id"].nunique() == 5
    assert (rows["metric"] == "factorvae").sum() == 4


def test_a_worker_killed_while_training_a_component_leaves_nothing_half_written(tmp_path):
    profile, out, config = grid(tmp_path, methods=("tiny-shared",), extra=SHARED_EXTRA)
    component = plan(profile).components[0]
    folder = out / "stages" / "model" / component.id
    log = tmp_path / "fits.log"
    proc = subprocess.Popen(_bench(config), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(BENCH_TEST_FIT_LOG=str(log), BENCH_TEST_SLOW_FIT="AE", BENCH_TEST_SLOW_SECONDS="60"),
                            start_new_session=True)
    deadline = time.time() + 120
    while not (log.is_file() and log.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    assert (folder / "claim.json").is_file(), "the component was not being trained"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (folder / "done.json").exists() and not (folder / "model.pt").exists()
    result = subprocess.run(_bench(config), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (folder / "done.json").is_file() and (folder / "model.pt").is_file()
    assert (pd.read_csv(out / "results.csv")["status"] == "ok").all()


def test_jobs_2_gives_the_same_rows_as_jobs_1_at_the_same_threads_per_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_PLUGINS", "tests.plugin_stages")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    profile, out, _ = grid(tmp_path, methods=("ae", "tiny-shared"), extra=SHARED_EXTRA)
    one = run_profile(profile, tmp_path / "one", progress=False, report=False, jobs=1, threads=1)
    two = run_profile(profile, tmp_path / "two", progress=False, report=False, jobs=2, threads=1)
    assert one.failed == two.failed == [] and one.fitted == two.fitted == 5
    key = ["model_id", "metric"]
    a = pd.read_csv(one.results_csv).sort_values(key).reset_index(drop=True)
    b = pd.read_csv(two.results_csv).sort_values(key).reset_index(drop=True)
    assert list(a["model_id"]) == list(b["model_id"]) and list(a["metric"]) == list(b["metric"])
    assert set(a["threads"]) == set(b["threads"]) == {1}
    quality = ~a["metric"].isin(["train_images_per_s"])
    pd.testing.assert_series_equal(a.loc[quality, "value"], b.loc[quality, "value"], check_exact=True)


def test_a_results_folder_of_the_earlier_layout_is_adopted_without_retraining(tmp_path, monkeypatch, capsys):
    profile, out, _ = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    rows = pd.read_csv(out / "results.csv")
    legacy = out / "cells"
    for model in plan(profile).models:  # rewrite the store as the earlier runner left it: cells/<id>/
        cell = legacy / f"old{model.id[:8]}"
        cell.mkdir(parents=True)
        src = out / "stages" / "model" / model.id
        (cell / "model.pt").write_bytes((src / "model.pt").read_bytes())
        (cell / "figures.npz").write_bytes((src / "figures.npz").read_bytes())
        (cell / "config.json").write_text(json.dumps({"method": model.method, "dataset": model.dataset, "seed": model.seed,
                                                      "preset": "tiny", "params": model.params, "metrics": {}}))
        (cell / "fit.json").write_text(json.dumps({"fit_seconds": 1.0, "rows": {"final_loss": 1.0}}))
        mine = rows[rows["model_id"] == model.id].rename(columns={"model_id": "cell_id"})
        mine.drop(columns=["eval_id", "stage", "role", "components"]).to_csv(cell / "rows.csv", index=False)
    import shutil

    shutil.rmtree(out / "stages")
    fits = count_fits(monkeypatch)
    summary = run_profile(profile, out, progress=False, report=False)
    assert fits == [] and summary.fitted == 0 and summary.ran == 0
    assert "adopted 4 finished model(s)" in capsys.readouterr().err
    again = pd.read_csv(out / "results.csv")
    metric_rows = lambda f: f[f["metric"].isin(["factorvae", "dci_disentanglement"])].sort_values(["model_id", "metric"])
    assert list(metric_rows(again)["value"]) == list(metric_rows(rows)["value"])
    assert all((c / "adopted.json").is_file() and (c / "model.pt").is_file() for c in legacy.iterdir())


def test_training_curves_are_written_while_training_and_drawn(tmp_path):
    profile, out, _ = grid(tmp_path)
    run_profile(profile, out, progress=False)
    logs = sorted((out / "stages" / "model").glob("*/train_log.jsonl"))
    assert len(logs) == 4
    lines = [json.loads(x) for x in logs[0].read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6]
    assert {"phase", "step", "wall_s", "images_per_s", "loss", "lr", "reconstruction", "regulariser"} <= set(lines[0])
    assert (out / "plots" / "tiny-bars__loss.png").is_file()


def test_bench_status_counts_stages_without_importing_torch(tmp_path):
    profile, out, config = grid(tmp_path)
    run_profile(profile, out, progress=False, report=False)
    p = plan(profile)
    model, evaluation = p.models[0], p.of("evaluation")[-1]
    (out / "stages" / "model" / model.id / "done.json").unlink()
    claim = {"host": __import__("socket").gethostname(), "pid": os.getpid(), "token": "x", "started": "now"}
    (out / "stages" / "model" / model.id / "claim.json").write_text(json.dumps(claim))
    ev = out / "stages" / "evaluation" / evaluation.id
    (ev / "done.json").unlink()
    (ev / "failed.json").write_text(json.dumps({"reason": "ValueError: bad codes\nmore"}))
    code = ("import sys; from bench.cli import main; rc = main(['status', '--config', sys.argv[1], '--profile', 't']); "
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'status imported torch'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, str(config)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split(" "))
    squeeze = lambda t: " ".join(t.split())
    assert "model 4 done 3 running 1 failed 0 pending 0" in squeeze(text)
    assert f"running  {model.label} ({model.id}) on" in text and f"pid {os.getpid()}" in text
    assert "evaluation 8 done 7 running 0 failed 1 pending 0" in squeeze(text) and "ValueError: bad codes" in text
    assert "more" not in text.split("ValueError: bad codes")[1].splitlines()[0]


def test_a_missing_device_and_an_unwritable_results_folder_stop_before_any_work(tmp_path, capsys, monkeypatch):
    profile, out, config = grid(tmp_path)
    fits = count_fits(monkeypatch)
    if not torch.cuda.is_available():
        text = config.read_text().replace('device = "cpu"', 'device = "cuda"')
        config.write_text(text)
        assert main(["run", "--config", str(config), "--profile", "t", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "profile 't' asks for device 'cuda'" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1
        assert not out.exists() and fits == []
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "--config", str(config), "--profile", "t", "--device", "cpu", "--results",
                 str(blocker / "results"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and str(blocker / "results") in err and fits == []
    with pytest.raises(ConfigError, match="--device cpu"):
        prof = load_config(config).profile("t")
        if torch.cuda.is_available():
            raise ConfigError("--device cpu (CUDA present; nothing to check)")
        run_profile(prof, out, progress=False)
