"""Local worker processes of ``bench run --jobs N``.

The parent (:func:`run_local_workers`) writes the run's spec (:mod:`bench.executors.spec`)
and starts ``python -m bench.executors.local SPEC.json INDEX`` N times. Each worker pins
itself — to the GPU in ``CUDA_VISIBLE_DEVICES`` set by the parent, to the spec's threads —
*before* importing torch, then takes stages from the same plan as every other worker
(claims in the stage store keep each stage to one worker), and writes what it did to
``worker-INDEX.json`` beside the spec.

This module imports torch and the worker only inside functions: the worker process must set
``OMP_NUM_THREADS`` before torch is first imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.config import Profile
from bench.executors.spec import spec_plan, write_spec
from bench.store import Store, read_json, write_json_atomic


def run_local_workers(profile: Profile, results_dir: Path, shard: tuple[int, int], device: str,
                      context: dict[str, Any], jobs: int, progress: bool) -> tuple[int, int, list[str]]:
    """``jobs`` worker processes over one plan: one GPU each where there are GPUs, else a share of the cores."""
    import torch  # the parent has torch already; kept out of this module's import for the worker's sake

    spec = write_spec(profile, results_dir, shard, context, progress)
    spec_dir = spec.parent
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    procs = []
    for i in range(jobs):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.executors.local", str(spec), str(i)], env=env))
    for p in procs:
        p.wait()
    ran = fitted = 0
    failed: list[str] = []
    for i, p in enumerate(procs):
        out = read_json(spec_dir / f"worker-{i}.json")
        if out is None:
            failed.append(f"worker {i} exited with status {p.returncode} before reporting")
            continue
        ran, fitted, failed = ran + out["ran"], fitted + out["fitted"], failed + out["failed"]
    return ran, fitted, failed


def main(argv: list[str]) -> int:
    """One worker process: ``python -m bench.executors.local SPEC.json INDEX``."""
    spec_path, index = Path(argv[0]), int(argv[1])
    spec = json.loads(spec_path.read_text())
    threads = int(spec["context"].get("threads") or 0)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch  # only now: OMP_NUM_THREADS must be set before torch is first imported

    if threads:
        torch.set_num_threads(threads)
    from bench.worker import Worker  # imports torch's users: after the pinning above

    context = dict(spec["context"])
    if spec["device"].startswith("cuda") and "CUDA_VISIBLE_DEVICES" in os.environ:
        context["device"] = "cuda:0"  # the one GPU this worker sees
    worker = Worker(spec_plan(spec), Store(Path(spec["results"])), context, progress=spec["progress"], name=f"w{index}")
    try:
        worker.run()
    finally:
        write_json_atomic({"ran": worker.ran, "fitted": worker.fitted, "failed": worker.failures, "pid": os.getpid()},
                          spec_path.parent / f"worker-{index}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
