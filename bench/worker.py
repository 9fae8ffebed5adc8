"""The worker: takes the ready stages of a plan one at a time — claim, execute, settle — until none is left.

Every executor runs this same code on a stage (:mod:`bench.executors`): the inline one in
``bench run``'s own process, each local worker process of ``--jobs N``, each Slurm array
task. For one stage the worker

* checks it is ready: everything it is made from is done and unchanged (the completion
  tokens recorded in its ``done.json`` equal those of its inputs now), and nothing it needs
  failed in this run (then it fails too, with a reason naming what failed);
* claims it in the stage store (:mod:`bench.store`), so no other worker runs it;
* executes it: trains a model (or component) and writes its checkpoint, training rows,
  curve and figures (:mod:`bench.figures`); or loads the trained models an evaluation or
  a seed group needs and scores them (:mod:`bench.evaluation`);
* settles it: ``done.json`` with the artifacts' checksums renamed into place last, or
  ``failed.json`` with the reason (the grid goes on; the next run retries it).

A corrupt input found while loading is moved aside by the store; the stage then waits for
that input to be redone instead of failing.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench import registry
from bench.atomic import DiskFullError, disk_full, is_disk_full, writing
from bench.evaluation import evaluate, evaluate_group
from bench.figures import write_figures
from bench.results import FAILED, SKIPPED, OK, make_row, rows_frame, write_csv_atomic
from bench.stages import EvalStage, GroupStage, ModelStage, Plan, Stage
from bench.claims import WAIT_NOTICE, describe_owner
from bench.records import CorruptArtifactError, read_json
from bench.store import DONE, PENDING, RUNNING, Store
from bench.released.convert import convert
from bench.trainlog import TrainLog

#: without progress bars, a training stage prints a plain line (step, loss) at most this often, in seconds
PROGRESS_EVERY = 60.0

MODEL_ARTIFACTS = ("model.pt", "figures.npz", "rows.csv", "train_log.jsonl")


class Worker:
    """Takes ready stages of a plan, one at a time, until none is left (see the module docstring)."""

    def __init__(self, plan: Plan, store: Store, context: dict[str, Any], *, progress: bool = False,
                 poll: float = 0.5, name: str = "") -> None:
        self.plan, self.store, self.context, self.progress, self.poll, self.name = plan, store, context, progress, poll, name
        # progress bars only on a terminal; otherwise (a log file, --no-progress) one plain line per finished stage
        self.bars = progress and sys.stderr.isatty()
        self.by_id: dict[str, Stage] = {s.id: s for s in plan.stages}
        self.tokens: dict[str, str] = {}  # stage id -> completion token of a done, valid stage
        self.made_from: dict[str, dict[str, str]] = {}  # stage id -> the tokens of its inputs when it was done
        self.attempted: set[str] = set()
        self.failures: list[str] = []
        self.ran = self.fitted = 0
        self._models: dict[str, tuple[str, Any]] = {}  # model id -> (token, loaded adapter); the last few
        self._datasets: dict[str, Any] = {}

    # -- state ------------------------------------------------------------------------
    def status(self, stage: Stage) -> str:
        """done (and valid) | failed (in this run: terminal) | running (by another) | pending.

        A stage remembered as done stays done only while what it was made from is unchanged:
        when an input is redone in this run (its checkpoint was corrupt, say), everything made
        from it is pending again and redone in the same run.
        """
        if stage.id in self.tokens:
            if not stage.deps or self.dep_tokens(stage) == self.made_from.get(stage.id):
                return DONE
            self.forget(stage.id)
        st = self.store.state(stage.kind, stage.id)
        if st.status == DONE:
            expected = self.dep_tokens(stage)
            if expected is not None and st.done.get("deps") == expected and \
                    self.store.quick_check(stage.kind, stage.id, st.done):
                self.record_done(stage.id, st.done["token"], expected)
                return DONE
            return PENDING  # made from inputs that were redone since (or a corrupt artifact, moved aside)
        if st.status == "failed":
            if stage.id in self.attempted or st.failed.get("finished_epoch", 0) >= self.context["run_started"]:
                return "failed"
            return PENDING  # failed in an earlier run: retried
        return st.status

    def record_done(self, stage_id: str, token: str, deps: dict[str, str]) -> None:
        """Remember a done stage: its completion token and the tokens of the inputs it was made from."""
        self.tokens[stage_id] = token
        self.made_from[stage_id] = dict(deps)

    def forget(self, stage_id: str) -> None:
        """Forget a stage remembered as done (an input changed, or an artifact was moved aside)."""
        self.tokens.pop(stage_id, None)
        self.made_from.pop(stage_id, None)
        self._models.pop(stage_id, None)

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
        bar = tqdm(total=len(self.plan.stages), desc=f"grid {self.plan.profile}", unit="stage", disable=not self.bars)
        idle_since = told = None
        while True:
            progressed = waiting = False
            held: list[Stage] = []  # stages other workers hold: what this one waits for
            for stage in self.plan.stages:
                state = self.status(stage)
                if state in (DONE, "failed"):
                    continue
                if state == RUNNING:
                    waiting = True
                    held.append(stage)
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
                    held.append(stage)
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
                idle_since = told = None
                continue
            if waiting:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > WAIT_NOTICE and (told is None or time.monotonic() - told > 60):
                    self._say_waiting(held, time.monotonic() - idle_since)
                    told = time.monotonic()
                time.sleep(self.poll)
                continue
            break
        bar.close()

    def _say_waiting(self, held: list[Stage], seconds: float) -> None:
        """One line: the stages other workers hold that this worker waits for, and who holds them."""
        names = [f"{s.label} [{describe_owner(self.store.folder(s.kind, s.id) / 'claim.json')}]" for s in held[:3]]
        more = f" and {len(held) - 3} more" if len(held) > 3 else ""
        who = f"[{self.name}] " if self.name else ""
        print(f"bench: {who}waiting {seconds:.0f} s for {len(held)} stage(s) held by other workers: "
              f"{'; '.join(names)}{more}", file=sys.stderr, flush=True)

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
        except DiskFullError:
            self._remove_temporary_files(stage)
            raise  # the run ends with one line; the stage is pending again (no done.json), finished ones are kept
        except CorruptArtifactError as exc:
            # an input was corrupt and has been moved aside: it becomes pending, this stage waits for it
            self.attempted.discard(stage.id)
            self.ran -= 1
            for i in [i for i in self.tokens if not (self.store.folder(self.by_id[i].kind, i) / "done.json").exists()]:
                self.forget(i)  # what was made from it is forgotten too, by status(): its input changed
            self._models.clear()
            print(f"bench: {stage.label} waits for an input to be redone ({exc})", file=sys.stderr)
            return
        if not self.bars or self.name:
            state = "failed" if stage.id not in self.tokens else "done"
            finished = sum(1 for s in self.plan.stages if s.id in self.tokens or s.id in self.attempted)
            prefix = f"[{self.name}] " if self.name else ""
            print(f"{prefix}[{finished}/{len(self.plan.stages)}] {state}: {stage.kind} {stage.label} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)

    def _remove_temporary_files(self, stage: Stage) -> None:
        for tmp in self.store.folder(stage.kind, stage.id).glob("*.tmp*"):
            try:
                tmp.unlink()
            except OSError:
                pass

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
            write_csv_atomic(rows_frame([make_row(self.row_base(stage), "", float("nan"), FAILED, reason)]), folder / "rows.csv")
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
        record = read_json(path.parent / "done.json") or {}
        if record.get("token") not in (None, token):  # redone by another worker since we looked: record what we load
            self.record_done(stage.id, record["token"], record.get("deps") or {})
            token = record["token"]
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
    def row_base(self, stage: ModelStage) -> dict[str, Any]:
        return {
            "model_id": stage.id, "config_id": stage.config_id, "role": stage.role, "profile": self.context["profile"],
            "method": stage.method, "method_version": stage.method_version, "preset": stage.preset,
            "dataset": stage.dataset, "dataset_version": stage.dataset_version, "seed": stage.seed,
            "n_seeds_planned": stage.n_seeds_planned, "params": json.dumps(stage.params, sort_keys=True),
            "components": json.dumps(stage.components, sort_keys=True), "packages": self.context["packages"],
            "git_commit": self.context["git_commit"], "device": self.context["device"],
            "threads": self.context.get("threads"),
            "weights": f"{stage.params['pretrained']} (sha256 {stage.weights})" if stage.weights else None,
        }

    def _run_model(self, stage: ModelStage, claim) -> None:
        folder = self.store.folder("model", stage.id)
        base = {**self.row_base(stage), "stage": "model"}
        fit_seconds = float("nan")
        try:
            components = {name: self.load_model(self.by_id[cid]) for name, cid in stage.components.items()}
            dataset = self.dataset(stage.dataset)
            start = time.perf_counter()
            if stage.weights:
                adapter, info = self._convert(stage, folder, dataset, components), {}
            else:
                adapter = self._fit(stage, folder, dataset, components)
            fit_seconds = time.perf_counter() - start
            if not stage.weights:
                self.fitted += 1
                info = training_rows(adapter, stage.params, fit_seconds)
            adapter.save(folder / "model.pt")
            write_figures(adapter, dataset, folder, stage.seed)
            rows = [make_row({**base, "fit_seconds": fit_seconds}, name, value, OK) for name, value in info.items()]
            if stage.weights:  # the row that says where the weights came from
                rows = [make_row({**base, "fit_seconds": fit_seconds}, "convert_seconds", fit_seconds, OK)]
            write_csv_atomic(rows_frame(rows), folder / "rows.csv")
        except (CorruptArtifactError, DiskFullError):
            raise
        except Exception as exc:
            self._record_failure(stage, claim, folder, {**base, "fit_seconds": fit_seconds}, exc)
            return
        deps = {cid: self.tokens[cid] for cid in stage.components.values()}
        token = self.store.finish("model", stage.id, claim, list(MODEL_ARTIFACTS), deps=deps,
                                  summary={"fit_seconds": fit_seconds, "rows": info, "weights_sha256": stage.weights})
        if token is not None:
            self.record_done(stage.id, token, deps)
            self._remember(stage.id, token, adapter)

    def _fit(self, stage: ModelStage, folder: Path, dataset, components: dict[str, Any]):
        cls = registry.methods().load(stage.method)
        adapter = cls(**stage.params)
        prefix = f"[{self.name}] " if self.name else ""
        echo = None if self.bars else (lambda line: print(f"{prefix}      {line}", flush=True))  # no bar: plain lines
        log = TrainLog(folder / "train_log.jsonl", stage.params, tensorboard_dir=self.store.root / "tensorboard"
                       / f"{stage.method}-{stage.dataset}-seed{stage.seed}-{stage.id[:8]}",
                       echo=echo, every=PROGRESS_EVERY, label=f"training {stage.label}")
        adapter.set_logger(log)
        kwargs = {"components": components} if cls.components else {}
        try:
            adapter.fit(dataset, seed=stage.seed, device=self.context["device"], progress=self.bars, **kwargs)
        finally:
            adapter.set_logger(None)
            log.close()
        return adapter

    def _convert(self, stage: ModelStage, folder: Path, dataset, components: dict[str, Any]):
        """The model a released checkpoint holds (``pretrained``), converted instead of trained (an empty curve)."""
        adapter = convert(stage.method, stage.params["pretrained"], stage.params, dataset.image_shape, components)
        if hasattr(adapter, "to"):
            adapter.to(self.context["device"])
        TrainLog(folder / "train_log.jsonl", stage.params).close()
        return adapter

    def _record_failure(self, stage: Stage, claim, folder: Path, base: dict, exc: Exception) -> None:
        _raise_if_disk_full(exc, folder)
        reason = f"{type(exc).__name__}: {exc}" + (f" [log: {self.context['log']}]" if self.context.get("log") else "")
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()  # free the failed stage's memory for the next one
        _write_error(folder, traceback.format_exc())
        write_csv_atomic(rows_frame([make_row(base, "", float("nan"), FAILED, reason)]), folder / "rows.csv")
        self.store.fail(stage.kind, stage.id, claim, reason, run_started=self.context["run_started"],
                        artifacts=["rows.csv", "error.txt"])
        self.failures.append(f"{stage.label} ({stage.id}): {reason}")

    def _run_evaluation(self, stage: EvalStage, claim) -> None:
        model = stage.model
        folder = self.store.folder("evaluation", stage.id)
        done = read_json(self.store.folder("model", model.id) / "done.json") or {}
        base = {**self.row_base(model), "stage": "evaluation", "eval_id": stage.id,
                "fit_seconds": done.get("summary", {}).get("fit_seconds")}
        try:
            adapter = self.load_model(model)
            rows = evaluate(stage.metric, stage.params, adapter, self.dataset(model.dataset), model.seed, base)
        except (CorruptArtifactError, DiskFullError):
            raise
        except Exception as exc:
            _raise_if_disk_full(exc, folder)
            rows = [make_row({**base, "metric_version": stage.metric_version}, stage.metric, float("nan"), FAILED,
                         f"{type(exc).__name__}: {exc}", stage.params)]
            _write_error(folder, traceback.format_exc())
        self._settle(stage, claim, rows, deps={model.id: self.tokens[model.id]})

    def _run_group(self, stage: GroupStage, claim) -> None:
        done = [m for m in stage.members if self.status(m) == DONE]
        bases = [{**self.row_base(m), "stage": "group", "eval_id": stage.id, "metric_version": stage.metric_version}
                 for m in done]
        params, name = stage.params, stage.metric
        rows: list[dict[str, Any]] = []
        if len(done) < 2:
            reason = f"{name} compares the seeds of a setting; {len(done)} finished seed(s), it needs at least 2"
            rows = [make_row(b, name, float("nan"), SKIPPED, reason, params) for b in bases]
        else:
            try:
                models = [self.load_model(m) for m in done]
                rows = evaluate_group(name, params, models, self.dataset(done[0].dataset), bases)
            except (CorruptArtifactError, DiskFullError):
                raise
            except Exception as exc:
                _raise_if_disk_full(exc, self.store.folder(stage.kind, stage.id))
                reason = f"{type(exc).__name__}: {exc}"
                rows = [make_row(b, name, float("nan"), FAILED, reason, params) for b in bases]
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
            self.record_done(stage.id, token, deps)


def _raise_if_disk_full(exc: BaseException, folder: Path) -> None:
    """A full disk is not the stage's failure: it ends the run with one line (no failure record to write)."""
    if is_disk_full(exc):
        if isinstance(exc, DiskFullError):
            raise exc
        raise disk_full(Path(exc.filename) if getattr(exc, "filename", None) else folder) from None


def _write_error(folder: Path, text: str) -> None:
    with writing(folder / "error.txt", folder / "error.txt"):
        (folder / "error.txt").write_text(text)


def training_rows(adapter, params: dict[str, Any], seconds: float) -> dict[str, float]:
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

