"""Run a grid as a graph of stages: components, models, evaluations, seed groups (see :mod:`bench.stages`).

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
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bench import registry, stages as stage_graph
from bench.config import ConfigError, Profile
from bench.metrics import MetricUnavailableError
from bench.results import (
    FAILED, OK, SKIPPED, git_commit, package_versions, read_rows, rows_frame, write_csv_atomic, write_results,
)
from bench.stages import EvalStage, GroupStage, ModelStage, Plan, Stage
from bench.store import (
    DONE, PENDING, RUNNING, CorruptArtifactError, Store, check_writable, read_json, write_json_atomic,
)
from bench.trainlog import TrainLog

MODEL_ARTIFACTS = ("model.pt", "figures.npz", "rows.csv", "train_log.jsonl")


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
    """The device to run on; a CUDA device the machine lacks stops the run before any work."""
    from bench.adapter import resolve_device

    if requested.startswith("cuda"):
        where = "--device" if overridden else f"profile {profile.name!r}"
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{where} asks for device {requested!r}, but this machine has no CUDA device "
                f"(torch {torch.__version__}); run with --device cpu (or --device auto) to override")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{where} asks for device {requested!r}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); pass --device cuda:0 or another index")
    return str(resolve_device(requested))


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
) -> RunSummary:
    """Run (or resume) every stage of ``profile`` in this shard, then rebuild results.csv and the report.

    ``threads``: PyTorch intra-op threads per stage (default: the cores divided among the
    ``jobs`` workers). On a CPU, PyTorch's results depend on it (reductions are split by
    thread), so it is recorded in every row; the same ``threads`` gives the same values
    whatever ``jobs`` is.

    ``executor``: ``"inline"`` (this process, or ``jobs`` local worker processes), or
    ``"slurm"`` / ``"local"`` / ``"debug"`` through submitit (:mod:`bench.executors`); with
    ``"slurm"`` and ``wait=False`` it returns once the jobs are submitted.
    """
    results_dir = Path(results_dir)
    dev = check_device(device or profile.device, profile, device is not None)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    check_writable(results_dir)
    plan = stage_graph.plan(profile, shard=shard)
    store = Store(results_dir)
    write_json_atomic(plan.to_json(), results_dir / "plan" / f"{profile.name}.json")
    context = {"profile": profile.name, "packages": package_versions(), "git_commit": git_commit(), "device": dev,
               "threads": threads, "run": uuid.uuid4().hex[:12], "run_started": time.time()}
    adopt_legacy(plan, store, context)
    before = Worker(plan, store, context).count_done()
    job_ids: list[str] = []
    if executor != "inline":
        from bench import executors

        job_ids, ran, fitted = executors.submit(profile, results_dir, plan, context, executor=executor, shard=shard,
                                                wait=wait, progress=progress, where=f"profiles.{profile.name}.executor.slurm")
        if executor == "slurm" and not wait:
            executors.print_submission(job_ids, ran, profile, config_path)
            return RunSummary(len(plan.stages), before, ran, 0, [], results_dir / "results.csv", plan.role_counts(), job_ids)
        failed = _failed_in_store(plan, store)
    elif jobs <= 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            worker = Worker(plan, store, context, progress=progress)
            worker.run()
        finally:
            torch.set_num_threads(previous)
        ran, fitted, failed = worker.ran, worker.fitted, worker.failures
    else:
        ran, fitted, failed = _run_local_workers(profile, results_dir, shard, dev, context, jobs, progress)
    results_csv = collect_results(plan, store)
    if report:
        from bench.report import regenerate

        regenerate(results_dir)
    return RunSummary(len(plan.stages), before, ran, fitted, failed, results_csv, plan.role_counts(), job_ids)


def write_spec(profile: Profile, results_dir: Path, shard: tuple[int, int], context: dict[str, Any],
               progress: bool) -> Path:
    """The run's spec, read by every worker process and array task: ``plan/run-<id>/spec.json``."""
    path = results_dir / "plan" / f"run-{context['run']}" / "spec.json"
    write_json_atomic({"profile": asdict(profile), "results": str(results_dir), "shard": list(shard),
                       "device": context["device"], "context": context, "progress": progress}, path)
    return path


def spec_worker(spec: dict[str, Any], *, only: str | None = None, name: str = "",
                context: dict[str, Any] | None = None) -> Worker:
    """A worker over a spec's plan — all of it, or (``only``) one stage and what it needs, dependencies first."""
    plan = stage_graph.plan(Profile(**spec["profile"]), shard=tuple(spec["shard"]))
    if only is not None:
        by_id, needed, todo = {s.id: s for s in plan.stages}, set(), [only]
        while todo:
            stage_id = todo.pop()
            if stage_id not in needed:
                needed.add(stage_id)
                todo += [d for _, d in by_id[stage_id].deps if d in by_id]
        plan = Plan(plan.profile, [s for s in plan.stages if s.id in needed])
    return Worker(plan, Store(Path(spec["results"])), context or spec["context"], progress=spec["progress"], name=name)


def _failed_in_store(plan: Plan, store: Store) -> list[str]:
    """A line per planned stage that is failed and not done (what a set of jobs left behind)."""
    out = []
    for s in plan.stages:
        folder = store.folder(s.kind, s.id)
        record = read_json(folder / "failed.json")
        if record is not None and not (folder / "done.json").exists() and (s.kind == "model" or (folder / "rows.csv").exists()):
            out.append(f"{s.label} ({s.id}): {str(record.get('reason', '')).splitlines()[0] if record.get('reason') else ''}")
    return out


# -- workers ------------------------------------------------------------------------------
class Worker:
    """Takes ready stages of a plan, one at a time, until none is left (see the module docstring)."""

    def __init__(self, plan: Plan, store: Store, context: dict[str, Any], *, progress: bool = False,
                 poll: float = 0.5, name: str = "") -> None:
        self.plan, self.store, self.context, self.progress, self.poll, self.name = plan, store, context, progress, poll, name
        self.by_id: dict[str, Stage] = {s.id: s for s in plan.stages}
        self.tokens: dict[str, str] = {}  # stage id -> completion token of a done, valid stage
        self.attempted: set[str] = set()
        self.failures: list[str] = []
        self.ran = self.fitted = 0
        self._models: dict[str, tuple[str, Any]] = {}  # model id -> (token, loaded adapter); the last few
        self._datasets: dict[str, Any] = {}

    # -- state ------------------------------------------------------------------------
    def status(self, stage: Stage) -> str:
        """done (and valid) | failed (in this run: terminal) | running (by another) | pending."""
        if stage.id in self.tokens:
            return DONE
        st = self.store.state(stage.kind, stage.id)
        if st.status == DONE:
            expected = self.dep_tokens(stage)
            if expected is not None and st.done.get("deps") == expected and \
                    self.store.quick_check(stage.kind, stage.id, st.done):
                self.tokens[stage.id] = st.done["token"]
                return DONE
            return PENDING  # made from inputs that were redone since (or a corrupt artifact, moved aside)
        if st.status == "failed":
            if stage.id in self.attempted or st.failed.get("finished_epoch", 0) >= self.context["run_started"]:
                return "failed"
            return PENDING  # failed in an earlier run: retried
        return st.status

    def dep_tokens(self, stage: Stage) -> dict[str, str] | None:
        """The tokens of the stages ``stage`` is made from; None while one of them is not done."""
        deps = {}
        for kind, dep_id in stage.deps:
            dep = self.by_id.get(dep_id)
            state = self.status(dep) if dep is not None else PENDING
            if state == DONE:
                deps[dep_id] = self.tokens[dep_id]
            elif isinstance(stage, GroupStage) and state == "failed":
                continue  # a group scores the seeds that finished
            else:
                return None
        return deps

    def blocker(self, stage: Stage) -> tuple[Stage | None, bool]:
        """(a failed stage it needs, whether all it needs is done)."""
        ready = True
        for _, dep_id in stage.deps:
            dep = self.by_id[dep_id]
            state = self.status(dep)
            if state == "failed" and not isinstance(stage, GroupStage):
                return dep, False
            if state not in (DONE, "failed"):
                ready = False
        return None, ready

    def count_done(self) -> int:
        return sum(self.status(s) == DONE for s in self.plan.stages)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        bar = tqdm(total=len(self.plan.stages), desc=f"grid {self.plan.profile}", unit="stage", disable=not self.progress)
        while True:
            progressed = waiting = False
            for stage in self.plan.stages:
                state = self.status(stage)
                if state in (DONE, "failed"):
                    continue
                if state == RUNNING:
                    waiting = True
                    continue
                failed_dep, ready = self.blocker(stage)
                if failed_dep is not None:
                    self._fail_upstream(stage, failed_dep)
                    continue
                if not ready:
                    waiting = True
                    continue
                claim = self.store.claim(stage.kind, stage.id, stage.describe(), run=self.context["run"])
                if claim is None:
                    waiting = True
                    continue
                if self.status(stage) == DONE:  # finished by another worker between our look and our claim
                    claim.release()
                    continue
                self.store.invalidate(stage.kind, stage.id)
                bar.set_postfix_str(stage.label[:60])
                try:
                    self.execute(stage, claim)
                finally:
                    claim.release()  # already released when the stage finished or failed; here on an interrupt
                progressed = True
                break
            bar.n = sum(1 for s in self.plan.stages if s.id in self.tokens or s.id in self.attempted)
            bar.refresh()
            if progressed:
                continue
            if waiting:
                time.sleep(self.poll)
                continue
            break
        bar.close()

    def execute(self, stage: Stage, claim) -> None:
        self.attempted.add(stage.id)
        self.ran += 1
        start = time.perf_counter()
        try:
            if isinstance(stage, ModelStage):
                self._run_model(stage, claim)
            elif isinstance(stage, EvalStage):
                self._run_evaluation(stage, claim)
            else:
                self._run_group(stage, claim)
        except CorruptArtifactError as exc:
            # an input was corrupt and has been moved aside: it becomes pending, this stage waits for it
            self.attempted.discard(stage.id)
            self.ran -= 1
            self.tokens = {i: t for i, t in self.tokens.items()
                           if (self.store.folder(self.by_id[i].kind, i) / "done.json").exists()}
            self._models.clear()
            print(f"bench: {stage.label} waits for an input to be redone ({exc})", file=sys.stderr)
            return
        if self.name and self.progress:
            state = "failed" if stage.id not in self.tokens else "done"
            print(f"[{self.name}] {state}: {stage.kind} {stage.label} ({time.perf_counter() - start:.1f} s)", flush=True)

    def _fail_upstream(self, stage: Stage, failed_dep: Stage) -> None:
        """A stage that cannot run because something it needs failed; the reason names that stage."""
        what = "component" if getattr(failed_dep, "role", "") == "component" else failed_dep.kind
        record = read_json(self.store.folder(failed_dep.kind, failed_dep.id) / "failed.json") or {}
        first = (str(record.get("reason") or "").splitlines() or ["no reason recorded"])[0]
        reason = f"{what} {failed_dep.label} ({failed_dep.id}) failed: {first}"
        self.attempted.add(stage.id)
        folder = self.store.folder(stage.kind, stage.id)
        folder.mkdir(parents=True, exist_ok=True)
        artifacts: list[str] = []
        if isinstance(stage, ModelStage):
            write_csv_atomic(rows_frame([_row(self._base(stage), "", float("nan"), FAILED, reason)]), folder / "rows.csv")
            artifacts = ["rows.csv"]
            self.failures.append(f"{stage.label} ({stage.id}): {reason}")
        self.store.fail(stage.kind, stage.id, None, reason, run_started=self.context["run_started"], artifacts=artifacts)

    # -- loading ----------------------------------------------------------------------
    def dataset(self, name: str):
        if name not in self._datasets:
            self._datasets[name] = registry.datasets().create(name)
        return self._datasets[name]

    def load_model(self, stage: ModelStage):
        """The trained adapter of a done model stage (checksum verified; components loaded first)."""
        token = self.tokens[stage.id]
        cached = self._models.get(stage.id)
        if cached is not None and cached[0] == token:
            return cached[1]
        components = {name: self.load_model(self.by_id[cid]) for name, cid in stage.components.items()}
        path = self.store.verified("model", stage.id, "model.pt")
        try:
            adapter = registry.methods().load(stage.method).load(path, components=components)
        except Exception as exc:  # unreadable although its checksum matches: written by another version?
            raise RuntimeError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})") from exc
        if hasattr(adapter, "to"):
            adapter.to(self.context["device"])
        self._remember(stage.id, token, adapter)
        return adapter

    def _remember(self, model_id: str, token: str, adapter) -> None:
        self._models[model_id] = (token, adapter)
        while len(self._models) > 3:
            self._models.pop(next(iter(self._models)))

    # -- running ----------------------------------------------------------------------
    def _base(self, stage: ModelStage) -> dict[str, Any]:
        return {
            "model_id": stage.id, "config_id": stage.config_id, "role": stage.role, "profile": self.context["profile"],
            "method": stage.method, "method_version": stage.method_version, "preset": stage.preset,
            "dataset": stage.dataset, "dataset_version": stage.dataset_version, "seed": stage.seed,
            "n_seeds_planned": stage.n_seeds_planned, "params": json.dumps(stage.params, sort_keys=True),
            "components": json.dumps(stage.components, sort_keys=True), "packages": self.context["packages"],
            "git_commit": self.context["git_commit"], "device": self.context["device"],
            "threads": self.context.get("threads"),
        }

    def _run_model(self, stage: ModelStage, claim) -> None:
        folder = self.store.folder("model", stage.id)
        base = {**self._base(stage), "stage": "model"}
        fit_seconds = float("nan")
        try:
            components = {name: self.load_model(self.by_id[cid]) for name, cid in stage.components.items()}
            cls = registry.methods().load(stage.method)
            dataset = self.dataset(stage.dataset)
            adapter = cls(**stage.params)
            log = TrainLog(folder / "train_log.jsonl", stage.params, tensorboard_dir=self.store.root / "tensorboard"
                           / f"{stage.method}-{stage.dataset}-seed{stage.seed}-{stage.id[:8]}")
            adapter.set_logger(log)
            kwargs = {"components": components} if cls.components else {}
            start = time.perf_counter()
            try:
                adapter.fit(dataset, seed=stage.seed, device=self.context["device"], progress=self.progress, **kwargs)
            finally:
                adapter.set_logger(None)
                log.close()
            fit_seconds = time.perf_counter() - start
            self.fitted += 1
            info = _training_rows(adapter, stage.params, fit_seconds)
            adapter.save(folder / "model.pt")
            _write_figures(adapter, dataset, folder, stage.seed)
            rows = [_row({**base, "fit_seconds": fit_seconds}, name, value, OK) for name, value in info.items()]
            write_csv_atomic(rows_frame(rows), folder / "rows.csv")
        except CorruptArtifactError:
            raise
        except Exception as exc:
            self._record_failure(stage, claim, folder, {**base, "fit_seconds": fit_seconds}, exc)
            return
        deps = {cid: self.tokens[cid] for cid in stage.components.values()}
        token = self.store.finish("model", stage.id, claim, list(MODEL_ARTIFACTS), deps=deps,
                                  summary={"fit_seconds": fit_seconds, "rows": info})
        if token is not None:
            self.tokens[stage.id] = token
            self._remember(stage.id, token, adapter)

    def _record_failure(self, stage: Stage, claim, folder: Path, base: dict, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}" + (f" [log: {self.context['log']}]" if self.context.get("log") else "")
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()  # free the failed stage's memory for the next one
        (folder / "error.txt").write_text(traceback.format_exc())
        write_csv_atomic(rows_frame([_row(base, "", float("nan"), FAILED, reason)]), folder / "rows.csv")
        self.store.fail(stage.kind, stage.id, claim, reason, run_started=self.context["run_started"],
                        artifacts=["rows.csv", "error.txt"])
        self.failures.append(f"{stage.label} ({stage.id}): {reason}")

    def _run_evaluation(self, stage: EvalStage, claim) -> None:
        model = stage.model
        folder = self.store.folder("evaluation", stage.id)
        done = read_json(self.store.folder("model", model.id) / "done.json") or {}
        base = {**self._base(model), "stage": "evaluation", "eval_id": stage.id,
                "fit_seconds": done.get("summary", {}).get("fit_seconds")}
        try:
            adapter = self.load_model(model)
            rows = _evaluate(stage.metric, stage.params, adapter, self.dataset(model.dataset), model.seed, base)
        except CorruptArtifactError:
            raise
        except Exception as exc:
            rows = [_row({**base, "metric_version": stage.metric_version}, stage.metric, float("nan"), FAILED,
                         f"{type(exc).__name__}: {exc}", stage.params)]
            (folder / "error.txt").write_text(traceback.format_exc())
        self._settle(stage, claim, rows, deps={model.id: self.tokens[model.id]})

    def _run_group(self, stage: GroupStage, claim) -> None:
        done = [m for m in stage.members if self.status(m) == DONE]
        bases = [{**self._base(m), "stage": "group", "eval_id": stage.id, "metric_version": stage.metric_version}
                 for m in done]
        params, name = stage.params, stage.metric
        rows: list[dict[str, Any]] = []
        if len(done) < 2:
            reason = f"{name} compares the seeds of a setting; {len(done)} finished seed(s), it needs at least 2"
            rows = [_row(b, name, float("nan"), SKIPPED, reason, params) for b in bases]
        else:
            try:
                entry = registry.metrics().get(name)
                models = [self.load_model(m) for m in done]
                start = time.perf_counter()
                values = entry.load()(self.dataset(done[0].dataset), models, np.random.RandomState(0), **params)
                seconds = time.perf_counter() - start
                for i, b in enumerate(bases):
                    rows += [_row(b, key, float(values[key][i]), OK, None, params, seconds)
                             for key in entry.meta.get("outputs", tuple(values)) if key in values]
            except CorruptArtifactError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                rows = [_row(b, name, float("nan"), FAILED, reason, params) for b in bases]
        self._settle(stage, claim, rows, deps={m.id: self.tokens[m.id] for m in done})

    def _settle(self, stage: Stage, claim, rows: list[dict[str, Any]], deps: dict[str, str]) -> None:
        """Write an evaluation's or group's rows; finish it, or record it failed (retried by the next run)."""
        write_csv_atomic(rows_frame(rows), self.store.folder(stage.kind, stage.id) / "rows.csv")
        failed = [r for r in rows if r["status"] == FAILED]
        if failed:
            self.store.fail(stage.kind, stage.id, claim, failed[0]["reason"], run_started=self.context["run_started"],
                            artifacts=["rows.csv"])
            self.failures.append(f"{stage.label} ({stage.id}): {failed[0]['reason']}")
            return
        token = self.store.finish(stage.kind, stage.id, claim, ["rows.csv"], deps=deps)
        if token is not None:
            self.tokens[stage.id] = token


def _training_rows(adapter, params: dict[str, Any], seconds: float) -> dict[str, float]:
    steps, batch = params.get("steps"), params.get("batch_size")
    info = {}
    if steps and batch:
        info["train_images_per_s"] = steps * batch / seconds
    history = getattr(adapter, "history_", None)
    if history:
        info["final_loss"] = float(history[-1][1])
    # what the adapter measured itself after training (a first stage's held-out reconstruction quality)
    info.update({k: float(v) for k, v in (getattr(adapter, "fit_metrics_", None) or {}).items()})
    return info


# -- local worker processes ----------------------------------------------------------------
def _run_local_workers(profile: Profile, results_dir: Path, shard: tuple[int, int], device: str,
                       context: dict[str, Any], jobs: int, progress: bool) -> tuple[int, int, list[str]]:
    """``jobs`` worker processes over one plan: one GPU each where there are GPUs, else a share of the cores."""
    spec = write_spec(profile, results_dir, shard, context, progress)
    spec_dir = spec.parent
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    procs = []
    for i in range(jobs):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.worker", str(spec), str(i)], env=env))
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


# -- evaluation -----------------------------------------------------------------------------
_CONTRACTS = {"factors": "FactorDataset", "labels": "LabelledDataset", "attributes": "AttributeDataset"}


def _evaluate(name: str, params: dict[str, Any], adapter, dataset, seed: int, base: dict) -> list[dict]:
    """Run one metric; an unmet requirement is a skipped row, a failure a failed row."""
    from bench.data import base as data_base

    entry = registry.metrics().get(name)
    base = {**base, "metric_version": stage_graph.metric_version(name)}
    requires, uses, capability = entry.meta.get("requires"), entry.meta.get("uses", "encode"), entry.meta.get("capability")
    if requires and not isinstance(dataset, getattr(data_base, _CONTRACTS[requires])):
        return [_row(base, name, float("nan"), SKIPPED, f"dataset {dataset.name!r} has no {requires}", params)]
    if capability and capability not in adapter.capabilities:
        return [_row(base, name, float("nan"), SKIPPED, f"method does not declare {capability!r}", params)]
    call_params = dict(params)
    if uses == "encode_t":  # a time sweep: encode(x, t=...) where the code depends on t
        from bench.metrics.probe import TimedEncoder

        fn = TimedEncoder(adapter.encode, "time_conditioned" in adapter.capabilities)
    else:
        fn = getattr(adapter, uses)
    protocol = call_params.get("sampler", "model") if uses == "sample" else "model"
    # a sampling protocol names an iterative (diffusion) sampler; a method that samples in one decoder
    # pass (the autoencoder family) has a single way to sample, which every protocol then means
    if protocol != "model" and hasattr(adapter, "using_sampler"):
        fn = _protocol_sampler(adapter, protocol)
    if call_params.pop("representation", "mean") == "sampled":
        if "stochastic_encode" not in adapter.capabilities:
            return [_row(base, name, float("nan"), SKIPPED, "sampled codes need a stochastic encoder", params)]
        fn = _sampled_encoder(adapter, seed)
    start = time.perf_counter()
    try:
        if uses == "encode" and "latent_units" in adapter.capabilities:
            fn = _unit_encoder(fn, adapter, dataset, seed)
        values = entry.load()(dataset, fn, np.random.RandomState(seed), **call_params)
    except MetricUnavailableError as exc:
        return [_row(base, name, float("nan"), SKIPPED, str(exc), params, time.perf_counter() - start)]
    except Exception as exc:
        return [_row(base, name, float("nan"), FAILED, f"{type(exc).__name__}: {exc}", params,
                     time.perf_counter() - start)]
    seconds = time.perf_counter() - start
    wanted = entry.meta.get("outputs", tuple(values))
    return [_row(base, key, float(values[key]), OK, None, params, seconds) for key in wanted if key in values]


#: images whose codes fit the per-unit PCA of a ``latent_units`` method (all when the dataset is smaller)
UNIT_FIT_SAMPLES = 10_000


def _unit_encoder(encode, adapter, dataset, seed: int, limit: int = UNIT_FIT_SAMPLES, chunk: int = 1000):
    """``encode`` with each latent unit reduced to its first principal component (DisDiff's protocol).

    The PCA of every unit is fitted on the codes of ``limit`` dataset images drawn with the
    evaluation's seed (DisDiff fits it on the whole dataset), then applied to every code the
    metric asks for (:mod:`bench.metrics.representation`).
    """
    from bench.metrics.representation import fit_unit_reducer

    unit_dim = int(adapter.latent_unit_dim)
    units = adapter.code_dim // unit_dim
    n = min(limit, len(dataset))
    idx = np.sort(np.random.RandomState(seed).choice(len(dataset), size=n, replace=False))
    codes = np.concatenate([np.asarray(encode(dataset.images(idx[i:i + chunk]))) for i in range(0, n, chunk)])
    reducer = fit_unit_reducer(codes.reshape(n, units, unit_dim))
    return lambda x: reducer.transform(np.asarray(encode(x)).reshape(len(x), units, unit_dim)).astype(np.float32)


def _protocol_sampler(adapter, protocol: str):
    """``adapter.sample`` with the named sampling protocol (FID's ``sampler``)."""

    def sample(n: int, *, seed: int = 0):
        with adapter.using_sampler(protocol):
            return adapter.sample(n, seed=seed)

    return sample


def _sampled_encoder(adapter, seed: int):
    """``encode`` drawing z ~ q(z|x) with fresh, reproducible noise on every call."""
    calls = itertools.count()
    return lambda x: adapter.encode(x, stochastic=True, seed=seed * 1_000_003 + next(calls))


def _row(base: dict, metric: str, value: float, status: str, reason: str | None = None,
         metric_params: dict | None = None, eval_seconds: float | None = None) -> dict[str, Any]:
    return {
        **base, "metric": metric, "value": value, "status": status, "reason": reason,
        "metric_params": json.dumps(metric_params or {}, sort_keys=True), "eval_seconds": eval_seconds,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_figures(adapter, dataset, folder: Path, seed: int, n: int = 8, steps: int = 7) -> None:
    """Store the images the report draws: originals, reconstructions, samples, traversals."""
    rng = np.random.default_rng(seed)
    originals = dataset.images(np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)))
    arrays: dict[str, np.ndarray] = {"originals": originals}
    if "sample" in adapter.capabilities:  # a representation-only method (SimCLR) has no samples panel
        arrays["samples"] = adapter.sample(n * 2, seed=seed)
    if "reconstruct" in adapter.capabilities:
        arrays["reconstructions"] = adapter.reconstruct(originals)
    if "decode" in adapter.capabilities:
        codes = adapter.encode(dataset.images(rng.choice(len(dataset), size=min(256, len(dataset)), replace=False)))
        base_code = adapter.encode(originals[:1])[0]
        lo, hi = np.percentile(codes, 2, axis=0), np.percentile(codes, 98, axis=0)
        grid = np.repeat(base_code[None, None, :], codes.shape[1], axis=0).repeat(steps, axis=1)
        for d in range(codes.shape[1]):
            grid[d, :, d] = np.linspace(lo[d], hi[d], steps)
        images = adapter.decode(grid.reshape(-1, codes.shape[1]).astype(np.float32))
        arrays["traversal"] = images.reshape(codes.shape[1], steps, *images.shape[1:])
        if "latent_units" in adapter.capabilities:
            arrays["unit_swap"] = _unit_swaps(adapter, originals, steps - 1)
    if hasattr(adapter, "extra_figures"):  # method-specific panels (EncDiff's cross-attention maps)
        arrays.update(adapter.extra_figures(originals))
    tmp = folder / "figures.tmp.npz"
    np.savez_compressed(tmp, **{k: v.astype(np.float16) for k, v in arrays.items()})
    tmp.replace(folder / "figures.npz")


def _unit_swaps(adapter, originals: np.ndarray, k: int) -> np.ndarray:
    """(units, 1 + k, C, H, W): row c decodes image A's code with unit c taken from images B_1 … B_k.

    Column 0 is A's own code decoded; DisDiff's swapped-concept figure (``plot_swapped_concepts``).
    """
    unit_dim = int(adapter.latent_unit_dim)
    codes = adapter.encode(originals[: k + 1])
    units = codes.shape[1] // unit_dim
    a, others = codes[0].reshape(units, unit_dim), codes[1:].reshape(len(codes) - 1, units, unit_dim)
    grid = np.repeat(a[None, None], units, axis=0).repeat(1 + len(others), axis=1)  # (units, 1 + k, units, d)
    for c in range(units):
        grid[c, 1:, c] = others[:, c]
    images = adapter.decode(grid.reshape(-1, units * unit_dim).astype(np.float32))
    return images.reshape(units, 1 + len(others), *images.shape[1:])


# -- results --------------------------------------------------------------------------------
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


# -- the earlier layout (results/cells/<cell id>/) --------------------------------------------
def adopt_legacy(plan: Plan, store: Store, context: dict[str, Any]) -> int:
    """Adopt finished models (and their metric rows) of a results folder written before stages existed.

    A folder ``cells/<id>/`` with ``config.json``, ``model.pt`` and ``fit.json`` whose model
    identity (method and dataset versions from its rows) is a model of this plan becomes that
    model's stage, without retraining; its metric rows whose parameters and metric version
    match an evaluation of the plan become that evaluation. The old folders are kept, marked
    with ``adopted.json``. Returns the number of models adopted.
    """
    legacy = store.root / "cells"
    if not legacy.is_dir():
        return 0
    models = {s.id: s for s in plan.stages if isinstance(s, ModelStage)}
    evals: dict[tuple[str, str], list[EvalStage]] = {}
    for s in plan.stages:
        if isinstance(s, EvalStage):
            evals.setdefault((s.model.id, s.metric), []).append(s)
    worker = Worker(plan, store, context)
    adopted = 0
    for folder in sorted(p for p in legacy.iterdir() if p.is_dir()):
        config, fit = read_json(folder / "config.json"), read_json(folder / "fit.json")
        if config is None or fit is None or not (folder / "model.pt").is_file() or (folder / "adopted.json").exists():
            continue
        old_rows = read_rows(folder / "rows.csv")
        first = old_rows.iloc[0] if old_rows is not None and len(old_rows) else None
        cls_version = str(first["method_version"]) if first is not None and pd.notna(first.get("method_version")) else None
        ds_version = str(first["dataset_version"]) if first is not None and pd.notna(first.get("dataset_version")) else None
        match = next((m for m in models.values() if m.method == config.get("method") and m.dataset == config.get("dataset")
                      and m.seed == config.get("seed") and m.identity_params == _without(config.get("params"), m.omitted) and not m.components
                      and cls_version in (None, m.method_version) and ds_version in (None, m.dataset_version)), None)
        if match is None or worker.status(match) == DONE:
            continue
        claim = store.claim("model", match.id, match.describe(), run=context["run"])
        if claim is None:
            continue
        target = store.folder("model", match.id)
        for name in ("model.pt", "figures.npz"):
            if (folder / name).is_file():
                _link_or_copy(folder / name, target / name)
        base = {**worker._base(match), "stage": "model", "fit_seconds": fit.get("fit_seconds")}
        rows = [_row(base, k, v, OK) for k, v in fit.get("rows", {}).items()]
        write_csv_atomic(rows_frame(rows), target / "rows.csv")
        (target / "train_log.jsonl").write_text("")  # the earlier layout kept no curve
        artifacts = [n for n in MODEL_ARTIFACTS if (target / n).is_file()]
        token = store.finish("model", match.id, claim, artifacts, deps={},
                             summary={"fit_seconds": fit.get("fit_seconds"), "rows": fit.get("rows", {}),
                                      "adopted_from": str(folder)})
        if token is None:
            continue
        worker.tokens[match.id] = token
        adopted += 1
        if old_rows is not None:
            _adopt_legacy_rows(old_rows, match, evals, worker, store, context)
        write_json_atomic({"model_id": match.id, "adopted": context["run"]}, folder / "adopted.json")
    if adopted:
        print(f"bench: adopted {adopted} finished model(s) from the earlier layout ({legacy}) without retraining; "
              "the old folders are kept", file=sys.stderr)
    return adopted


def _without(params: Any, keys: tuple[str, ...]) -> Any:
    """``params`` less ``keys`` (a stored config may or may not hold the options added since)."""
    return {k: v for k, v in params.items() if k not in keys} if isinstance(params, dict) else params


def _adopt_legacy_rows(old_rows: pd.DataFrame, model: ModelStage, evals: dict, worker: Worker, store: Store,
                       context: dict[str, Any]) -> None:
    for ev in [e for (mid, _), es in evals.items() if mid == model.id for e in es]:
        keys = {ev.metric, *registry.metrics().get(ev.metric).meta.get("outputs", ())}
        mine = old_rows[old_rows["metric"].isin(keys)]
        if mine.empty or (mine["status"] == FAILED).any():
            continue
        versions = mine["metric_version"] if "metric_version" in mine else pd.Series(1, index=mine.index)
        if (versions.fillna(1).astype(int) != ev.metric_version).any():
            continue
        if any(json.loads(p) != ev.params for p in mine["metric_params"].fillna("{}")):
            continue
        claim = store.claim("evaluation", ev.id, ev.describe(), run=context["run"])
        if claim is None:
            continue
        rows = mine.drop(columns=[c for c in ("cell_id",) if c in mine]).to_dict("records")
        base = {**worker._base(model), "stage": "evaluation", "eval_id": ev.id, "metric_version": ev.metric_version}
        rows = [{**r, **base} for r in rows]
        write_csv_atomic(rows_frame(rows), store.folder("evaluation", ev.id) / "rows.csv")
        store.finish("evaluation", ev.id, claim, ["rows.csv"], deps={model.id: worker.tokens[model.id]},
                     summary={"adopted": True})


def _link_or_copy(src: Path, dst: Path) -> None:
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
