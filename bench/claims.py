"""Who holds a stage or a lock: claim files, owner records, take-over of stale ones, file locks.

A claim (``claim.json`` of a stage folder) or a lock file (``results.csv.lock``) is created
with ``O_CREAT | O_EXCL`` and names its owner (host, pid, start time; a claim also its token),
so exactly one worker — on this machine or on any node sharing the file system — holds it.
The owner of a claim touches it every ``heartbeat`` seconds. A claim or lock is stale when its
owner is a dead process on this host (taken over at once), when it cannot be read for
``UNREADABLE_GRACE`` seconds (its writer died between creating and writing it), or when it
has not been touched for ``claim_timeout()`` seconds (``BENCH_CLAIM_TIMEOUT``, default 300);
a stale one is taken over under a short take-over lock, with one line saying why. A wait
longer than ``WAIT_NOTICE`` seconds says what it waits for. No torch, no pandas.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.atomic import disk_full, is_disk_full
from bench.records import now, read_json

HOST = socket.gethostname()
#: tokens of the claims this process holds -> their files (a claim of this pid with another token was abandoned)
_ACTIVE: dict[str, Path] = {}


def claim_timeout() -> float:
    """Seconds without a heartbeat after which a claim is taken over (``BENCH_CLAIM_TIMEOUT``)."""
    return float(os.environ.get("BENCH_CLAIM_TIMEOUT", "300"))


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
