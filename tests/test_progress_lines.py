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
