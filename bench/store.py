"""The stage store: one folder per stage, written atomically, claimed by one worker at a time.

Layout under a results folder::

    stages/<kind>/<stage id>/        kind: model | evaluation | group
        stage.json                   what the stage is (identity, role, label), written at its first claim
        claim.json                   who works on it: host, pid, token; its mtime is the heartbeat
        train_log.csv, model.pt, figures.npz, rows.csv, error.txt ...   the artifacts
        done.json                    written last, by rename: the artifacts' sha256 and sizes, the
                                     tokens of the stages it was made from, a fresh completion token,
                                     and the sha256 of the record itself (``record_sha256``)
        failed.json                  the reason, when the stage failed (and its rows' sha256)
    quarantine/<kind>-<id>-<time>/   a stage folder moved aside because an artifact was corrupt
    plan/<profile>.json              the stages of a profile's grid (``bench status`` reads it)

A stage is *done* when ``done.json`` exists, its artifacts are intact and the tokens of the
stages it was made from are still the current ones: when a model is redone (its checkpoint
was corrupt, say) its evaluations no longer match its new token and are redone too.

Checksums: every artifact's sha256 is recorded when it is written. The small ones (rows,
the done record itself: at most ``SMALL_ARTIFACT`` bytes) are verified whenever a stage is
read; a checkpoint when it is loaded; all of them by ``bench verify``. A stage with a corrupt
artifact is moved to ``quarantine/`` with one line saying so, and redone.

Claims: ``claim.json`` is created exclusively, so exactly one worker owns a stage; who holds
it, when it is stale and how it is taken over is :mod:`bench.claims`. The records and their
checksums are :mod:`bench.records`. This module imports no torch and no pandas: ``bench
status`` reads the store with it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.claims import HOST, Claim, _take_over, _write_owner, claim_is_stale, claim_timeout
from bench.records import (
    CorruptArtifactError, artifact_problems, checksums, now, read_json, record_intact, seal, sha256_file,
    write_json_atomic,
)

KINDS = ("model", "evaluation", "group")
DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"


@dataclass(frozen=True)
class StageState:
    status: str  # done | failed | running | pending
    done: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    claim: dict[str, Any] | None = None


class Store:
    """The stage folders of one results folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, kind: str, stage_id: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown stage kind {kind!r}; expected one of {KINDS}")
        return self.root / "stages" / kind / stage_id

    # -- reading -------------------------------------------------------------------------
    def state(self, kind: str, stage_id: str, *, timeout: float | None = None) -> StageState:
        """Done, failed, running (a live claim) or pending; reads at most three small files."""
        folder = self.folder(kind, stage_id)
        done = read_json(folder / "done.json")
        if done is not None:
            if isinstance(done, dict) and record_intact(done):
                return StageState(DONE, done=done)
            self.quarantine(kind, stage_id, "done.json does not match its own sha256")
            return StageState(PENDING)
        claim_path = folder / "claim.json"
        if claim_path.exists() and not claim_is_stale(claim_path, claim_timeout() if timeout is None else timeout):
            return StageState(RUNNING, claim=read_json(claim_path) or {})
        failed = read_json(folder / "failed.json")
        if isinstance(failed, dict):
            return StageState(FAILED, failed=failed)
        return StageState(PENDING)

    def quick_check(self, kind: str, stage_id: str, done: dict[str, Any]) -> bool:
        """A finished stage's artifacts against its record: every size, and the sha256 of the small ones.

        A truncated checkpoint or an edited ``rows.csv`` is caught here; the stage is moved aside.
        """
        problems = artifact_problems(self.folder(kind, stage_id), done)
        if problems:
            if not self.being_redone(kind, stage_id):  # else its files are being rewritten right now
                self.quarantine(kind, stage_id, "; ".join(problems))
            return False
        return True

    def being_redone(self, kind: str, stage_id: str) -> bool:
        """Whether a live worker holds the stage (its artifacts may be half replaced: not corrupt)."""
        path = self.folder(kind, stage_id) / "claim.json"
        return path.exists() and not claim_is_stale(path, claim_timeout())

    def rows_problem(self, kind: str, stage_id: str) -> str | None:
        """Why the stage's ``rows.csv`` cannot be trusted (None: it matches its record, or none was recorded)."""
        folder = self.folder(kind, stage_id)
        record = read_json(folder / "done.json")
        if record is not None and not record_intact(record):
            return "done.json does not match its own sha256"
        record = record or read_json(folder / "failed.json") or {}
        listed = record.get("artifacts")
        listed = listed if isinstance(listed, dict) else record.get("checksums") or {}
        if "rows.csv" not in listed:
            return None
        problems = artifact_problems(folder, {"artifacts": {"rows.csv": listed["rows.csv"]}})
        return problems[0] if problems else None

    def verified(self, kind: str, stage_id: str, name: str) -> Path:
        """The path of artifact ``name`` after checking its sha256; a mismatch quarantines the stage."""
        folder = self.folder(kind, stage_id)
        done = read_json(folder / "done.json") or {}
        info = done.get("artifacts", {}).get(name)
        path = folder / name
        if info is None:
            raise CorruptArtifactError(f"{path}: not an artifact of a finished stage")
        actual = sha256_file(path) if path.is_file() else "missing"
        if actual != info["sha256"]:
            where = self.quarantine(kind, stage_id, f"{name}: sha256 {actual[:12]} != recorded {info['sha256'][:12]}")
            raise CorruptArtifactError(f"{path} is corrupt (checksum mismatch); the stage was moved to {where} "
                                       "and will be redone")
        return path

    def quarantine(self, kind: str, stage_id: str, why: str) -> Path:
        """Move a stage folder aside (kept for inspection, never deleted) and say so in one line."""
        folder = self.folder(kind, stage_id)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = self.root / "quarantine" / f"{kind}-{stage_id}-{stamp}-{uuid.uuid4().hex[:6]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(folder, target)
        except FileNotFoundError:
            return target  # another worker moved it first
        (target / "QUARANTINED.txt").write_text(f"{now()} {why}\n")
        print(f"bench: {kind} stage {stage_id} was corrupt ({why}); moved to {target}; it will be redone",
              file=sys.stderr)
        return target

    # -- writing -------------------------------------------------------------------------
    def claim(self, kind: str, stage_id: str, describe: dict[str, Any], *, run: str,
              timeout: float | None = None) -> Claim | None:
        """Claim a stage for this process, or ``None`` if a live worker holds it."""
        timeout = claim_timeout() if timeout is None else timeout
        folder = self.folder(kind, stage_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "claim.json"
        token = uuid.uuid4().hex
        record = {"host": HOST, "pid": os.getpid(), "token": token, "started": now(), "run": run}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not claim_is_stale(path, timeout) or not _take_over(path, timeout):
                    return None
                continue
            _write_owner(fd, path, record)
            if not (folder / "stage.json").exists():
                write_json_atomic({**describe, "kind": kind, "id": stage_id}, folder / "stage.json")
            return Claim(path, token, heartbeat=max(0.2, min(30.0, timeout / 4))).start()
        return None

    def finish(self, kind: str, stage_id: str, claim: Claim, artifacts: list[str], *,
               deps: dict[str, str], summary: dict[str, Any] | None = None) -> str | None:
        """Record checksums and write ``done.json``; returns the completion token (``None``: claim lost)."""
        folder = self.folder(kind, stage_id)
        if not claim.held():
            claim.release()
            return None
        record = seal({
            "token": uuid.uuid4().hex, "finished": now(), "deps": deps, "summary": summary or {},
            "artifacts": {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size}
                          for n in artifacts},
            "host": HOST, "pid": os.getpid(),
        })
        for stale in ("failed.json",):
            try:
                (folder / stale).unlink()
            except FileNotFoundError:
                pass
        write_json_atomic(record, folder / "done.json")
        claim.release()
        return record["token"]

    def fail(self, kind: str, stage_id: str, claim: Claim | None, reason: str, *, run_started: float,
             artifacts: list[str] = ()) -> None:
        """Record a failure (a later run retries the stage); ``rows.csv`` etc. may hold the failed rows."""
        folder = self.folder(kind, stage_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"reason": reason, "finished": now(), "finished_epoch": time.time(),
                           "run_started": run_started, "artifacts": list(artifacts),
                           "checksums": checksums(folder, list(artifacts)), "host": HOST,
                           "pid": os.getpid()}, folder / "failed.json")
        if claim is not None:
            claim.release()

    def invalidate(self, kind: str, stage_id: str) -> None:
        """Forget a finished stage whose inputs changed (its folder is rewritten by the redo)."""
        try:
            (self.folder(kind, stage_id) / "done.json").unlink()
        except FileNotFoundError:
            pass


def check_writable(results: Path) -> None:
    """Fail now, with the folder's name, if results cannot be written (before any training)."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"results folder {results} cannot be written ({type(exc).__name__}: {exc.strerror or exc}); "
            "choose another with --results DIR or the profile's 'results' key"
        ) from None


def move_aside(path: Path, root: Path, why: str) -> Path:
    """Keep a file that cannot be used (e.g. an unreadable legacy checkpoint) under quarantine/."""
    target = root / "quarantine" / f"{path.parent.name}-{path.name}-{uuid.uuid4().hex[:6]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)
    print(f"bench: {path} {why}; moved to {target}", file=sys.stderr)
    return target
