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
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.atomic import DiskFullError
from bench.config import Profile
from bench.stages import Plan
from bench.executors.spec import spec_plan, write_spec
from bench.records import read_json, write_json_atomic
from bench.store import Store


def run_local_workers(profile: Profile, results_dir: Path, shard: tuple[int, int], device: str,
                      context: dict[str, Any], jobs: int, progress: bool, plan: Plan) -> tuple[int, int, list[str]]:
    """``jobs`` worker processes over one plan: one GPU each where there are GPUs, else a share of the cores.

    Returns (stages run, models trained, failures). A failure is a stage that failed or that no
    worker finished; a worker that died while the others finished every stage is not one (a
    line says so). Each worker runs in its own process group, so what it started (joblib's
    processes) ends with it; and each ends when this process does (see :func:`main`).
    """
    import torch  # the parent has torch already; kept out of this module's import for the worker's sake

    spec = write_spec(profile, results_dir, shard, context, progress)
    spec_dir = spec.parent
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    procs = []
    try:
        for i in range(jobs):
            env = dict(os.environ, BENCH_PARENT_PID=str(os.getpid()))
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.executors.local", str(spec), str(i)], env=env,
                                          start_new_session=True))
        for p in procs:
            p.wait()
    except BaseException:  # Ctrl-C reaches this process only (the workers have their own groups): pass it on
        for p in procs:
            _signal_group(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(p.pid, signal.SIGKILL)
        raise
    finally:
        for p in procs:
            _signal_group(p.pid, signal.SIGKILL)  # what a worker left running (joblib processes of a killed worker)
    ran = fitted = 0
    failed: list[str] = []
    died: list[str] = []
    for i, p in enumerate(procs):
        out = read_json(spec_dir / f"worker-{i}.json")
        if out is None:
            died.append(f"worker {i} exited with status {p.returncode} before reporting")
            continue
        if out.get("disk_full"):
            raise DiskFullError(out["disk_full"])
        ran, fitted, failed = ran + out["ran"], fitted + out["fitted"], failed + out["failed"]
    if died:
        unfinished = _unfinished(plan, Store(results_dir))
        if unfinished:
            failed += [f"{line} (not finished: {'; '.join(died)})" for line in unfinished]
        else:
            print(f"bench: {'; '.join(died)}; the other workers finished every stage", file=sys.stderr)
    return ran, fitted, failed


def _unfinished(plan: Plan, store: Store) -> list[str]:
    """Stages of the plan neither done nor failed (a worker died holding them and nobody took them over)."""
    out = []
    for s in plan.stages:
        folder = store.folder(s.kind, s.id)
        if not (folder / "done.json").exists() and not (folder / "failed.json").exists():
            out.append(f"{s.label} ({s.id})")
    return out


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _end_with_parent(parent: int) -> None:
    """A thread: when the parent ``bench run`` is gone, end this worker and its process group at once.

    Its claims then belong to a dead process and are taken over by the next run straight away.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="parent watch").start()


def main(argv: list[str]) -> int:
    """One worker process: ``python -m bench.executors.local SPEC.json INDEX``."""
    spec_path, index = Path(argv[0]), int(argv[1])
    parent = int(os.environ.get("BENCH_PARENT_PID") or 0)
    if parent and os.getpgrp() == os.getpid():  # our own process group, started by run_local_workers
        _end_with_parent(parent)
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
    report: dict[str, Any] = {}
    try:
        worker.run()
    except DiskFullError as exc:
        print(f"bench: [w{index}] {exc}", file=sys.stderr)
        report["disk_full"] = str(exc)
    finally:
        try:
            write_json_atomic({"ran": worker.ran, "fitted": worker.fitted, "failed": worker.failures,
                               "pid": os.getpid(), **report}, spec_path.parent / f"worker-{index}.json")
        except DiskFullError:
            pass  # the parent finds no report; the run's own write of results.csv says the disk is full
    return 3 if report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
