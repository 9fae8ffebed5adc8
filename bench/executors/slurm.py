"""Run a grid's stages through submitit: on a Slurm cluster, on this machine's submitit pool, or in-process.

``bench run --executor slurm`` submits the stages that are not done, in *waves*: a wave is a
Slurm job array, one array task per stage; wave k+1 depends (``afterany``) on the arrays of
wave k, so a stage waiting on a shared component starts when the component's job has ended.
Arrays hold at most ``max_array_size`` tasks (default 1,000; Slurm's ``MaxArraySize``
defaults to 1,001). Each task runs :func:`run_stage`: the same :class:`~bench.worker.Worker` code a local worker
runs, on the stage and what it needs — if the component's job died without finishing it
(``scancel``, a node failure), the dependant's task trains it (its claim has gone stale)
instead of failing. Claims keep every stage to one task even then.

A task that hits its time limit or is preempted gets submitit's signal
(``signal_delay_s`` before the end), releases its claims and is requeued (up to
``max_requeues`` times): the requeued task finds the finished stages done and restarts the
one that was cut short. Logs are under ``<results>/slurm/``; a failed stage's reason ends
with the path of its log. Model and evaluation stages may ask for different resources
(``[executor.slurm.evaluation]``).

``--executor local`` uses submitit's local executor (a single box without Slurm: one process
per stage, waves run one after the other) and ``--executor debug`` runs the stages in this
process, one by one, for stepping through a failing stage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit
import torch
from tqdm.auto import tqdm

from bench.config import ConfigError, Profile
from bench.executors.spec import spec_plan, write_spec
from bench.claims import release_active
from bench.records import write_json_atomic
from bench.store import DONE, RUNNING, Store
from bench.worker import Worker


class StageTask:
    """What one array task runs; submitit pickles it. Requeued on timeout and preemption (``checkpoint``)."""

    def __init__(self, spec_path: str) -> None:
        self.spec_path = spec_path

    def __call__(self, stage_id: str) -> dict[str, Any]:
        return run_stage(Path(self.spec_path), stage_id)

    def checkpoint(self, stage_id: str):
        """Called by submitit on the timeout/preemption signal: give up our claims, come back later."""
        release_active()
        return submitit.helpers.DelayedSubmission(StageTask(self.spec_path), stage_id)


def run_stage(spec_path: Path, stage_id: str) -> dict[str, Any]:
    """Run one stage (and whatever it needs that nobody finished) with the local worker's code path."""
    spec = json.loads(spec_path.read_text())
    context = dict(spec["context"])
    context["log"] = _log_path()
    if context.get("threads"):
        torch.set_num_threads(int(context["threads"]))  # the same values as a local worker with --threads
    worker = Worker(spec_plan(spec, only=stage_id), Store(Path(spec["results"])), context, progress=spec["progress"])
    worker.run()
    return {"ran": worker.ran, "fitted": worker.fitted, "failed": worker.failures}


def _log_path() -> str | None:
    try:
        env = submitit.JobEnvironment()
        return str(env.paths.stdout).replace("%j", env.job_id).replace("%t", str(env.global_rank))
    except Exception:
        return None


def slurm_parameters(settings: dict[str, Any], kind: str) -> dict[str, Any]:
    """submitit parameters for a stage kind from validated ``[executor.slurm]`` settings."""
    s = {k: v for k, v in settings.items() if k != "evaluation"}
    if kind != "model":
        s.update(settings.get("evaluation", {}))
    params: dict[str, Any] = {"timeout_min": s.get("time", 60), "slurm_signal_delay_s": s.get("signal_delay_s", 90),
                              "slurm_max_num_timeout": s.get("max_requeues", 3)}
    names = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos", "mem": "slurm_mem",
             "cpus_per_task": "cpus_per_task", "array_parallelism": "slurm_array_parallelism"}
    params.update({names[k]: v for k, v in s.items() if k in names})
    if s.get("gpus_per_task"):
        params["slurm_gpus_per_task"] = s["gpus_per_task"]
    if s.get("setup"):
        params["slurm_setup"] = list(s["setup"])
    if s.get("sbatch"):
        params["slurm_additional_parameters"] = dict(s["sbatch"])
    return params


def check_cluster(settings: dict[str, Any], where: str) -> None:
    """Before anything is submitted: Slurm is reachable and the partitions named exist."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise ConfigError("--executor slurm: sbatch/sinfo not found on PATH (is this a Slurm login node? "
                          "scripts/local-slurm.sh starts a one-node Slurm on this machine)")
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ConfigError(f"--executor slurm: sinfo failed: {out.stderr.strip() or out.stdout.strip()}")
    partitions = sorted({p.strip().rstrip("*") for p in out.stdout.split()})
    for key, table in (("partition", settings), ("evaluation.partition", settings.get("evaluation", {}))):
        name = table.get("partition")
        if name is not None and name not in partitions:
            raise ConfigError(f"{where}.{key} = {name!r}: no such partition on this cluster; sinfo lists "
                              f"{', '.join(partitions) or 'none'}")


def waves(pending) -> list[list]:
    """Pending stages by depth among the pending ones (wave 0: all they need is done or failed)."""
    pending_ids = {s.id for s in pending}
    level: dict[str, int] = {}
    for stage in pending:  # plan order puts what a stage needs before it
        deps = [d for _, d in stage.deps if d in pending_ids]
        level[stage.id] = 1 + max((level.get(d, 0) for d in deps), default=-1)
    out: list[list] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for stage in pending:
        out[level[stage.id]].append(stage)
    return out


def submit(profile: Profile, results_dir: Path, plan, context: dict[str, Any], *, executor: str, shard,
           wait: bool, progress: bool, where: str) -> tuple[list[str], int, int]:
    """Submit the stages of ``plan`` that are not done; returns (job ids, stages submitted, models trained)."""
    store = Store(results_dir)
    settings = profile.slurm
    if executor == "slurm":
        check_cluster(settings, where)
    worker = Worker(plan, store, context)
    pending = [s for s in plan.stages if worker.status(s) not in (DONE, RUNNING)]
    spec = write_spec(profile, results_dir, shard, context, progress=False)
    task = StageTask(str(spec))
    logs = results_dir / "slurm" / "%j"
    cluster = executor
    job_ids: list[str] = []
    previous: list[str] = []
    jobs = []
    fitted = 0
    for wave in waves(pending):
        wave_ids = []
        for kind in ("model", "other"):
            group = [s for s in wave if (s.kind == "model") == (kind == "model")]
            if not group:
                continue
            params = slurm_parameters(settings, "model" if kind == "model" else "evaluation")
            requeues = params.pop("slurm_max_num_timeout")
            if cluster != "slurm":
                ex = submitit.AutoExecutor(folder=logs, cluster=cluster)
                params = {"timeout_min": params["timeout_min"]}
            else:
                ex = submitit.AutoExecutor(folder=logs, cluster=cluster, slurm_max_num_timeout=requeues)
                if previous:
                    params["slurm_dependency"] = "afterany:" + ":".join(previous)
            ex.update_parameters(name=f"bench-{profile.name}", **params)
            ids = [s.id for s in group]
            chunk = int(settings.get("max_array_size", 1000))  # Slurm's MaxArraySize, and MaxJobCount counts tasks
            submitted = [job for i in range(0, len(ids), chunk) for job in ex.map_array(task, ids[i:i + chunk])]
            jobs += submitted
            wave_ids += sorted({str(j.job_id).split("_")[0] for j in submitted})
            if cluster != "slurm":  # no scheduler to order the waves: finish this one first
                fitted += sum(job.result()["fitted"] for job in submitted)
        job_ids += wave_ids
        previous = wave_ids
    record = {"run": context["run"], "executor": executor, "jobs": job_ids, "stages": [s.id for s in pending],
              "submitted": time.time()}
    write_json_atomic(record, spec.parent / "submission.json")
    if wait and cluster == "slurm":
        follow(job_ids, store, plan, progress)
        fitted = _fitted(jobs)
    return job_ids, len(pending), fitted


def _fitted(jobs: list) -> int:
    """Models trained by finished tasks (a cancelled or dead task counts 0: the store holds its stages' state).

    Only a task that wrote its result file is asked for it: submitit's ``job.result()`` waits while
    the job's state is unknown, and without Slurm accounting (no ``sacct``) the state of a task that
    died or ran out of requeues stays unknown forever, so asking would hang a finished ``--wait``.
    """
    total = 0
    for job in jobs:
        if not Path(job.paths.result_pickle).is_file():
            continue
        try:
            total += job.result()["fitted"]
        except Exception:
            pass
    return total


def follow(job_ids: list[str], store, plan, progress: bool, poll: float = 2.0) -> None:
    """Wait until none of ``job_ids`` is queued or running, showing finished stages: a bar on a terminal,
    else (a log file, ``--no-progress``) a plain line each time the count of finished stages changes."""
    bars = progress and sys.stderr.isatty()
    bar = tqdm(total=len(plan.stages), desc="slurm", unit="stage", disable=not bars)
    said = None
    while True:
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True)
        queued = [line for line in out.stdout.split() if line.strip()] if out.returncode == 0 else []
        done = sum((store.folder(s.kind, s.id) / "done.json").exists() or
                   (store.folder(s.kind, s.id) / "failed.json").exists() for s in plan.stages)
        bar.n = done
        bar.refresh()
        if not bars and done != said:
            said = done
            print(f"slurm: {done}/{len(plan.stages)} stages finished; {len(queued)} job(s) queued or running",
                  flush=True)
        if not queued and out.returncode == 0:
            break
        if out.returncode != 0 and "Invalid job id" in out.stderr:
            break
        time.sleep(poll)
    bar.close()


def print_submission(job_ids: list[str], n: int, profile: Profile, config: str) -> None:
    if not n:
        print("nothing to submit: every stage is done")
        return
    print(f"submitted {n} stages as {len(job_ids)} job array(s): {', '.join(job_ids)}")
    print(f"follow them with: bench status --config {config} --profile {profile.name}   "
          f"(then `bench report` once they are done)", file=sys.stdout)
