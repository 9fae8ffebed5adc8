"""What a 10,000-stage grid costs the harness itself: status, results collection and submission.

    python benchmarks/slurm_scale.py [--stages 10000] [--dir /tmp/bench-scale]   # needs a Slurm for the last part

1. a simulated store of N finished stages (benchmarks/status_speed.py's layout);
2. `bench status` on it (fresh process) and the results collection `bench report` does
   (`bench.results.collect_from_plans`: every planned stage's rows.csv into results.csv);
3. submitting N array tasks through submitit exactly as `bench run --executor slurm` does
   (one `map_array` of bench.executors.slurm.StageTask), held (`--hold`) so nothing runs, then
   cancelled; skipped with a message where `sbatch` is missing.
Prints seconds and the number of files per stage and per task.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from status_speed import simulate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", type=int, default=10_000)
    p.add_argument("--dir", default="/tmp/bench-scale")
    args = p.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    simulate(root, args.stages)
    print(f"simulated {args.stages} stages in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.cli", "status", "--results", str(root)], check=True, capture_output=True)
    print(f"bench status (fresh process): {time.perf_counter() - start:.2f} s")
    from bench.results import collect_from_plans

    start = time.perf_counter()
    collect_from_plans(root)
    print(f"results collection (rows.csv of {args.stages} stages -> results.csv): {time.perf_counter() - start:.2f} s")
    if shutil.which("sbatch") is None:
        print("no sbatch here: submission not measured (scripts/local-slurm.sh start)")
        return
    import submitit

    from bench.executors.slurm import StageTask

    ex = submitit.AutoExecutor(folder=root / "slurm" / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=10, slurm_additional_parameters={"hold": True}, slurm_array_parallelism=64)
    ids = [f"{i:016x}" for i in range(args.stages)]
    start = time.perf_counter()
    task = StageTask(str(root / "no-spec.json"))
    jobs = [j for i in range(0, len(ids), 1000) for j in ex.map_array(task, ids[i:i + 1000])]  # as bench.executors.slurm
    seconds = time.perf_counter() - start
    arrays = sorted({str(j.job_id).split("_")[0] for j in jobs})
    subprocess.run(["scancel", *arrays], check=False)
    files = sum(1 for _ in (root / "slurm").rglob("*") if _.is_file())
    print(f"submission of {args.stages} array tasks ({len(arrays)} arrays of <= 1,000): {seconds:.2f} s; "
          f"{files} files under slurm/ before any task ran ({files / args.stages:.2f} per task)")


if __name__ == "__main__":
    main()
