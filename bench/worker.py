"""One local worker process of ``bench run --jobs N``: ``python -m bench.worker SPEC.json INDEX``.

The parent writes the run's spec (profile, results folder, device, run id, start time and
threads per stage, :func:`bench.runner.write_spec`); each worker pins itself — to the GPU in
``CUDA_VISIBLE_DEVICES`` set by the parent, to the spec's threads — *before* importing torch,
then takes stages from the same plan as every other worker (claims in the stage store keep
each stage to one worker), and writes what it did to ``worker-INDEX.json`` beside the spec.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    spec_path, index = Path(argv[0]), int(argv[1])
    spec = json.loads(spec_path.read_text())
    threads = int(spec["context"].get("threads") or 0)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    if threads:
        torch.set_num_threads(threads)
    from bench.runner import spec_worker
    from bench.store import write_json_atomic

    context = dict(spec["context"])
    if spec["device"].startswith("cuda") and "CUDA_VISIBLE_DEVICES" in os.environ:
        context["device"] = "cuda:0"  # the one GPU this worker sees
    worker = spec_worker(spec, name=f"w{index}", context=context)
    try:
        worker.run()
    finally:
        write_json_atomic({"ran": worker.ran, "fitted": worker.fitted, "failed": worker.failures, "pid": os.getpid()},
                          spec_path.parent / f"worker-{index}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
