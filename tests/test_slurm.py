"""The Slurm executor against a real Slurm (scripts/local-slurm.sh; .ci/run starts one), and its input checks.

The cluster tests skip, with the reason, where no Slurm answers (`sinfo` missing or failing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import tests.plugin_stages  # noqa: F401  (tiny-bars, tiny-shared)
from bench.cli import main
from bench.config import ConfigError, load_config, parse_duration
from bench.runner import run_profile

REPO = Path(__file__).resolve().parents[1]

GRID = """
[executor.slurm]
partition = "debug"
time = {time}
cpus_per_task = 1
signal_delay_s = 30
[profiles.t]
methods = ["ae", "tiny-shared"]
datasets = ["tiny-bars"]
seeds = [0, 1]
preset = "tiny"
metrics = ["factorvae"]
device = "cpu"
results = "out"
[profiles.t.overrides."*"]
steps = 6
batch_size = 8
log_every = 3
[profiles.t.overrides.tiny-shared]
base_steps = 5
[profiles.t.metric_params.factorvae]
num_variance_estimate = 64
num_train = 20
num_eval = 10
batch_size = 8
"""


def _slurm_reason() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm here (sinfo/sbatch not on PATH): `scripts/local-slurm.sh start` needs root and Debian's slurm-wlm"
    out = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or not out.stdout.strip():
        return f"Slurm does not answer (sinfo: {out.stderr.strip() or 'no partition'}); start it with scripts/local-slurm.sh start"
    return None


needs_slurm = pytest.mark.skipif(_slurm_reason() is not None, reason=str(_slurm_reason()))


def write(tmp_path: Path, time_limit: str = "10", extra: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(GRID.format(time=time_limit)) + extra)
    return path


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, BENCH_PLUGINS="tests.plugin_stages", PYTHONPATH=str(REPO), **extra)
    return out


def bench(config: Path, *args: str, environ: dict[str, str] | None = None, timeout: int = 400):
    cmd = [sys.executable, "-m", "bench.cli", "run", "--config", str(config), "--profile", "t", "--no-progress",
           "--threads", "1", *args]
    return subprocess.run(cmd, cwd=config.parent, env=environ or env(), capture_output=True, text=True, timeout=timeout)


def values(path: Path) -> pd.DataFrame:
    rows = pd.read_csv(path)
    rows = rows[rows["metric"] != "train_images_per_s"]
    return rows.sort_values(["model_id", "metric"]).reset_index(drop=True)[["model_id", "metric", "value", "status"]]


# -- input checks (no cluster needed) ---------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("[executor.slurm]\npartitoin = 'gpu'\n", r"unknown key 'executor.slurm.partitoin'.*did you mean 'partition'"),
    ("[executor.slurm]\ntime = 'soon'\n", r"executor.slurm.time = 'soon' is not a duration"),
    ("[executor.slurm]\nmem = 'lots'\n", r"executor.slurm.mem = 'lots'; expected a Slurm size"),
    ("[executor.slurm.evaluation]\ncpus_per_task = 0\n", r"executor.slurm.evaluation.cpus_per_task = 0 is out of range"),
])
def test_bad_slurm_settings_are_named_before_anything_is_submitted(tmp_path, text, message):
    path = tmp_path / "bench.toml"
    path.write_text(text + textwrap.dedent(GRID.format(time=10)).split("[profiles.t]", 1)[1].join(["[profiles.t]", ""]))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_slurm_durations_follow_slurm():
    assert [parse_duration(v, "t") for v in (30, "90", "1:30", "2:00:00", "1-12", "1-12:00:00")] == [30, 90, 2, 120, 2160, 2160]


@needs_slurm
def test_a_partition_that_does_not_exist_is_refused_before_submission(tmp_path, capsys):
    config = write(tmp_path, extra="")
    config.write_text(config.read_text().replace('partition = "debug"', 'partition = "nosuchpartition"'))
    assert main(["run", "--config", str(config), "--profile", "t", "--executor", "slurm", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "partition = 'nosuchpartition': no such partition" in err and "debug" in err
    assert not (tmp_path / "out" / "slurm").exists()


# -- against the cluster ---------------------------------------------------------------------
@needs_slurm
def test_a_grid_through_slurm_gives_the_same_rows_as_the_inline_run(tmp_path):
    config = write(tmp_path)
    start = time.perf_counter()
    result = bench(config, "--executor", "slurm", "--wait")
    slurm_seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout + result.stderr
    start = time.perf_counter()
    inline = bench(config, "--results", str(tmp_path / "inline"))
    inline_seconds = time.perf_counter() - start
    assert inline.returncode == 0, inline.stdout + inline.stderr
    print(f"tiny grid: slurm {slurm_seconds:.1f} s, inline {inline_seconds:.1f} s")
    a, b = values(tmp_path / "out" / "results.csv"), values(tmp_path / "inline" / "results.csv")
    assert (a["status"] == "ok").all() and len(a) == len(b) and a["model_id"].nunique() == 5
    pd.testing.assert_frame_equal(a, b)
    assert list((tmp_path / "out" / "slurm").glob("*/*_log.out"))  # the jobs' logs are under the results folder
    again = bench(config, "--executor", "slurm", "--wait")
    assert "nothing to submit" in again.stdout or "0 run" in again.stdout or again.returncode == 0


def _wait_for(predicate, timeout: float = 180, poll: float = 0.5) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def _queue(job: str) -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", job], capture_output=True, text=True)
    return [tuple(line.split()) for line in out.stdout.splitlines() if line.strip()]


@needs_slurm
def test_an_scancelled_task_is_recovered_by_the_next_run(tmp_path):
    config = write(tmp_path)
    log = tmp_path / "fits.log"
    slow = env(BENCH_TEST_FIT_LOG=str(log), BENCH_TEST_SLOW_FIT="AE", BENCH_TEST_SLOW_SECONDS="25")
    submitted = bench(config, "--executor", "slurm", environ=slow)
    assert submitted.returncode == 0 and "submitted" in submitted.stdout, submitted.stdout + submitted.stderr
    first = submitted.stdout.split("job array(s): ")[1].split(",")[0].strip()
    assert _wait_for(lambda: log.is_file() and len(log.read_text().splitlines()) >= 1), "no task started training"
    running = [j for j, state in _queue(first) if state == "RUNNING"]
    assert running, _queue(first)
    subprocess.run(["scancel", running[0]], check=True)  # a node failure, or a user's scancel, mid-training
    assert _wait_for(lambda: not subprocess.run(["squeue", "-h", "-u", "root"], capture_output=True,
                                                text=True).stdout.strip(), timeout=300), "jobs still queued"
    result = bench(config, "--executor", "slurm", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (rows["status"] == "ok").all() and rows["model_id"].nunique() == 5 and (rows["metric"] == "factorvae").sum() == 4


@needs_slurm
def test_a_task_past_its_time_limit_is_requeued_and_finishes(tmp_path):
    config = write(tmp_path, time_limit="2")  # submitit's signal comes 30 s before the end: 90 s for an attempt
    marker, log = tmp_path / "slowed-once", tmp_path / "fits.log"
    slow = env(BENCH_TEST_FIT_LOG=str(log), BENCH_TEST_SLOW_FIT="TinyShared", BENCH_TEST_SLOW_SECONDS="200",
               BENCH_TEST_SLOW_ONCE=str(marker))  # exactly one fit (across tasks) sleeps past the signal
    result = bench(config, "--executor", "slurm", "--wait", environ=slow, timeout=1200)  # requeue + Slurm scheduling: ~400 s alone on a 2-core machine
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.exists()  # the slow attempt happened
    fits = [line.split()[:2] for line in log.read_text().splitlines()]
    # the cut-short stage ran again; on a loaded machine another attempt may also reach its limit and rerun
    assert fits.count(["TinyShared", "0"]) + fits.count(["TinyShared", "1"]) >= 3
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (rows["status"] == "ok").all() and (rows["metric"] == "factorvae").sum() == 4
    logs = "".join(p.read_text() for p in (tmp_path / "out" / "slurm").glob("*/*_log.err"))
    assert "requeue" in logs.lower()


def test_submitit_local_and_debug_executors_run_the_same_code_path(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_PLUGINS", "tests.plugin_stages")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    config = load_config(write(tmp_path))
    profile = config.profile("t")
    debug = run_profile(profile, tmp_path / "debug", progress=False, report=False, executor="debug", threads=1)
    inline = run_profile(profile, tmp_path / "inline", progress=False, report=False, threads=1)
    assert debug.failed == [] and debug.fitted == inline.fitted == 5
    pd.testing.assert_frame_equal(values(debug.results_csv), values(inline.results_csv))
    local = bench(write(tmp_path / "l"), "--executor", "local")  # submitit's local pool: a process per stage
    assert local.returncode == 0, local.stdout + local.stderr
    pd.testing.assert_frame_equal(values(tmp_path / "l" / "out" / "results.csv"), values(inline.results_csv))
    assert json.loads(next((tmp_path / "debug" / "plan").glob("run-*/submission.json")).read_text())["executor"] == "debug"


def test_waiting_for_a_task_that_left_no_result_does_not_hang(tmp_path):
    """Without Slurm accounting a dead task's state stays unknown and submitit's result() waits forever."""
    from types import SimpleNamespace

    from bench.executors.slurm import _fitted

    def never():
        raise AssertionError("result() called on a task without a result file: it would block")

    done = tmp_path / "done_result.pkl"
    done.write_bytes(b"")
    jobs = [SimpleNamespace(paths=SimpleNamespace(result_pickle=tmp_path / "none_result.pkl"), result=never),
            SimpleNamespace(paths=SimpleNamespace(result_pickle=done), result=lambda: {"fitted": 2})]
    assert _fitted(jobs) == 2
