"""The inline executor: every stage in ``bench run``'s own process, one after another."""

from __future__ import annotations

from typing import Any

import torch

from bench.stages import Plan
from bench.store import Store
from bench.worker import Worker


def run_inline(plan: Plan, store: Store, context: dict[str, Any], threads: int,
               progress: bool) -> tuple[int, int, list[str]]:
    """Run the plan here with ``threads`` intra-op threads; returns (stages run, models trained, failures)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        worker = Worker(plan, store, context, progress=progress)
        worker.run()
    finally:
        torch.set_num_threads(previous)
    return worker.ran, worker.fitted, worker.failures
