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

Claims: ``claim.json`` is created with ``O_CREAT | O_EXCL``, so exactly one worker — on this
machine or on any node sharing the file system — owns a stage. The owner touches it every
``heartbeat`` seconds. A claim is stale when its owner is a dead process on this host, or when
it has not been touched for ``claim_timeout()`` seconds (``BENCH_CLAIM_TIMEOUT``, default 300),
or when it cannot be read for ``UNREADABLE_GRACE`` seconds (its writer died between creating
and writing it; a line says so); a stale claim is taken over under a short take-over lock so
that two workers never both take it. Lock files (``results.csv.lock``) name their owner the
same way and are taken over by the same rules. This module imports no torch and no pandas: ``bench status`` reads the store with it.
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

from bench.atomic import disk_full, is_disk_full, write_bytes_atomic

KINDS = ("model", "evaluation", "group")
#: artifacts of at most this many bytes (rows, figures of small models) are checked against their sha256 on every read
SMALL_ARTIFACT = 1 << 20
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
    write_bytes_atomic(json.dumps(obj, indent=1, sort_keys=True, default=str).encode(), path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_plan(path: Path) -> dict[str, Any]:
    """A plan file ``bench run`` recorded; an unreadable one is an error that names it."""
    try:
        plan = json.loads(path.read_text())
        if not isinstance(plan, dict) or not isinstance(plan.get("stages"), list) or not all(
                isinstance(s, dict) and {"kind", "id"} <= set(s) for s in plan["stages"]):
            raise ValueError("expected {\"stages\": [{\"kind\": ..., \"id\": ...}, ...]}")
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: plan file is corrupt ({type(exc).__name__}: {exc}); "
                         "delete it and `bench run` the profile again to rewrite it") from None
    return plan


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """sha256 and size of the artifacts ``names`` of ``folder`` (those that exist)."""
    return {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size}
            for n in names if (folder / n).is_file()}


def _record_digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in json.loads(json.dumps(record, default=str)).items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the sha256 of its own content (``record_sha256``), checked by :func:`record_intact`."""
    return {**record, "record_sha256": _record_digest(record)}


def record_intact(record: dict[str, Any]) -> bool:
    """Whether a sealed record still matches its checksum (a record written before seals were: yes)."""
    return "record_sha256" not in record or record["record_sha256"] == _record_digest(record)


def artifact_problems(folder: Path, record: dict[str, Any], *, limit: int | None = SMALL_ARTIFACT) -> list[str]:
    """What is wrong with the artifacts a record lists: missing, another size, another sha256.

    The sha256 is computed for artifacts of at most ``limit`` recorded bytes (``None``: all).
    """
    out = []
    listed = record.get("artifacts")
    listed = listed if isinstance(listed, dict) else record.get("checksums") or {}
    for name, info in listed.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            out.append(f"{name} is missing")
            continue
        if size != info.get("bytes"):
            out.append(f"{name} has {size} bytes, {info.get('bytes')} were written")
        elif (limit is None or size <= limit) and sha256_file(path) != info.get("sha256"):
            out.append(f"{name}: sha256 checksum differs from the one recorded when it was written")
    return out


class CorruptArtifactError(RuntimeError):
    """An artifact of a finished stage does not match the checksum recorded when it was written."""


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:][:1] != "Z"
    except (OSError, ValueError):
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


#: seconds an unreadable claim or lock file (its writer died between creating and writing it) is given
UNREADABLE_GRACE = 5.0
#: a wait longer than this many seconds says what it waits for
WAIT_NOTICE = 5.0


def _owner(path: Path) -> dict[str, Any] | None:
    """The owner record of a claim or lock file: a dict with a positive integer pid, else None (unreadable)."""
    record = read_json(path)
    if not isinstance(record, dict):
        return None
    try:
        pid = int(record.get("pid"))
    except (TypeError, ValueError):
        return None
    return {**record, "pid": pid} if pid > 0 else None


def staleness(path: Path, timeout: float, grace: float = UNREADABLE_GRACE) -> str | None:
    """Why a claim or lock file may be taken over, or None while its owner may still be working.

    Its owner died on this host (at once); it cannot be read for ``grace`` seconds (its writer
    died between creating and writing it); or no heartbeat for ``timeout`` seconds (an owner on
    another host that stopped).
    """
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "gone"
    record = _owner(path)
    if record is None:  # being written right now, or its writer died in between
        return f"it has not been readable for {age:.0f} s" if age > grace else None
    if record.get("host") == HOST and not _pid_alive(record["pid"]):
        return f"its owner, pid {record['pid']} on this host, is dead"
    if record.get("host") == HOST and record["pid"] == os.getpid() and record.get("token") not in _ACTIVE \
            and path.name == "claim.json":
        return "left behind by this process"  # an interrupted stage, not held by it any more
    return f"its owner has not touched it for {age:.0f} s" if age > timeout else None


def claim_is_stale(path: Path, timeout: float) -> bool:
    """A claim whose owner died on this host, unreadable for a few seconds, or with no heartbeat for ``timeout`` s."""
    return staleness(path, timeout) is not None


def describe_owner(path: Path) -> str:
    """Who holds a claim or lock file, for a line that says what a worker waits for."""
    record = _owner(path)
    if record is None:
        return f"{path} (not readable yet)"
    since = f" since {record['started']}" if record.get("started") else ""
    return f"{path} (held by pid {record['pid']} on {record.get('host')}{since})"


def _create_owned(path: Path, extra: dict[str, Any] | None = None) -> bool:
    """Create ``path`` exclusively with this process as its owner; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    _write_owner(fd, path, {"host": HOST, "pid": os.getpid(), "started": now(), **(extra or {})})
    return True


def _write_owner(fd: int, path: Path, record: dict[str, Any]) -> None:
    """Fill a just-created claim or lock file; if that fails (a full disk) the file is removed again."""
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
    except BaseException as exc:
        try:
            path.unlink()
        except OSError:
            pass
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise


def _take_over(path: Path, timeout: float) -> bool:
    """Remove a stale claim or lock file under a take-over lock, saying why in one line.

    True when the caller may try to create it again.
    """
    lock = path.with_name(path.name + ".takeover")
    if not _create_owned(lock):
        if staleness(lock, 60.0):
            try:
                lock.unlink()  # its owner died inside the take-over itself
            except FileNotFoundError:
                pass
        return False
    try:
        why = staleness(path, timeout)  # still the stale one (checked under the lock)
        if why is None:
            return False
        if why not in ("gone", "left behind by this process"):
            print(f"bench: {path} taken over: {why}", file=sys.stderr)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return True
    finally:
        lock.unlink()


class FileLock:
    """A short exclusive section (``O_EXCL`` lock file naming its owner) shared by workers and nodes.

    A lock whose owner is dead on this host is taken over at once; one that cannot be read,
    after a few seconds (with a line saying so); one on another host untouched for ``stale``
    seconds. A wait longer than a few seconds says what it waits for.
    """

    def __init__(self, path: Path, stale: float = 120.0, poll: float = 0.05) -> None:
        self.path, self.stale, self.poll = Path(path), stale, poll

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start, told = time.monotonic(), False
        while True:
            if _create_owned(self.path):
                return self
            if staleness(self.path, self.stale) is not None and _take_over(self.path, self.stale):
                continue
            if not told and time.monotonic() - start > WAIT_NOTICE:
                print(f"bench: waiting for the lock {describe_owner(self.path)}", file=sys.stderr)
                told = True
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
