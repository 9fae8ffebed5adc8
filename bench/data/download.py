"""``bench data download``: fetch a source's files, check their md5, resume, unpack.

A download goes to ``<file>.part`` first. If that file exists from an interrupted attempt,
the request asks only for the missing bytes (HTTP ``Range: bytes=<size>-``); a server that
answers ``206 Partial Content`` gets appended to, one that answers ``200`` (no range
support) starts over. Only a file whose md5 matches the catalogue is renamed into place,
so a half-downloaded or corrupt file never sits where a loader looks. Archives (``tar``,
``zip``) are unpacked member by member into the data root, refusing absolute paths,
``..`` components and links, and then deleted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from bench.data.files import CorruptDatasetError, file_md5
from bench.data.sources import Download, Source

USER_AGENT = "bench-data/1 (+https://github.com; research benchmark downloader)"
_BLOCK = 1 << 20


class DownloadError(OSError):
    """No mirror delivered a file; the message lists each URL's error and the manual route."""

    def __str__(self) -> str:
        return str(self.args[0])


def fetch_source(source: Source, root: Path, *, progress: bool = True, timeout: float = 60.0) -> list[Path]:
    """Download and unpack every file of ``source`` under ``root``; return the final files."""
    out = []
    for item in source.downloads:
        path = download(item, root, progress=progress, timeout=timeout)
        if item.unpack == "keep":
            out.append(path)
        else:
            out.extend(unpack(item, path, root))
            path.unlink()
    still = source.missing(root)
    if still:
        raise CorruptDatasetError(
            f"{source.key}: downloaded and unpacked, but these are still missing:\n"
            + "\n".join(f"  {m}" for m in still)
        )
    return out


def download(item: Download, root: Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch ``item`` to ``<root>/<into>/<filename>`` (resuming a ``.part``) and check its md5."""
    folder = root / item.into
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / item.filename
    if dest.is_file() and (item.md5 is None or file_md5(dest) == item.md5):
        _say(progress, f"{dest}: already present")
        return dest
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in item.urls:
        try:
            _fetch(url, part, progress=progress, timeout=timeout)
            break
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"  {url}: {exc}")
    else:
        raise DownloadError(
            f"could not download {item.filename} from any mirror (no network, or the server refused):\n"
            + "\n".join(errors)
            + f"\nthe partial file (resumable) is {part}; or fetch the file by hand and save it as {dest}"
        )
    if item.md5 is not None:
        got = file_md5(part)
        if got != item.md5:
            part.unlink()
            raise CorruptDatasetError(
                f"{item.filename}: md5 {got} after download, expected {item.md5}; the partial file was "
                f"deleted — run the download again"
            )
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part file is already complete
            return
        raise
    with response:
        if start and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise ValueError(f"server answered the range request with Content-Range {content_range!r}")
            mode = "ab"
        else:
            start, mode = 0, "wb"  # no range support: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        _say(progress, f"{url} -> {part.name}" + (f" (resuming at {start:,} bytes)" if start else ""))
        with open(part, mode) as f:
            _copy(response, f, start, total, _progress_printer(progress, part.name))
    if total is not None and part.stat().st_size != total:
        raise ValueError(f"connection closed after {part.stat().st_size:,} of {total:,} bytes (resumable)")


def _copy(src: IO[bytes], dst: IO[bytes], done: int, total: int | None, report: Callable[[int, int | None], None]) -> None:
    for block in iter(lambda: src.read(_BLOCK), b""):
        dst.write(block)
        done += len(block)
        report(done, total)


def _progress_printer(enabled: bool, label: str) -> Callable[[int, int | None], None]:
    state = {"next": 0}

    def report(done: int, total: int | None) -> None:
        if not enabled or done < state["next"]:
            return
        state["next"] = done + (64 << 20)
        share = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"  {label}: {done / 1e6:,.0f} MB{share}", file=sys.stderr)

    return report


def unpack(item: Download, archive: Path, root: Path) -> list[Path]:
    """Extract the members of ``archive`` under ``item.members`` prefixes; return the files written."""
    base = root / item.into
    written: list[Path] = []
    if item.unpack == "tar":
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                target = _target(member.name, item, base)
                if target is None or member.isdir():
                    continue
                if not member.isfile():
                    raise CorruptDatasetError(f"{archive}: member {member.name!r} is a link or device; refusing it")
                source = tar.extractfile(member)
                if source is None:
                    raise CorruptDatasetError(f"{archive}: cannot read member {member.name!r}")
                written.append(_write(source, target))
    elif item.unpack == "zip":
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    target = _target(info.filename, item, base)
                    if target is None or info.is_dir():
                        continue
                    with zf.open(info) as source:
                        written.append(_write(source, target))
        except zipfile.BadZipFile as exc:
            raise CorruptDatasetError(f"{archive}: not a readable zip archive ({exc})") from None
    else:
        raise ValueError(f"unknown unpack mode {item.unpack!r} for {item.filename}; expected keep, tar or zip")
    return written


def _target(name: str, item: Download, base: Path) -> Path | None:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise CorruptDatasetError(f"{item.filename}: unsafe member path {name!r}")
    for prefix, folder in item.members:
        if name.startswith(prefix) and len(name) > len(prefix):
            return base / folder / name[len(prefix):]
    return None


def _write(source: IO[bytes], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as f:
        shutil.copyfileobj(source, f, _BLOCK)
    os.replace(tmp, target)
    return target


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr)
