"""The run's spec: what every worker process and array task reads to rebuild the plan and the run's context.

``plan/run-<id>/spec.json`` holds the validated profile, the results folder, the shard, the
device and the run's context (run id, start time, threads, package versions, git commit);
a worker rebuilds the same plan from it, so stage ids are the parent's. This module does
not import torch (a local worker process reads its spec before it pins its threads).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import stages as stage_graph
from bench.config import Profile
from bench.stages import Plan
from bench.records import write_json_atomic


def write_spec(profile: Profile, results_dir: Path, shard: tuple[int, int], context: dict[str, Any],
               progress: bool) -> Path:
    """The run's spec, read by every worker process and array task: ``plan/run-<id>/spec.json``."""
    path = results_dir / "plan" / f"run-{context['run']}" / "spec.json"
    write_json_atomic({"profile": asdict(profile), "results": str(results_dir), "shard": list(shard),
                       "device": context["device"], "context": context, "progress": progress}, path)
    return path


def spec_plan(spec: dict[str, Any], only: str | None = None) -> Plan:
    """A spec's plan — all of it, or (``only``) one stage and what it needs, dependencies first."""
    plan = stage_graph.plan(Profile(**spec["profile"]), shard=tuple(spec["shard"]))
    if only is None:
        return plan
    by_id, needed, todo = {s.id: s for s in plan.stages}, set(), [only]
    while todo:
        stage_id = todo.pop()
        if stage_id not in needed:
            needed.add(stage_id)
            todo += [d for _, d in by_id[stage_id].deps if d in by_id]
    return Plan(plan.profile, [s for s in plan.stages if s.id in needed])
