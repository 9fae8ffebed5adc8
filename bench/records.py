"""The store's JSON records and the checksums of what they list.

Every record a stage folder holds (``done.json``, ``failed.json``, ``stage.json``, claims) is
written through a temporary file and a rename (:func:`write_json_atomic`), so a reader sees
the old file or the new, never half; a record is read tolerantly (:func:`read_json`: None
when missing or unreadable), a plan file strictly (:func:`read_plan` names a corrupt one).
Artifacts are recorded with their sha256 and size (:func:`checksums`); a record carries the
sha256 of its own content (:func:`seal`, :func:`record_intact`); :func:`artifact_problems`
says what no longer matches. No torch, no pandas: ``bench status`` and ``bench verify`` use it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.atomic import write_bytes_atomic

#: artifacts of at most this many bytes (rows, figures of small models) are checked against their sha256 on every read
SMALL_ARTIFACT = 1 << 20


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
