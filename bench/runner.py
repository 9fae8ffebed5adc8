"""Run a grid of cells: train, evaluate, write each cell's outputs atomically into its folder.

A cell folder ``<results>/cells/<cell id>/`` holds ``config.json``, ``model.pt`` (written
after training), ``figures.npz`` (images for the report) and finally ``rows.csv``. A cell
whose ``rows.csv`` has only ``ok`` rows is finished and skipped on the next run, so a killed
run resumes where it stopped; a cell with a checkpoint but no rows (killed during
evaluation) reloads the checkpoint instead of training again. A failing cell (exception,
NaN loss, out of memory) writes ``failed`` rows with the reason and the grid goes on.

Each metric row records its implementation's ``metric_version`` (the registration's
``version``). A cell whose rows of some metric failed, are missing, or were written by an
older version of that metric is *stale*: the next run reloads its checkpoint, re-evaluates
only those metrics and keeps the other rows, so fixing a metric never retrains a model and
a results table never mixes two implementations of one metric.

Cells are independent, so ``shard=(i, n)`` runs every n-th cell: n processes or cluster
jobs with the same results folder share a grid without coordination.

Metrics registered with ``scope="seeds"`` (UDR) score the seeds of one setting together.
They run after the cells, for every setting whose seeds have all been attempted, on the
saved checkpoints; each cell's rows go to ``<cell>/seeds_rows.csv`` and the set of models
scored to ``<results>/groups/<config id>.json``, so a finished group is not recomputed
until the set of its finished seeds or the metric's version changes (e.g. a failed seed re-run
successfully).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bench import registry
from bench.config import Cell, Profile
from bench.metrics import MetricUnavailableError
from bench.results import (
    FAILED, OK, SKIPPED, git_commit, package_versions, read_cell_rows, rows_frame, write_csv_atomic, write_json_atomic,
)


@dataclass
class RunSummary:
    cells: int
    skipped: int
    ran: int
    failed: list[str]
    results_csv: Path


def run_profile(
    profile: Profile,
    results_dir: Path,
    *,
    shard: tuple[int, int] = (0, 1),
    device: str | None = None,
    progress: bool = True,
    report: bool = True,
) -> RunSummary:
    """Run (or resume) every cell of ``profile`` in this shard, then rebuild the results."""
    from bench.adapter import resolve_device

    cells = profile.cells()
    index, count = shard
    mine = [c for i, c in enumerate(cells) if i % count == index]
    dev = str(resolve_device(device or profile.device))
    context = {"profile": profile.name, "packages": package_versions(), "git_commit": git_commit(), "device": dev}
    skipped, failed = 0, []
    bar = tqdm(mine, desc=f"grid {profile.name}", unit="cell", disable=not progress)
    for cell in bar:
        folder = results_dir / "cells" / cell.id
        bar.set_postfix_str(f"{cell.method}/{cell.dataset}/seed{cell.seed}")
        stale = stale_metrics(cell, read_cell_rows(folder))
        if stale is not None and not stale:
            skipped += 1
            continue
        rows = run_cell(cell, folder, context, progress=progress, only=stale)
        if (rows["status"] == FAILED).any():
            failed.append(f"{cell.method}/{cell.dataset}/seed{cell.seed} ({cell.id}): {rows['reason'].dropna().iloc[0]}")
    failed += run_seed_metrics(cells, results_dir, dev)
    results_csv = collect_results(cells, results_dir)
    if report:
        from bench.report import regenerate

        regenerate(results_dir)
    return RunSummary(len(mine), skipped, len(mine) - skipped, failed, results_csv)


def cell_finished(folder: Path) -> bool:
    """The cell trained and every metric ran (a checkpoint UDR can score), whatever the versions."""
    rows = read_cell_rows(folder)
    return rows is not None and not bool((rows["status"] == FAILED).any())


def metric_version(name: str) -> int:
    """The registered implementation version of metric ``name`` (1 unless bumped)."""
    return int(registry.metrics().get(name).meta.get("version", 1))


def stale_metrics(cell: Cell, rows: pd.DataFrame | None) -> set[str] | None:
    """Names of ``cell``'s per-cell metrics to (re-)evaluate; ``None``: run the whole cell.

    ``None`` when the cell has no rows or failed as a whole (training or loading); otherwise
    the metrics whose rows are missing, failed, or carry an older ``metric_version`` (rows
    written before versions were recorded count as version 1). Empty: the cell is finished.
    """
    if rows is None or ((rows["status"] == FAILED) & rows["metric"].isna()).any():
        return None
    versions = rows["metric_version"] if "metric_version" in rows else pd.Series(1, index=rows.index)
    versions = versions.fillna(1).astype(int)
    stale = set()
    for name in cell.metrics:
        if _is_seed_metric(name):
            continue
        mine = rows["metric"].isin(_metric_keys(name))
        if not mine.any() or (rows.loc[mine, "status"] == FAILED).any() or (versions[mine] != metric_version(name)).any():
            stale.add(name)
    return stale


def _metric_keys(name: str) -> set[str]:
    """The ``metric`` values of metric ``name``'s rows: its outputs, or its name on skipped/failed rows."""
    return {name, *registry.metrics().get(name).meta.get("outputs", ())}


def run_cell(cell: Cell, folder: Path, context: dict[str, Any], *, progress: bool = False,
             only: set[str] | None = None) -> pd.DataFrame:
    """Train (or reload) and evaluate one cell; always returns (and writes) its rows, failed or not.

    ``only``: re-evaluate just these metrics of a cell that has rows; its other metric rows
    are kept as they are (see :func:`stale_metrics`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    kept: list[dict[str, Any]] = []
    if only is not None:
        previous = read_cell_rows(folder)
        keys = set().union(*(_metric_keys(n) for n in cell.metrics if n not in only))
        if previous is not None:
            kept = previous[previous["metric"].isin(keys)].to_dict("records")
            for row in kept:  # rows written before versions were recorded are version 1
                if pd.isna(row.get("metric_version")):
                    row["metric_version"] = 1
    write_json_atomic({**dataclasses.asdict(cell), "cell_id": cell.id, "config_id": cell.config_id}, folder / "config.json")
    base = {
        "cell_id": cell.id, "config_id": cell.config_id, "profile": context["profile"], "method": cell.method,
        "preset": cell.preset, "dataset": cell.dataset, "seed": cell.seed, "n_seeds_planned": cell.n_seeds_planned,
        "params": json.dumps(cell.params, sort_keys=True), "packages": context["packages"],
        "git_commit": context["git_commit"], "device": context["device"],
    }
    rows: list[dict[str, Any]] = []
    fit_seconds = float("nan")
    try:
        cls = registry.methods().load(cell.method)
        base["method_version"] = cls.version
        dataset = registry.datasets().create(cell.dataset)
        base["dataset_version"] = dataset.version
        adapter, fit_seconds, fit_info = _fit_or_load(cls, cell, dataset, folder, context["device"], progress)
        base["fit_seconds"] = fit_seconds
        rows += [_row(base, name, value, OK) for name, value in fit_info.items()]
        if only is None or not (folder / "figures.npz").is_file():
            _write_figures(adapter, dataset, folder, cell.seed)
        for metric_name, metric_params in cell.metrics.items():
            if _is_seed_metric(metric_name):
                continue  # scored with the setting's other seeds, after the grid
            if only is not None and metric_name not in only:
                continue  # its rows are kept
            rows += _evaluate(metric_name, metric_params, adapter, dataset, cell.seed, base)
    except Exception as exc:  # the grid must go on; the reason is recorded, never lost
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()  # free the failed cell's memory for the next one
        (folder / "error.txt").write_text(traceback.format_exc())
        rows.append(_row({**base, "fit_seconds": fit_seconds}, "", float("nan"), FAILED, reason))
    frame = rows_frame(rows + kept)
    write_csv_atomic(frame, folder / "rows.csv")
    return frame


def _fit_or_load(cls, cell: Cell, dataset, folder: Path, device: str, progress: bool):
    checkpoint, info_path = folder / "model.pt", folder / "fit.json"
    if checkpoint.is_file() and info_path.is_file():
        adapter = cls.load(checkpoint)
        info = json.loads(info_path.read_text())
        if hasattr(adapter, "to"):
            adapter.to(device)
        return adapter, info["fit_seconds"], info["rows"]
    adapter = cls(**cell.params)
    start = time.perf_counter()
    adapter.fit(dataset, seed=cell.seed, device=device, progress=progress)
    seconds = time.perf_counter() - start
    steps, batch = cell.params.get("steps"), cell.params.get("batch_size")
    info_rows = {}
    if steps and batch:
        info_rows["train_images_per_s"] = steps * batch / seconds
    history = getattr(adapter, "history_", None)
    if history:
        info_rows["final_loss"] = float(history[-1][1])
    adapter.save(checkpoint)
    write_json_atomic({"fit_seconds": seconds, "rows": info_rows}, info_path)
    return adapter, seconds, info_rows


_CONTRACTS = {"factors": "FactorDataset", "labels": "LabelledDataset", "attributes": "AttributeDataset"}


def _evaluate(name: str, params: dict[str, Any], adapter, dataset, seed: int, base: dict) -> list[dict]:
    """Run one metric; an unmet requirement is a skipped row, a failure a failed row."""
    from bench.data import base as data_base

    entry = registry.metrics().get(name)
    base = {**base, "metric_version": metric_version(name)}
    requires, uses, capability = entry.meta.get("requires"), entry.meta.get("uses", "encode"), entry.meta.get("capability")
    if requires and not isinstance(dataset, getattr(data_base, _CONTRACTS[requires])):
        return [_row(base, name, float("nan"), SKIPPED, f"dataset {dataset.name!r} has no {requires}", params)]
    if capability and capability not in adapter.capabilities:
        return [_row(base, name, float("nan"), SKIPPED, f"method does not declare {capability!r}", params)]
    call_params = dict(params)
    fn = getattr(adapter, uses)
    if call_params.pop("representation", "mean") == "sampled":
        if "stochastic_encode" not in adapter.capabilities:
            return [_row(base, name, float("nan"), SKIPPED, "sampled codes need a stochastic encoder", params)]
        fn = _sampled_encoder(adapter, seed)
    start = time.perf_counter()
    try:
        values = entry.load()(dataset, fn, np.random.RandomState(seed), **call_params)
    except MetricUnavailableError as exc:
        return [_row(base, name, float("nan"), SKIPPED, str(exc), params, time.perf_counter() - start)]
    except Exception as exc:
        return [_row(base, name, float("nan"), FAILED, f"{type(exc).__name__}: {exc}", params,
                     time.perf_counter() - start)]
    seconds = time.perf_counter() - start
    wanted = entry.meta.get("outputs", tuple(values))
    return [_row(base, key, float(values[key]), OK, None, params, seconds) for key in wanted if key in values]


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
    arrays: dict[str, np.ndarray] = {"originals": originals, "samples": adapter.sample(n * 2, seed=seed)}
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
    tmp = folder / "figures.tmp.npz"
    np.savez_compressed(tmp, **{k: v.astype(np.float16) for k, v in arrays.items()})
    tmp.replace(folder / "figures.npz")


def _is_seed_metric(name: str) -> bool:
    return registry.metrics().get(name).meta.get("scope") == "seeds"


def run_seed_metrics(cells: list[Cell], results_dir: Path, device: str) -> list[str]:
    """Score every setting whose seeds have all run with its ``scope="seeds"`` metrics.

    Returns a line per setting whose scoring failed (the grid's other results are kept).
    """
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.config_id, []).append(cell)
    failures = []
    for config_id, members in groups.items():
        names = [m for m in members[0].metrics if _is_seed_metric(m)]
        if not names:
            continue
        folders = [results_dir / "cells" / c.id for c in members]
        if not all((f / "rows.csv").is_file() for f in folders):
            continue  # some seeds not run yet (another shard, or an interrupted run)
        done = [(c, f) for c, f in zip(members, folders) if cell_finished(f)]
        record_path = results_dir / "groups" / f"{config_id}.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        wanted = {"models": sorted(c.id for c, _ in done), "metrics": {n: members[0].metrics[n] for n in names},
                  "versions": {n: metric_version(n) for n in names}}
        record.setdefault("versions", {n: 1 for n in record.get("metrics", {})})  # written before versions
        if record == wanted and all((f / "seeds_rows.csv").is_file() for _, f in done):
            continue
        rows: dict[Path, list[dict]] = {f: [] for _, f in done}
        ok = True
        for name in names:
            params = members[0].metrics[name]
            try:
                for folder, row in _seed_metric_rows(name, params, done, device):
                    rows[folder].append(row)
            except Exception as exc:
                ok = False
                reason = f"{type(exc).__name__}: {exc}"
                failures.append(f"{name} of {members[0].method}/{members[0].dataset} ({config_id}): {reason}")
                for _, folder in done:
                    rows[folder].append(_row(_cell_base(folder, name), name, float("nan"), FAILED, reason, params))
        for folder, cell_rows in rows.items():
            write_csv_atomic(rows_frame(cell_rows), folder / "seeds_rows.csv")
        if ok:  # a failed scoring is retried by the next run
            write_json_atomic(wanted, record_path)
    return failures


def _cell_base(folder: Path, metric: str) -> dict[str, Any]:
    """The identifying columns of a cell's rows (method, dataset, seed, versions, ...) for ``metric``'s rows."""
    first = read_cell_rows(folder).iloc[0].to_dict()
    keep = ("metric", "value", "status", "reason", "metric_params", "metric_version", "eval_seconds", "timestamp")
    return {**{k: v for k, v in first.items() if k not in keep}, "metric_version": metric_version(metric)}


def _seed_metric_rows(name: str, params: dict[str, Any], done: list, device: str):
    """(cell folder, row) for each finished seed of one setting, scored together by metric ``name``."""
    if len(done) < 2:
        reason = f"{name} compares the seeds of a setting; {len(done)} finished seed(s), it needs at least 2"
        return [(f, _row(_cell_base(f, name), name, float("nan"), SKIPPED, reason, params)) for _, f in done]
    entry = registry.metrics().get(name)
    cls = registry.methods().load(done[0][0].method)
    dataset = registry.datasets().create(done[0][0].dataset)
    models = []
    for _, folder in done:
        model = cls.load(folder / "model.pt")
        if hasattr(model, "to"):
            model.to(device)
        models.append(model)
    start = time.perf_counter()
    values = entry.load()(dataset, models, np.random.RandomState(0), **params)
    seconds = time.perf_counter() - start
    out = []
    for i, (_, folder) in enumerate(done):
        base = _cell_base(folder, name)
        out += [(folder, _row(base, key, float(values[key][i]), OK, None, params, seconds))
                for key in entry.meta.get("outputs", tuple(values)) if key in values]
    return out


def collect_results(cells: list[Cell], results_dir: Path) -> Path:
    """Concatenate the rows of ``cells`` into ``results.csv`` (cells not yet run are absent)."""
    frames = [f for f in (read_cell_rows(results_dir / "cells" / c.id) for c in cells) if f is not None]
    frames += [pd.read_csv(p, dtype={"cell_id": str, "config_id": str, "reason": str})
               for p in (results_dir / "cells" / c.id / "seeds_rows.csv" for c in cells) if p.is_file()]
    frame = pd.concat(frames, ignore_index=True) if frames else rows_frame([])
    path = results_dir / "results.csv"
    write_csv_atomic(frame, path)
    return path
