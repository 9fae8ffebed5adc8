"""``bench status``: how far a grid has got, read from the stage store alone (no torch, no pandas).

Per stage role (component, model, evaluation, group): how many are done, running (with the
owner's host and pid), failed (with the first line of the reason) and pending. The stages
of a profile are those ``bench run`` recorded in ``<results>/plan/<profile>.json``; for a
results folder without a profile, every plan recorded there plus every stage folder found.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from pathlib import Path
from typing import Any

from bench.store import KINDS, claim_is_stale, claim_timeout, read_json

ROLES = ("component", "model", "evaluation", "group")


def results_of_profile(config: Path, profile: str | None) -> tuple[Path, str]:
    """The results folder of ``profile`` in ``config`` (read with tomllib: validation needs torch)."""
    try:
        raw = tomllib.loads(config.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{config}: configuration file not found; pass --results DIR instead") from None
    name = profile or raw.get("default_profile") or next(iter(raw.get("profiles", {})), None)
    body = raw.get("profiles", {}).get(name)
    if body is None:
        raise ValueError(f"{config}: no profile {name!r}; defined: {', '.join(raw.get('profiles', {}))}")
    return (config.parent / body.get("results", "results")).resolve(), name


def collect(results: Path, profile: str | None = None) -> dict[str, Any]:
    """Counts and details per role; ``profile`` restricts to the stages of that profile's plan."""
    plans = [results / "plan" / f"{profile}.json"] if profile else sorted((results / "plan").glob("*.json"))
    known: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, id) -> (role, label)
    for path in plans:
        plan = read_json(path)
        if plan is None:
            if profile:
                raise FileNotFoundError(f"{path}: no plan recorded for profile {profile!r} in {results}; "
                                        "`bench run` records it when it starts")
            continue
        for s in plan["stages"]:
            known[(s["kind"], s["id"])] = (s.get("role", s["kind"]), s.get("label", s["id"]))
    if not profile:
        for kind in KINDS:
            try:
                entries = os.scandir(results / "stages" / kind)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    if entry.is_dir() and (kind, entry.name) not in known:
                        known[(kind, entry.name)] = (kind, entry.name)
    timeout = claim_timeout()
    out: dict[str, Any] = {r: {"done": 0, "running": [], "failed": [], "pending": 0} for r in ROLES}
    for (kind, stage_id), (role, label) in known.items():
        folder = results / "stages" / kind / stage_id
        bucket = out.setdefault(role, {"done": 0, "running": [], "failed": [], "pending": 0})
        if os.path.exists(folder / "done.json"):
            bucket["done"] += 1
            continue
        claim = folder / "claim.json"
        if os.path.exists(claim) and not claim_is_stale(claim, timeout):
            record = read_json(claim) or {}
            bucket["running"].append({"label": label, "id": stage_id, "host": record.get("host"),
                                      "pid": record.get("pid"), "since": record.get("started")})
            continue
        failed = read_json(folder / "failed.json")
        if failed is not None:
            first = (str(failed.get("reason") or "").splitlines() or [""])[0]
            bucket["failed"].append({"label": label, "id": stage_id, "reason": first})
            continue
        bucket["pending"] += 1
    return {"results": str(results), "profile": profile, "stages": len(known), "roles": out}


def total(bucket: dict[str, Any]) -> int:
    """All stages of one role's bucket of :func:`collect`."""
    return bucket["done"] + len(bucket["running"]) + len(bucket["failed"]) + bucket["pending"]


def render(summary: dict[str, Any], limit: int = 10) -> str:
    head = f"{summary['results']}" + (f" (profile {summary['profile']!r})" if summary["profile"] else "")
    lines = [f"{head}: {summary['stages']} stages"]
    for role, b in summary["roles"].items():
        if not total(b):
            continue
        lines.append(f"  {role:<11} {total(b):>6}   done {b['done']:>6}   running {len(b['running']):>4}   "
                     f"failed {len(b['failed']):>4}   pending {b['pending']:>6}")
        for r in b["running"][:limit]:
            lines.append(f"      running  {r['label']} ({r['id']}) on {r['host']} pid {r['pid']} since {r['since']}")
        for r in b["failed"][:limit]:
            lines.append(f"      failed   {r['label']} ({r['id']}): {r['reason']}")
        more = max(0, len(b["running"]) - limit) + max(0, len(b["failed"]) - limit)
        if more:
            lines.append(f"      ... and {more} more (--json lists all)")
    return "\n".join(lines)


def main(config: Path, profile: str | None, results: Path | None, as_json: bool) -> int:
    start = time.perf_counter()
    if results is None:
        results, profile = results_of_profile(config, profile)
    summary = collect(results, profile)
    if as_json:
        print(json.dumps(summary, indent=1))
    else:
        print(render(summary))
        print(f"({time.perf_counter() - start:.2f} s)")
    return 0
