"""Run a grid: plan its stages, check the device, hand the stages to an executor, collect the rows, report.

A grid is a graph of stages: components, models, evaluations, seed groups (see :mod:`bench.stages`).

Each stage runs once, in its own folder of the stage store (:mod:`bench.store`), claimed by
one worker; its ``done.json`` is renamed into place last. Consequences a user relies on:

* adding a metric to a finished grid runs only the new evaluations, on the saved checkpoints
  (no ``fit``); dropping one leaves its stages in the store (reused if it comes back); a
  changed metric parameter or version is a new evaluation; a changed hyperparameter is a new
  model, and only that model is trained;
* a component (a DPM that PDAE and DisDiff train on, ...) is trained once for all its
  dependants; a failed component fails its dependants with a reason that names it;
* a killed run, started again, resumes: finished stages are kept, a stage whose worker died
  is taken over (its claim is stale) and redone from the start;
* a failing stage (exception, NaN loss, out of memory) records ``failed`` rows with the
  reason and the grid goes on; the next run retries it. The exit status of ``bench run`` is
  the number of failed stages;
* any number of workers — ``--jobs N`` here (``--threads`` intra-op threads each), or ``bench run`` processes on several machines
  sharing the results folder — run one grid together: each takes the first ready stage
  nobody holds, waits while what it needs is being trained by another, and stops when
  nothing is left;
* every artifact's checksum is recorded when written; a corrupt one is moved aside
  (``quarantine/``) and its stage, and what was made from it, redone.

``results.csv`` is rebuilt from the stages' ``rows.csv`` under a lock, so workers finishing
together never lose rows.

Where things are: the executors (:mod:`bench.executors`) decide where stages run; the
worker (:mod:`bench.worker`) claims, executes and settles one stage; the evaluation glue
(:mod:`bench.evaluation`) and the figures (:mod:`bench.figures`) are what it executes; the
stage store (:mod:`bench.store`) keeps the folders.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import registry
from bench import stages as stage_graph
from bench.data.files import CorruptDatasetError, DatasetFilesMissing
from bench.data.root import root_flag
from bench.adapter import resolve_device
from bench.config import ConfigError, Profile
from bench.executors import slurm
from bench.executors.inline import run_inline
from bench.executors.local import run_local_workers
from bench.legacy import adopt_legacy
from bench.released import convert as released
from bench.released.checkpoint import CheckpointError
from bench.report import regenerate
from bench.results import git_commit, package_versions, write_results
from bench.stages import EvalStage, GroupStage, ModelStage, Plan
from bench.records import read_json, write_json_atomic
from bench.store import DONE, Store, check_writable
from bench.worker import Worker


@dataclass
class RunSummary:
    stages: int  # planned stages of this shard
    skipped: int  # already done before this run
    ran: int  # stages run by this run (all its workers)
    fitted: int  # models and components trained by this run
    failed: list[str]
    results_csv: Path
    planned: dict[str, int] = field(default_factory=dict)  # per role: component / model / evaluation / group
    jobs: list[str] = field(default_factory=list)  # submitted job ids (submitit executors)


def check_device(requested: str, profile: Profile, overridden: bool) -> str:
    """The device to run on; a malformed device, or one the machine lacks, stops the run before any work."""
    where = "--device" if overridden else f"profile {profile.name!r}"
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", requested or ""):
        raise ConfigError(f"{where} asks for device {requested!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N' "
                          "(or 'mps' on a Mac that has it)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{where} asks for device 'mps', but this machine has no MPS device "
                          f"(torch {torch.__version__}); run with --device cpu (or --device auto)")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{where} asks for device {requested!r}, but this machine has no CUDA device "
                f"(torch {torch.__version__}); run with --device cpu (or --device auto) to override")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{where} asks for device {requested!r}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); pass --device cuda:0 or another index")
    return str(resolve_device(requested))


def check_datasets(plan: Plan, todo: list) -> None:
    """Open each dataset the stages still to run need, once, before any work: missing or truncated files stop the run."""
    names = sorted({(s.model if isinstance(s, EvalStage) else s.members[0] if isinstance(s, GroupStage) else s).dataset
                    for s in todo})
    for name in names:
        try:
            registry.datasets().create(name)
        except (DatasetFilesMissing, CorruptDatasetError) as exc:
            raise ConfigError(f"profiles.{plan.profile}: dataset {name!r} cannot be read: {exc}; nothing was run "
                              f"(`bench data verify {name}{root_flag()}` checks its files)") from None


def check_released(plan: Plan, todo: list) -> None:
    """Each released checkpoint a stage still to run converts from fits its networks — read before any work:
    a missing, truncated or other-format file, a key of the file nothing consumes, a key or shape the network
    lacks stops the run with the path and what was expected."""
    by_id = {s.id: s for s in plan.stages}
    shapes: dict[str, tuple[int, ...]] = {}
    untrained: dict[str, object] = {}

    def build(stage: ModelStage):
        if stage.id not in untrained:
            comps = {name: build(by_id[cid]) for name, cid in stage.components.items()}
            if stage.dataset not in shapes:
                shapes[stage.dataset] = tuple(registry.datasets().create(stage.dataset).image_shape)
            skeleton = released.skeleton(stage.method, stage.params, shapes[stage.dataset], comps)
            if stage.weights:
                try:
                    released.check(stage.method, stage.params["pretrained"], stage.params, skeleton)
                except CheckpointError as exc:
                    raise ConfigError(f"profiles.{plan.profile}: {stage.label} (pretrained): {exc}; nothing was run") from None
            untrained[stage.id] = skeleton
        return untrained[stage.id]

    for stage in todo:
        if isinstance(stage, ModelStage) and stage.weights:
            build(stage)


def run_profile(
    profile: Profile,
    results_dir: Path,
    *,
    shard: tuple[int, int] = (0, 1),
    device: str | None = None,
    progress: bool = True,
    report: bool = True,
    jobs: int = 1,
    threads: int | None = None,
    executor: str = "inline",
    wait: bool = True,
    config_path: str = "bench.toml",
    grid: Profile | None = None,
) -> RunSummary:
    """Run (or resume) every stage of ``profile`` in this shard, then rebuild results.csv and the report.

    ``threads``: PyTorch intra-op threads per stage (default: the cores divided among the
    ``jobs`` workers). On a CPU, PyTorch's results depend on it (reductions are split by
    thread), so it is recorded in every row; the same ``threads`` gives the same values
    whatever ``jobs`` is.

    ``executor``: ``"inline"`` (this process, or ``jobs`` local worker processes), or
    ``"slurm"`` / ``"local"`` / ``"debug"`` through submitit (:mod:`bench.executors`); with
    ``"slurm"`` and ``wait=False`` it returns once the jobs are submitted.

    ``grid``: the whole profile when ``profile`` is a narrowed part of it (``bench run
    --methods ...``): only ``profile``'s stages run, but the plan file, ``results.csv`` and the
    report keep describing the whole grid.
    """
    results_dir = Path(results_dir)
    dev = check_device(device or profile.device, profile, device is not None)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    check_writable(results_dir)
    plan = stage_graph.plan(profile, shard=shard)
    whole = plan if grid is None else stage_graph.plan(grid, shard=shard)
    store = Store(results_dir)
    context = {"profile": profile.name, "packages": package_versions(), "git_commit": git_commit(), "device": dev,
               "threads": threads, "run": uuid.uuid4().hex[:12], "run_started": time.time()}
    adopt_legacy(plan, store, context)
    looker = Worker(plan, store, context)
    before = looker.count_done()
    todo = [s for s in plan.stages if looker.status(s) != DONE]
    check_datasets(plan, todo)
    check_released(plan, todo)
    # recorded once the run can start: a run stopped by a check above leaves no plan (bench status would count a
    # grid that never ran)
    write_json_atomic(whole.to_json(), results_dir / "plan" / f"{profile.name}.json")
    job_ids: list[str] = []
    if executor != "inline":
        job_ids, ran, fitted = slurm.submit(profile, results_dir, plan, context, executor=executor, shard=shard,
                                            wait=wait, progress=progress, where=f"profiles.{profile.name}.executor.slurm")
        if executor == "slurm" and not wait:
            slurm.print_submission(job_ids, ran, profile, config_path)
            return RunSummary(len(plan.stages), before, ran, 0, [], results_dir / "results.csv", plan.role_counts(), job_ids)
        failed = _failed_in_store(plan, store)
    elif jobs <= 1:
        ran, fitted, failed = run_inline(plan, store, context, threads, progress)
    else:
        ran, fitted, failed = run_local_workers(profile, results_dir, shard, dev, context, jobs, progress, plan)
    results_csv = collect_results(whole, store)
    if report:
        regenerate(results_dir)
    return RunSummary(len(plan.stages), before, ran, fitted, failed, results_csv, plan.role_counts(), job_ids)


def _failed_in_store(plan: Plan, store: Store) -> list[str]:
    """A line per planned stage that is failed and not done (what a set of jobs left behind)."""
    out = []
    for s in plan.stages:
        folder = store.folder(s.kind, s.id)
        record = read_json(folder / "failed.json")
        if isinstance(record, dict) and not (folder / "done.json").exists() and (s.kind == "model" or (folder / "rows.csv").exists()):
            out.append(f"{s.label} ({s.id}): {str(record.get('reason', '')).splitlines()[0] if record.get('reason') else ''}")
    return out


def collect_results(plan: Plan, store: Store) -> Path:
    """Concatenate the rows of the plan's finished and failed stages into ``results.csv`` (under a lock).

    Columns that depend on the grid rather than on the stage (profile, planned seeds) are
    those of this plan, so a stage shared by two grids reads right in each.
    """
    planned_seeds = {s.id: s.n_seeds_planned for s in plan.stages if isinstance(s, ModelStage)}

    def folders() -> list[Path]:
        worker = Worker(plan, store, {"run_started": 0.0, "run": ""})  # every recorded failure counts
        return [store.folder(s.kind, s.id) for s in plan.stages if worker.status(s) in ("failed", DONE)]

    return write_results(store.root, folders, {
        "profile": plan.profile,
        "n_seeds_planned": lambda f: f["model_id"].map(planned_seeds).fillna(f["n_seeds_planned"]),
    })
