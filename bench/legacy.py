"""Adopt a results folder written before the stage store existed (``results/cells/<cell id>/``).

Until the stage store (:mod:`bench.store`), ``bench run`` wrote one folder per grid cell
with its checkpoint and metric rows. Such folders still sit on users' disks holding trained
models: rather than retrain them, a run adopts every cell whose model identity is a model of
its plan as that model's stage, and its metric rows as the matching evaluations (same
metric parameters and version). The old folders are kept, marked ``adopted.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench import registry
from bench.results import FAILED, OK, make_row, read_rows, rows_frame, write_csv_atomic
from bench.stages import EvalStage, ModelStage, Plan
from bench.records import read_json, write_json_atomic
from bench.store import DONE, Store
from bench.worker import MODEL_ARTIFACTS, Worker


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
        base = {**worker.row_base(match), "stage": "model", "fit_seconds": fit.get("fit_seconds")}
        rows = [make_row(base, k, v, OK) for k, v in fit.get("rows", {}).items()]
        write_csv_atomic(rows_frame(rows), target / "rows.csv")
        (target / "train_log.jsonl").write_text("")  # the earlier layout kept no curve
        artifacts = [n for n in MODEL_ARTIFACTS if (target / n).is_file()]
        token = store.finish("model", match.id, claim, artifacts, deps={},
                             summary={"fit_seconds": fit.get("fit_seconds"), "rows": fit.get("rows", {}),
                                      "adopted_from": str(folder)})
        if token is None:
            continue
        worker.record_done(match.id, token, {})
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
        base = {**worker.row_base(model), "stage": "evaluation", "eval_id": ev.id, "metric_version": ev.metric_version}
        rows = [{**r, **base} for r in rows]
        write_csv_atomic(rows_frame(rows), store.folder("evaluation", ev.id) / "rows.csv")
        store.finish("evaluation", ev.id, claim, ["rows.csv"], deps={model.id: worker.tokens[model.id]},
                     summary={"adopted": True})


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
