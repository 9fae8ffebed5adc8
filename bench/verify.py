"""``bench verify``: every artifact of a results folder against the sha256 recorded when it was written.

``bench run`` checks the small artifacts (rows, done records) whenever it reads them and a
checkpoint when it loads it; ``bench verify`` reads everything — checkpoints, figures,
training logs — once. A stage with a missing, resized or altered artifact, or a done
record that does not match its own checksum, is moved to ``quarantine/`` (kept, never
deleted) with one line saying which file and why; the next ``bench run`` redoes it and
what was made from it. A stage a live worker holds is skipped (its files are being
rewritten). A plan file that cannot be read is named too (``bench run`` rewrites it).
Like ``bench status``, this imports neither torch nor pandas.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bench.records import artifact_problems, read_json, read_plan, record_intact
from bench.store import KINDS, Store, move_aside


def stage_problems(folder: Path) -> list[str]:
    """What is wrong with one stage folder's recorded artifacts (all of them, every byte read)."""
    done_path = folder / "done.json"
    if done_path.exists():
        record = read_json(done_path)
        if record is None:
            return ["done.json cannot be read as JSON"]
        if not record_intact(record):
            return ["done.json does not match its own sha256"]
        return artifact_problems(folder, record, limit=None)
    record = read_json(folder / "failed.json")
    return artifact_problems(folder, record, limit=None) if record else []


def verify(results: Path) -> tuple[int, int, int, list[str]]:
    """(stages checked, artifacts checked, bytes read, lines for the stages moved to quarantine)."""
    store = Store(results)
    stages = artifacts = size = 0
    bad: list[str] = []
    for kind in KINDS:
        try:
            folders = sorted(p for p in (results / "stages" / kind).iterdir() if p.is_dir())
        except FileNotFoundError:
            continue
        for folder in folders:
            if store.being_redone(kind, folder.name):
                continue  # a live worker is rewriting it
            record = read_json(folder / "done.json") or read_json(folder / "failed.json") or {}
            listed = record.get("artifacts") if isinstance(record.get("artifacts"), dict) else record.get("checksums") or {}
            stages += 1
            artifacts += len(listed)
            size += sum(int(info.get("bytes") or 0) for info in listed.values() if isinstance(info, dict))
            problems = stage_problems(folder)
            if problems:
                where = store.quarantine(kind, folder.name, "; ".join(problems))
                bad.append(f"{kind} {folder.name}: {'; '.join(problems)} -> {where}")
    for plan in sorted((results / "plan").glob("*.json")) if (results / "plan").is_dir() else []:
        try:
            read_plan(plan)
        except ValueError as exc:
            move_aside(plan, results, f"cannot be read ({str(exc).split(': ', 1)[-1]})")
            bad.append(f"plan {plan.name}: corrupt")
    return stages, artifacts, size, bad


def main(results: Path) -> int:
    """Check a results folder; exit status 1 when something was moved to quarantine, else 0."""
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such results folder")
    start = time.perf_counter()
    stages, artifacts, size, bad = verify(results)
    seconds = time.perf_counter() - start
    print(f"verified {stages} stages, {artifacts} artifacts ({size / 2**20:.1f} MiB) in {results} "
          f"({seconds:.1f} s): " + (f"{len(bad)} corrupt, moved to {results / 'quarantine'}; "
                                    "`bench run` redoes them" if bad else "all intact"))
    sys.stdout.flush()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())))
