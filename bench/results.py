"""The tidy results table: one row per cell × metric, failures included.

Every cell folder holds ``rows.csv`` (written last, atomically: its presence means the cell
finished); ``results.csv`` is the concatenation of the rows of a grid's cells. Wide tables
exist only at render time (:mod:`bench.report`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

COLUMNS = [
    "cell_id", "config_id", "profile", "method", "method_version", "preset", "dataset", "dataset_version",
    "seed", "n_seeds_planned", "metric", "value", "status", "reason", "params", "metric_params", "metric_version",
    "packages", "git_commit", "device", "fit_seconds", "eval_seconds", "timestamp",
]
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` via a temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_json_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def rows_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in frame:
            frame[col] = None
    frame["metric_version"] = pd.to_numeric(frame["metric_version"]).astype("Int64")  # "2", not "2.0", in the CSV
    return frame[COLUMNS]


def read_cell_rows(folder: Path) -> pd.DataFrame | None:
    path = folder / "rows.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"cell_id": str, "config_id": str, "reason": str})


def read_results(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results table yet; run `bench run` first")
    frame = pd.read_csv(path, dtype={"cell_id": str, "config_id": str, "reason": str})
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
