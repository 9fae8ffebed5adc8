"""Time `bench status` on a simulated store of N finished stages (default 10,000).

    python benchmarks/status_speed.py [--stages 10000] [--dir /tmp/bench-status-sim]

The store is written as `bench run` writes it (stage.json, done.json with checksums,
rows.csv per stage, one plan file); a few stages are left running and failed so every
branch of the scan is exercised. Prints the seconds of `bench status` in a fresh process
(interpreter start-up included, as a user sees it) and of the scan alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def simulate(root: Path, n: int) -> None:
    stages = []
    for i in range(n):
        kind = "model" if i % 5 == 0 else "evaluation"
        sid = f"{i:016x}"
        folder = root / "stages" / kind / sid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rows.csv").write_text("model_id,metric,value,status\n" + f"{sid},m,0.5,ok\n")
        (folder / "stage.json").write_text(json.dumps({"kind": kind, "id": sid, "label": f"stage {i}"}))
        if i % 1000 == 1:
            (folder / "failed.json").write_text(json.dumps({"reason": "RuntimeError: simulated"}))
        elif i % 1000 == 2:
            (folder / "claim.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                           "token": "t", "started": "now"}))
        else:
            (folder / "done.json").write_text(json.dumps({"token": sid, "deps": {}, "artifacts": {
                "rows.csv": {"sha256": "0" * 64, "bytes": 40}}}))
        stages.append({"kind": kind, "id": sid, "role": kind, "label": f"stage {i}"})
    (root / "plan").mkdir(parents=True, exist_ok=True)
    (root / "plan" / "sim.json").write_text(json.dumps({"profile": "sim", "stages": stages}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", type=int, default=10_000)
    p.add_argument("--dir", default="/tmp/bench-status-sim")
    args = p.parse_args()
    root = Path(args.dir)
    if not (root / "plan" / "sim.json").is_file():
        start = time.perf_counter()
        simulate(root, args.stages)
        print(f"simulated {args.stages} stages in {time.perf_counter() - start:.1f} s under {root}")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.cli", "status", "--results", str(root)],
                         capture_output=True, text=True, check=True)
    total = time.perf_counter() - start
    print(out.stdout.strip())
    from bench.status import collect

    start = time.perf_counter()
    collect(root, "sim")
    print(f"bench status (fresh process): {total:.2f} s; scan alone: {time.perf_counter() - start:.2f} s "
          f"for {args.stages} stages")


if __name__ == "__main__":
    main()
