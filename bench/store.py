"""The stage store: one folder per stage, written atomically, claimed by one worker at a time.

Layout under a results folder::

    stages/<kind>/<stage id>/        kind: model | evaluation | group
        stage.json                   what the stage is (identity, role, label), written at its first claim
        claim.json                   who works on it: host, pid, token; its mtime is the heartbeat
        train_log.csv, model.pt, figures.npz, rows.csv, error.txt ...   the artifacts
        done.json                    written last, by rename: the artifacts' sha256 and sizes, the
                                     tokens of the stages it was made from, a fresh completion token
        failed.json                  the reason, when the stage failed
    quarantine/<kind>-<id>-<time>/   a stage folder moved aside because an artifact was corrupt
    plan/<profile>.json              the stages of a profile's grid (``bench status`` reads it)

A stage is *done* when ``done.json`` exists, its artifacts are intact and the tokens of the
stages it was made from are still the current ones: when a model is redone (its checkpoint
was corrupt, say) its evaluations no longer match its new token and are redone too.

Claims: ``claim.json`` is created with ``O_CREAT | O_EXCL``, so exactly one worker — on this
machine or on any node sharing the file system — owns a stage. The owner touches it every
``heartbeat`` seconds. A claim is stale when its owner is a dead process on this host, or when
it has not been touched for ``claim_timeout()`` seconds (``BENCH_CLAIM_TIMEOUT``, default 300);
a stale claim is taken over under a short take-over lock so that two workers never both take
it. This module imports no torch and no pandas: ``bench status`` reads the store with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

KINDS = ("model", "evaluation", "group")
DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"
HOST = socket.gethostname()
#: tokens of the claims this process holds -> their files (a claim of this pid with another token was abandoned)
_ACTIVE: dict[str, Path] = {}


def claim_timeout() -> float:
    """Seconds without a heartbeat after which a claim is taken over (``BENCH_CLAIM_TIMEOUT``)."""
    return float(os.environ.get("BENCH_CLAIM_TIMEOUT", "300"))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write JSON through a temporary file and a rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class CorruptArtifactError(RuntimeError):
    """An artifact of a finished stage does not match the checksum recorded when it was written."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    """Ownership of one stage folder; :meth:`release` (or :meth:`Store.finish`) ends it."""

    path: Path
    token: str
    heartbeat: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Claim":
        _ACTIVE[self.token] = self.path
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat {self.path.parent.name}")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            if self.held():
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

    def held(self) -> bool:
        """Whether the claim file is still this claim (a stale claim may have been taken over)."""
        record = read_json(self.path)
        return record is not None and record.get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        _ACTIVE.pop(self.token, None)
        if self.held():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


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
            return StageState(DONE, done=done)
        claim_path = folder / "claim.json"
        if claim_path.exists() and not claim_is_stale(claim_path, claim_timeout() if timeout is None else timeout):
            return StageState(RUNNING, claim=read_json(claim_path) or {})
        failed = read_json(folder / "failed.json")
        if failed is not None:
            return StageState(FAILED, failed=failed)
        return StageState(PENDING)

    def quick_check(self, kind: str, stage_id: str, done: dict[str, Any]) -> bool:
        """Sizes of a finished stage's artifacts against its record (a truncated file is caught here)."""
        folder = self.folder(kind, stage_id)
        for name, info in done.get("artifacts", {}).items():
            try:
                if (folder / name).stat().st_size != info["bytes"]:
                    self.quarantine(kind, stage_id, f"{name} has {(folder / name).stat().st_size} bytes, "
                                                    f"{info['bytes']} were written")
                    return False
            except FileNotFoundError:
                self.quarantine(kind, stage_id, f"{name} is missing")
                return False
        return True

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
                                       "and will be redone by the next run")
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
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record))
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
        record = {
            "token": uuid.uuid4().hex, "finished": now(), "deps": deps, "summary": summary or {},
            "artifacts": {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size}
                          for n in artifacts},
            "host": HOST, "pid": os.getpid(),
        }
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
                           "run_started": run_started, "artifacts": list(artifacts), "host": HOST,
                           "pid": os.getpid()}, folder / "failed.json")
        if claim is not None:
            claim.release()

    def invalidate(self, kind: str, stage_id: str) -> None:
        """Forget a finished stage whose inputs changed (its folder is rewritten by the redo)."""
        try:
            (self.folder(kind, stage_id) / "done.json").unlink()
        except FileNotFoundError:
            pass


def release_active() -> None:
    """Give up every claim this process holds (a job about to be requeued: its stages become pending)."""
    for token, path in list(_ACTIVE.items()):
        record = read_json(path)
        if record is not None and record.get("token") == token:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        _ACTIVE.pop(token, None)


def claim_is_stale(path: Path, timeout: float) -> bool:
    """A claim whose owner died on this host, or with no heartbeat for ``timeout`` seconds."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    record = read_json(path)
    if record is None:  # being written right now, or its writer died in between
        return age > timeout
    if record.get("host") == HOST and not _pid_alive(int(record.get("pid", -1))):
        return True
    if record.get("host") == HOST and record.get("pid") == os.getpid() and record.get("token") not in _ACTIVE:
        return True  # left behind by this process (an interrupted stage), not held by it any more
    return age > timeout


def _take_over(path: Path, timeout: float) -> bool:
    """Remove a stale claim under a take-over lock; True when the caller may try to claim again."""
    lock = path.with_name("claim.takeover")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - lock.stat().st_mtime > 60:
                lock.unlink()  # its owner died inside the take-over itself
        except FileNotFoundError:
            pass
        return False
    try:
        os.close(fd)
        if claim_is_stale(path, timeout):  # still the stale one (checked under the lock)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return True
        return False
    finally:
        lock.unlink()


class FileLock:
    """A short exclusive section (``O_EXCL`` lock file) shared by workers and nodes; stale after ``stale`` s."""

    def __init__(self, path: Path, stale: float = 120.0, poll: float = 0.05) -> None:
        self.path, self.stale, self.poll = Path(path), stale, poll

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return self
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > self.stale:
                        self.path.unlink()
                        continue
                except FileNotFoundError:
                    continue
                time.sleep(self.poll)

    def __exit__(self, *exc: Any) -> None:
        try:
            self.path.unlink()
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
