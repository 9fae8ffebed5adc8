"""The prepared GPU check runs its every code path at toy sizes on the CPU, so it never rots."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke_prints_and_writes_every_row(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    sections = {r["section"] for r in rows}
    assert sections == {"train", "reference", "sample", "fid-features", "ae-family", "evaluate", "grid"}
    grid = next(r for r in rows if r["section"] == "grid")  # bench run of the tiny grid (ae only), every stage done
    assert (grid["stages"], grid["failed"], grid["rows"].get("failed", 0)) == (5, 0, 0), grid
    assert grid["rows"].get("ok", 0) >= 4, grid  # FactorVAE, DCI, FID (its random stand-in), reconstruction
    measured = [r for r in rows if r["section"] != "reference"]  # no reference checkout in the test
    assert all(r["value"] is not None and math.isfinite(r["value"]) and r["value"] >= 0 for r in measured), measured
    trained = {r["method"] for r in rows if r["section"] == "train"}
    assert trained == {"infodiffusion", "ddpm", "diffae", "pdae"}
    assert "| section | what | value | unit | note |" in result.stdout  # the one table
