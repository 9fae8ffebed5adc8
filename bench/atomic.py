"""Atomic writes: a temporary file renamed into place, no temporary file left behind, a full disk said in one line.

Every artifact, record and table is written through here (or under :func:`writing`): a
reader sees the old file or the new one, never half of one, and a write that fails — a full
disk above all — removes its temporary file. ``ENOSPC`` (and a quota's ``EDQUOT``) become
:class:`DiskFullError`, whose message names the file, how much it needed and how much is
free; ``bench run`` ends with that one line, keeping every finished stage. This module
imports nothing heavy.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """No space left where a file was being written; the message is the one line to show."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a full disk or an exhausted quota."""
    while exc is not None:
        if isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in _FULL):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def disk_full(path: Path, needed: int | None = None) -> DiskFullError:
    """The one-line error for a full disk while writing ``path`` (``needed``: the bytes it was to take)."""
    folder = Path(path).parent
    try:
        free = _size(shutil.disk_usage(folder).free)
    except OSError:
        free = "unknown"
    need = f"about {_size(needed)} needed, " if needed else ""
    return DiskFullError(f"disk full: cannot write {path} ({need}{free} free in {folder}); free some space "
                         "and run the same command again: finished stages are kept")


def temp_name(path: Path, tag: str = "") -> Path:
    """A temporary name beside ``path``, unique to this process and thread."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}{tag}")


@contextmanager
def writing(path: Path, tmp: Path | None = None, needed: int | None = None) -> Iterator[None]:
    """Guard a write of ``path`` (through ``tmp``): on failure ``tmp`` is removed; a full disk is a :class:`DiskFullError`."""
    try:
        yield
    except BaseException as exc:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full(path, needed) from None
        raise


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def write_bytes_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    with writing(path, tmp, len(data)):
        _write_file(tmp, data)
        os.replace(tmp, path)
