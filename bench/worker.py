"""One local worker process of ``bench run --jobs N``: ``python -m bench.worker SPEC.json INDEX``.

The parent writes the run's spec (profile, results folder, device, run id and start time);
each worker pins itself — ``CUDA_VISIBLE_DEVICES`` set by the parent, its share of the CPU
threads from ``BENCH_WORKER_THREADS`` — *before* importing torch, then takes stages from the
same plan as every other worker (claims in the stage store keep each stage to one worker),
and writes what it did to ``worker-INDEX.json`` beside the spec.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    spec_path, index = Path(argv[0]), int(argv[1])
    spec = json.loads(spec_path.read_text())
    threads = int(os.environ.get("BENCH_WORKER_THREADS", "0"))
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    if threads:
        torch.set_num_threads(threads)
    from bench import stages
    from bench.config import Profile
    from bench.runner import Worker
    from bench.store import Store, write_json_atomic

    profile = Profile(**spec["profile"])
    plan = stages.plan(profile, shard=tuple(spec["shard"]))
    context = dict(spec["context"])
    if spec["device"].startswith("cuda") and "CUDA_VISIBLE_DEVICES" in os.environ:
        context["device"] = "cuda:0"  # the one GPU this worker sees
    worker = Worker(plan, Store(Path(spec["results"])), context, progress=spec["progress"], name=f"w{index}")
    try:
        worker.run()
    finally:
        write_json_atomic({"ran": worker.ran, "fitted": worker.fitted, "failed": worker.failures, "pid": os.getpid()},
                          spec_path.parent / f"worker-{index}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
