"""Published numbers, shown beside the measured ones — never in their place.

``papers.csv`` holds one line per published value: paper, table, dataset, method, a
human-readable ``configuration``, the conditions a measured setting must meet to be the same
experiment (``match``: hyperparameters; ``metric_match``: metric parameters, both JSON
objects), the metric, mean, std (blank when the paper gives none) and a ``note`` (why it
cannot be run here yet, or how the protocols differ).

A published value is attached to a leaderboard line when the dataset, method and metric are
the same and every condition holds for the line's hyperparameters and the metric's
parameters; a condition on a key the setting does not have never holds (a published row
that needs a network or protocol this harness does not offer stays unmatched, and says why
in the reproduction table). The measured cell is never filled from a published value: a
setting with missing seeds stays missing, with the published value beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.tables import digits

PAPERS = Path(__file__).with_name("papers.csv")
COLUMNS = ("paper", "table", "dataset", "method", "configuration", "match", "metric_match", "metric", "mean", "std", "note")


def load(path: str | Path = PAPERS) -> pd.DataFrame:
    """The published values, validated; a bad line names the file, line and column."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(COLUMNS)}")
    out = []
    for i, raw in frame.iterrows():
        line = i + 2  # the header is line 1
        row: dict[str, Any] = {c: raw[c].strip() for c in COLUMNS}
        for key in ("paper", "table", "dataset", "method", "metric"):
            if not row[key]:
                raise ValueError(f"{path}, line {line}: column {key!r} is empty")
        for key in ("match", "metric_match"):
            try:
                row[key] = json.loads(row[key] or "{}")
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {line}: column {key!r} is not JSON ({exc.msg}): {raw[key]!r}") from None
            if not isinstance(row[key], dict):
                raise ValueError(f"{path}, line {line}: column {key!r} must be a JSON object, got {raw[key]!r}")
        for key in ("mean", "std"):
            text = row[key]
            try:
                row[key] = float(text) if text else np.nan
            except ValueError:
                raise ValueError(f"{path}, line {line}: column {key!r} must be a number, got {text!r}") from None
        if np.isnan(row["mean"]):
            raise ValueError(f"{path}, line {line}: column 'mean' is empty")
        out.append(row)
    return pd.DataFrame(out, columns=list(COLUMNS))


def _settings(rows: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    """(dataset, method, config_id) → {"params": hyperparameters, "metric_params": {metric: params}}."""
    out: dict[tuple, dict[str, Any]] = {}
    for key, sub in rows.groupby(["dataset", "method", "config_id"], dropna=False):
        params = next((json.loads(p) for p in sub.get("params", pd.Series(dtype=str)) if isinstance(p, str) and p), {})
        metric_params: dict[str, dict] = {}
        if "metric_params" in sub:
            for metric, mp in zip(sub["metric"], sub["metric_params"]):
                if isinstance(metric, str) and metric and isinstance(mp, str) and mp:
                    metric_params.setdefault(metric, json.loads(mp))
        out[key] = {"params": params, "metric_params": metric_params}
    return out


def _holds(conditions: dict[str, Any], values: dict[str, Any]) -> bool:
    return all(key in values and values[key] == want for key, want in conditions.items())


def matches(reported: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (published value, measured setting) pair that is the same experiment."""
    settings = _settings(rows)
    out = []
    for _, r in reported.iterrows():
        for (dataset, method, config), s in settings.items():
            if (dataset, method) != (r["dataset"], r["method"]) or not _holds(r["match"], s["params"]):
                continue
            if r["metric"] not in s["metric_params"] or not _holds(r["metric_match"], s["metric_params"][r["metric"]]):
                continue
            out.append({**r.to_dict(), "config_id": config})
    return pd.DataFrame(out, columns=[*COLUMNS, "config_id"])


def attach(board: pd.DataFrame, rows: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with ``<metric>_reported``, ``<metric>_reported_std``, ``<metric>_reported_in``
    and ``<metric>_diff`` (measured − published; NaN when the measured value is missing)."""
    board = board.copy()
    if board.empty:
        return board
    found = matches(reported, rows)
    for _, m in found.iterrows():
        metric = m["metric"]
        hit = ((board["dataset"] == m["dataset"]) & (board["method"] == m["method"])
               & (board["config_id"] == m["config_id"]))
        if not hit.any():
            continue
        for suffix in ("_reported", "_reported_std", "_diff"):
            if metric + suffix not in board:
                board[metric + suffix] = np.nan
        if metric + "_reported_in" not in board:
            board[metric + "_reported_in"] = ""
        board.loc[hit, metric + "_reported"] = m["mean"]
        board.loc[hit, metric + "_reported_std"] = m["std"]
        board.loc[hit, metric + "_reported_in"] = f"{m['paper']}, {m['table']}"
        measured = board.loc[hit, f"{metric}_mean"] if f"{metric}_mean" in board else np.nan
        board.loc[hit, metric + "_diff"] = measured - m["mean"]
    return board


def reproduction_table(board: pd.DataFrame, rows: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """Per published value: what was measured under the same protocol, the difference, or why nothing was."""
    found = matches(reported, rows) if len(rows) else pd.DataFrame(columns=[*COLUMNS, "config_id"])
    grid = set(zip(rows["dataset"], rows["method"])) if len(rows) else set()
    out = []
    for i, r in reported.iterrows():
        line = {k: r[k] for k in ("paper", "table", "dataset", "method", "configuration", "metric", "mean", "std")}
        hits = found[(found["paper"] == r["paper"]) & (found["table"] == r["table"]) & (found["dataset"] == r["dataset"])
                     & (found["method"] == r["method"]) & (found["metric"] == r["metric"])
                     & (found["configuration"] == r["configuration"])]
        line["measured"], line["diff"], line["config_id"] = np.nan, np.nan, ""
        if len(hits):
            config = hits["config_id"].iloc[0]
            b = board[(board["dataset"] == r["dataset"]) & (board["method"] == r["method"]) & (board["config_id"] == config)]
            mean = b[f"{r['metric']}_mean"].iloc[0] if len(b) and f"{r['metric']}_mean" in b else np.nan
            line["measured"], line["diff"], line["config_id"] = mean, mean - r["mean"], config
            line["status"] = "measured" if not np.isnan(mean) else "same setting, not all seeds finished"
        elif (r["dataset"], r["method"]) in grid:
            line["status"] = "not the same setting: " + (r["note"] or "the grid's hyperparameters or metric "
                                                         "parameters differ from the published ones")
        else:
            line["status"] = "not run in this grid" + (f" ({r['note']})" if r["note"] else "")
        out.append(line)
    return pd.DataFrame(out)


def reproduction_markdown(table: pd.DataFrame) -> str:
    """``reproduction.md``: one section per paper table."""
    def fmt(mean: float, std: float = np.nan, published: bool = False) -> str:
        if np.isnan(mean):
            return "—"
        if published:  # as the paper prints it
            return f"{mean:g}" + ("" if np.isnan(std) else f" ± {std:g}")
        return f"{mean:.{digits(mean)}f}"

    parts = ["# Reproduction of published tables\n",
             "Published values (`bench/reported/papers.csv`) beside what this grid measured under the same "
             "setting and protocol; Δ = measured − published. A published value is never shown as measured.\n"]
    for (paper, tab), sub in table.groupby(["paper", "table"], sort=False):
        n = int(sub["measured"].notna().sum())
        parts.append(f"\n## {paper} — {tab} ({n} of {len(sub)} values measured here)\n")
        parts.append("| dataset | method | configuration | metric | published | measured | Δ | status |")
        parts.append("|---|---|---|---|---|---|---|---|")
        for _, r in sub.iterrows():
            diff = "—" if np.isnan(r["diff"]) else f"{r['diff']:+.{digits(r['mean'])}f}"
            parts.append(f"| {r['dataset']} | {r['method']} | {r['configuration']} | {r['metric']} | "
                         f"{fmt(r['mean'], r['std'], published=True)} | {fmt(r['measured'])} | {diff} | {r['status']} |")
    return "\n".join(parts) + "\n"
