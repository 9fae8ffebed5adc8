"""Without a terminal (a log file, a CI job) or with --no-progress, `bench run` prints one plain line per finished stage (issue 28, item 8)."""

from __future__ import annotations

import subprocess
import sys

from tests.test_stages import REPO, _env, grid


def test_a_run_without_a_terminal_prints_one_plain_line_per_stage_and_no_escape_sequences(tmp_path):
    for i, flags in enumerate(([], ["--no-progress"])):
        _, _, config = grid(tmp_path / str(i), methods=("ae",))
        cmd = [sys.executable, "-m", "bench.cli", "run", "--config", str(config), "--profile", "t", *flags]
        result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "\x1b[" not in result.stdout + result.stderr and "\r" not in result.stdout + result.stderr  # no bar redraws
        lines = [line for line in result.stdout.splitlines() if "] done: " in line]
        assert len(lines) == 6, result.stdout  # 2 models + 4 evaluations, one line each
        assert lines[0].startswith("[1/6] done: model ae/tiny-bars/seed") and lines[-1].startswith("[6/6] done: evaluation")


def test_a_long_training_stage_prints_plain_periodic_lines_without_progress_bars(tmp_path, monkeypatch, capsys):
    """Between the per-stage lines, a training stage says its step and loss (every PROGRESS_EVERY seconds; 0 here)."""
    import bench.worker as worker
    from bench.runner import run_profile
    from tests.test_runner import GRID, grid as runner_grid

    monkeypatch.setattr(worker, "PROGRESS_EVERY", 0.0)
    profile, out = runner_grid(tmp_path, GRID.replace('methods = ["ae", "beta-vae"]', 'methods = ["ae"]')
                               .replace("seeds = [0, 1]", "seeds = [0]"))
    run_profile(profile, out, progress=False)
    lines = capsys.readouterr().out.splitlines()
    training = [line for line in lines if "training ae/tiny-bars/seed0: train step" in line]
    assert training and training[-1].strip().startswith("training ae/tiny-bars/seed0: train step 6/6, loss")
    assert lines.index(training[-1]) < next(i for i, line in enumerate(lines) if "] done: model ae/tiny-bars/seed0" in line)


def test_the_slurm_follower_prints_plain_lines_without_a_terminal(tmp_path, monkeypatch, capsys):
    """`bench run --executor slurm --wait` in a log file: a line each time the count of finished stages changes."""
    from types import SimpleNamespace

    from bench.executors import slurm

    stages = [SimpleNamespace(kind="model", id=f"s{i}") for i in range(2)]
    store = SimpleNamespace(folder=lambda kind, sid: tmp_path / kind / sid)
    for s in stages:
        (tmp_path / s.kind / s.id).mkdir(parents=True)
    answers = iter(["7\n", "7\n", ""])

    def squeue(cmd, **kwargs):
        text = next(answers)
        if text == "7\n" and (tmp_path / "model" / "s0" / "done.json").exists():
            (tmp_path / "model" / "s1" / "failed.json").write_text("{}")
        (tmp_path / "model" / "s0" / "done.json").write_text("{}")
        return SimpleNamespace(returncode=0, stdout=text, stderr="")

    monkeypatch.setattr(slurm.subprocess, "run", squeue)
    slurm.follow(["7"], store, SimpleNamespace(stages=stages), progress=True, poll=0.0)
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err and "\x1b[" not in captured.out + captured.err
    assert captured.out.splitlines() == ["slurm: 1/2 stages finished; 1 job(s) queued or running",
                                         "slurm: 2/2 stages finished; 1 job(s) queued or running"]
