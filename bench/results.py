"""The tidy results table: one row per model × metric, training rows and failures included.

Every stage folder holds ``rows.csv`` (see :mod:`bench.store`); ``results.csv`` is the
concatenation of the rows of a grid's stages. A row carries the model's id (``model_id``)
and, for a metric, the evaluation's (``eval_id``), the stage kind that wrote it (``stage``:
model | evaluation | group), the model's ``role`` (model, or component when it was trained
for other methods only) and the ids of the components it was trained on (``components``).
Wide tables exist only at render time (:mod:`bench.report`).
"""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench.atomic import write_bytes_atomic
from bench.claims import FileLock
from bench.records import read_plan
from bench.store import Store

COLUMNS = [
    "model_id", "eval_id", "stage", "role", "config_id", "profile", "method", "method_version", "preset", "dataset",
    "dataset_version", "seed", "n_seeds_planned", "weights", "metric", "value", "status", "reason", "params", "components",
    "metric_params", "metric_version", "packages", "git_commit", "device", "threads", "fit_seconds", "eval_seconds", "timestamp",
]
_ID_COLUMNS = {"model_id": str, "eval_id": str, "config_id": str, "reason": str, "components": str}
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


def make_row(base: dict, metric: str, value: float, status: str, reason: str | None = None,
             metric_params: dict | None = None, eval_seconds: float | None = None) -> dict[str, Any]:
    """One tidy row: ``base`` (the model's and stage's columns) with a metric, its value and status."""
    return {
        **base, "metric": metric, "value": value, "status": status, "reason": reason,
        "metric_params": json.dumps(metric_params or {}, sort_keys=True), "eval_seconds": eval_seconds,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` via a temporary file and a rename (never half a file, no temp file left)."""
    write_bytes_atomic(frame.to_csv(index=False).encode(), path)


def rows_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in frame:
            frame[col] = None
    frame["metric_version"] = pd.to_numeric(frame["metric_version"]).astype("Int64")  # "2", not "2.0", in the CSV
    return frame[COLUMNS]


class UnreadableTableError(ValueError):
    """A CSV table that cannot be parsed; the message names the file."""


def _read_csv(path: Path, what: str, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as exc:
        raise UnreadableTableError(f"{path}: cannot be read as {what} ({type(exc).__name__}: {exc})") from None


def read_rows(path: Path) -> pd.DataFrame | None:
    """The rows of one stage (``rows.csv``), or None when the file is absent."""
    if not path.is_file():
        return None
    return _read_csv(path, "a stage's rows table", dtype={**_ID_COLUMNS, "cell_id": str})


def read_results(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results table yet; run `bench run` first")
    frame = _read_csv(path, "a bench results table", dtype=_ID_COLUMNS)
    missing = [c for c in ("method", "dataset", "seed", "metric", "value", "status") if c not in frame]
    if missing:
        raise ValueError(f"{path}: not a bench results table, missing columns {missing}")
    return frame


def package_versions() -> str:
    names = ["torch", "numpy", "scikit-learn", "pandas"]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return json.dumps(versions, sort_keys=True)


def git_commit(cwd: Path | None = None) -> str:
    """The repository's HEAD commit (with ``-dirty`` for local changes), or "unknown"."""
    try:
        here = cwd or Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def collect_from_plans(results_dir: Path) -> Path | None:
    """Rebuild ``results.csv`` from the plans ``bench run`` recorded and the stages' rows (no torch).

    For results written by jobs that nobody waited for (``--executor slurm`` without
    ``--wait``): every planned stage that is done or failed contributes its ``rows.csv``.
    Returns None when the folder has no plan.
    """
    plans = sorted((results_dir / "plan").glob("*.json"))
    if not plans:
        return None

    def folders() -> list[Path]:
        seen, out = set(), []
        for plan_path in plans:
            for s in read_plan(plan_path)["stages"]:
                folder = results_dir / "stages" / s["kind"] / s["id"]
                if s["id"] not in seen and ((folder / "done.json").exists() or (folder / "failed.json").exists()):
                    seen.add(s["id"])
                    out.append(folder)
        return out

    return write_results(results_dir, folders)


def _trusted_rows(store: Store, folder: Path) -> pd.DataFrame | None:
    """A stage's rows, checked against the sha256 recorded with them; a corrupt stage is quarantined (None)."""
    kind, stage_id = folder.parent.name, folder.name
    in_store = folder.parent.parent == store.root / "stages"
    if in_store and store.being_redone(kind, stage_id):
        return None  # a worker is rewriting its rows: they come in with the next rebuild
    problem = store.rows_problem(kind, stage_id) if in_store else None
    if problem is None:
        try:
            return read_rows(folder / "rows.csv")
        except UnreadableTableError as exc:
            problem = str(exc)
            if not in_store:
                raise
    store.quarantine(kind, stage_id, problem)
    return None


def write_results(results_dir: Path, folders, columns: dict[str, Any] | None = None) -> Path:
    """Concatenate the ``rows.csv`` of ``folders()`` into ``results.csv``, under a lock shared by all writers.

    ``folders`` is called inside the lock, so a writer that comes last has seen every stage
    that finished before it; ``columns`` overwrites columns (a value, or a function of the frame).
    """
    path = results_dir / "results.csv"
    with FileLock(results_dir / "results.csv.lock"):
        store = Store(results_dir)
        frames = [f for f in (_trusted_rows(store, folder) for folder in folders()) if f is not None and len(f)]
        frame = rows_frame(pd.concat(frames, ignore_index=True).to_dict("records")) if frames else rows_frame([])
        if len(frame):
            for name, value in (columns or {}).items():
                frame[name] = value(frame) if callable(value) else value
        write_csv_atomic(frame, path)
    return path
