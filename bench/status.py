"""``bench status``: how far a grid has got, read from the stage store alone (no torch, no pandas).

Per stage role (component, model, evaluation, group): how many are done, running (with the
owner's host and pid), failed and pending; the failures grouped by their whole reason (every
line of it), each reason once with its count and stages (:func:`group_failures`). A stage whose
``done.json`` records an input that has been redone since (the input's completion token
changed, or the input is itself out of date) is not done: the next run redoes it, so it
counts as pending. The stages
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

from bench.claims import claim_is_stale, claim_timeout
from bench.records import read_json, read_plan
from bench.store import KINDS

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


def collect(results: Path, profile: str | None = None, *, planned_only: bool = False) -> dict[str, Any]:
    """Counts and details per role; ``profile`` restricts to the stages of that profile's plan,
    ``planned_only`` to the stages of the recorded plans (not every folder of the store)."""
    plans = [results / "plan" / f"{profile}.json"] if profile else sorted((results / "plan").glob("*.json"))
    known: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, id) -> (role, label)
    deps: dict[tuple[str, str], list[str]] = {}  # (kind, id) -> the model stages it is made from (plans record them)
    for path in plans:
        if not path.is_file():
            if profile:
                raise FileNotFoundError(f"{path}: no plan recorded for profile {profile!r} in {results}; "
                                        "`bench run` records it when it starts")
            continue
        plan = read_plan(path)
        for s in plan["stages"]:
            known[(s["kind"], s["id"])] = (s.get("role", s["kind"]), s.get("label", s["id"]))
            if isinstance(s.get("deps"), list):
                deps[(s["kind"], s["id"])] = [str(d) for d in s["deps"]]
    if not profile and not planned_only:
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
    outdated = _Outdated(results, deps)
    out: dict[str, Any] = {r: {"done": 0, "running": [], "failed": [], "pending": 0} for r in ROLES}
    for (kind, stage_id), (role, label) in known.items():
        folder = results / "stages" / kind / stage_id
        bucket = out.setdefault(role, {"done": 0, "running": [], "failed": [], "pending": 0})
        if outdated.finished(kind, stage_id) is not None:
            if not outdated(kind, stage_id):
                bucket["done"] += 1
                continue
            bucket["pending"] += 1  # made from an input redone since: the next run redoes it
            continue
        claim = folder / "claim.json"
        if os.path.exists(claim) and not claim_is_stale(claim, timeout):
            record = read_json(claim)
            record = record if isinstance(record, dict) else {"host": "(a claim not readable yet)"}
            bucket["running"].append({"label": label, "id": stage_id, "host": record.get("host"),
                                      "pid": record.get("pid"), "since": record.get("started")})
            continue
        failed = read_json(folder / "failed.json")
        if isinstance(failed, dict):
            bucket["failed"].append({"label": label, "id": stage_id, "reason": str(failed.get("reason") or "").strip()})
            continue
        bucket["pending"] += 1
    return {"results": str(results), "profile": profile, "stages": len(known), "roles": out}


class _Outdated:
    """Whether a done stage was made from an input that has been redone since (memoised per stage)."""

    def __init__(self, results: Path, deps: dict[tuple[str, str], list[str]]) -> None:
        self.results, self.deps, self.memo, self.tokens, self.mtimes = results, deps, {}, {}, {}

    def finished(self, kind: str, stage_id: str) -> int | None:
        """When the stage's ``done.json`` was written (ns), None when it has none: one stat, remembered."""
        key = (kind, stage_id)
        if key not in self.mtimes:
            try:
                self.mtimes[key] = os.stat(self.results / "stages" / kind / stage_id / "done.json").st_mtime_ns
            except (FileNotFoundError, NotADirectoryError):
                self.mtimes[key] = None
        return self.mtimes[key]

    def _quick(self, kind: str, stage_id: str) -> bool | None:
        """False when the plan's inputs were all written before the stage and are up to date; None: read the records."""
        inputs = self.deps.get((kind, stage_id))
        own = self.finished(kind, stage_id)
        if inputs is None or own is None:
            return None
        for dep in inputs:
            written = self.finished("model", dep)
            if written is not None and (written >= own or self("model", dep)):
                return None
        return False

    def token(self, kind: str, stage_id: str) -> str | None:
        if (kind, stage_id) not in self.tokens:
            record = read_json(self.results / "stages" / kind / stage_id / "done.json")
            self.tokens[(kind, stage_id)] = record.get("token") if isinstance(record, dict) else None
        return self.tokens[(kind, stage_id)]

    def __call__(self, kind: str, stage_id: str) -> bool:
        key = (kind, stage_id)
        if key not in self.memo:
            self.memo[key] = False  # a cycle cannot happen; this only guards against a damaged store
            if self._quick(kind, stage_id) is False:
                return False
            record = read_json(self.results / "stages" / kind / stage_id / "done.json")
            deps = (record.get("deps") if isinstance(record, dict) else None) or {}
            # inputs are model stages (components of a model, the model of an evaluation, a group's seeds)
            self.memo[key] = any(
                (now := self.token("model", dep_id)) is not None and (now != token or self("model", dep_id))
                for dep_id, token in (deps.items() if isinstance(deps, dict) else ()))
        return self.memo[key]


def total(bucket: dict[str, Any]) -> int:
    """All stages of one role's bucket of :func:`collect`."""
    return bucket["done"] + len(bucket["running"]) + len(bucket["failed"]) + bucket["pending"]


def group_failures(failed: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Failed stages grouped by their whole reason, in the order each reason first appears."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in failed:
        groups.setdefault(r.get("reason") or "", []).append(r)
    return list(groups.items())


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
        for reason, stages in group_failures(b["failed"]):
            text = "\n".join("        " + line for line in (reason or "no reason recorded").splitlines())
            names = ", ".join(f"{r['label']} ({r['id']})" for r in stages[:limit])
            extra = f" and {len(stages) - limit} more" if len(stages) > limit else ""
            lines.append(f"      failed   {len(stages)} stage(s): {names}{extra}\n{text}")
        more = max(0, len(b["running"]) - limit)
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
