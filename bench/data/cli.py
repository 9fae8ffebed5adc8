"""``bench data``: download, verify and list datasets.

::

    bench data ls [--json]                       every registered dataset: present / missing / procedural
    bench data download NAME [--timeout S]       fetch from the official source, check md5, resume, unpack
    bench data verify NAME [--json] [--no-checksums]
                                                 files present and intact, then a summary: items, image
                                                 shape and value range, factors / classes / attributes

``--root PATH`` (before the sub-command) overrides the data root for this call; otherwise
it comes from the top-level ``data_root`` of ``--config`` (default ``./bench.toml``, when the
file exists), ``$BENCH_DATA_ROOT`` or ``~/.cache/bench/data`` (:mod:`bench.data.root`). Exit status: 0 when everything is fine, 1 when files are missing,
corrupt or could not be downloaded (the message says which and how to fix it), 2 for an
unknown dataset name.

Wired into ``bench`` by :mod:`bench.cli` through :func:`add_parser` and :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.files import CorruptDatasetError, DatasetFilesMissing, content_md5, file_md5, is_gzip
from bench.data.root import data_root, describe_root, root_flag, set_data_root
from bench.data.sources import Source, get_source


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``data`` command (with ``ls``, ``download``, ``verify``) to ``bench``'s sub-parsers."""
    p = subparsers.add_parser("data", help="download, verify and list datasets")
    p.add_argument("--root", default=None, help="data root for this call (default: bench.toml data_root, "
                                                "$BENCH_DATA_ROOT, ~/.cache/bench/data)")
    p.add_argument("--config", default="bench.toml", help="bench.toml whose top-level data_root applies "
                                                          "(default: ./bench.toml, if present)")
    sub = p.add_subparsers(dest="data_command", required=True)
    ls = sub.add_parser("ls", help="list every dataset with its status (present / missing / procedural)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    dl = sub.add_parser("download", help="fetch a dataset's files from the official source")
    dl.add_argument("name", help="dataset name (see `bench data ls`)")
    dl.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a mirror is abandoned")
    vf = sub.add_parser("verify", help="check a dataset's files and print a summary")
    for command in (ls, dl, vf):  # `bench data verify NAME --root PATH` works as `bench data --root PATH verify NAME`
        command.add_argument("--root", default=argparse.SUPPRESS, help="data root for this call (as `bench data --root`)")
        command.add_argument("--config", default=argparse.SUPPRESS, help="bench.toml whose data_root applies")
    vf.add_argument("name", help="dataset name (see `bench data ls`)")
    vf.add_argument("--json", action="store_true", help="machine-readable output")
    vf.add_argument("--no-checksums", action="store_true", help="skip md5 checks (structure and decoding only)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``bench data <command>``; returns the exit status."""
    if getattr(args, "root", None):
        set_data_root(args.root)
    else:
        configured = _configured_root(Path(getattr(args, "config", "bench.toml")))
        if configured is not None:
            set_data_root(configured)
    from bench.registry import UnknownNameError

    try:
        if args.data_command == "ls":
            return _ls(args.json)
        if args.data_command == "download":
            return _download(args.name, args.timeout)
        return _verify(args.name, as_json=args.json, checksums=not args.no_checksums)
    except UnknownNameError as exc:
        print(f"bench data: error: {exc}", file=sys.stderr)
        return 2
    except (DatasetFilesMissing, CorruptDatasetError, OSError) as exc:
        print(f"bench data {args.data_command}: {exc}", file=sys.stderr)
        return 1


def _configured_root(config: Path) -> Path | None:
    """bench.toml's top-level ``data_root``, relative to the file (as :mod:`bench.config` reads it).

    Only that key is read, so ``bench data`` works even while a profile in the file is invalid.
    """
    if not config.is_file():
        return None
    with open(config, "rb") as f:
        raw = tomllib.load(f)
    value = raw.get("data_root")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{config}: data_root must be a non-empty string, got {value!r}")
    return (config.parent / value).resolve()


def _entry(name: str):
    from bench import registry

    return registry.datasets().get(name)


def _source_of(name: str) -> Source | None:
    key = _entry(name).meta.get("source")
    return get_source(key) if key else None


# -- ls ---------------------------------------------------------------------------------------
def _ls(as_json: bool) -> int:
    from bench import registry

    root = data_root()
    rows = []
    for entry in registry.datasets():
        key = entry.meta.get("source")
        status = get_source(key).status(root) if key else "procedural"
        rows.append({"name": entry.name, "status": status, "source": key, "summary": entry.summary})
    if as_json:
        print(json.dumps({"root": str(root), "datasets": rows}, indent=1))
        return 0
    print(f"data root: {describe_root()}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"  {r['name']:<{width}}  {r['status']:<10}  {r['summary']}")
    return 0


# -- download -----------------------------------------------------------------------------------
def _download(name: str, timeout: float) -> int:
    from bench.data.download import fetch_source

    source = _source_of(name)
    if source is None:
        print(f"{name}: procedural — rendered on demand, nothing to download")
        return 0
    root = data_root()
    if source.status(root) == "present":
        print(f"{name}: all files already present under {root} (run `bench data verify {name}{root_flag()}` to check them)")
        return 0
    print(f"downloading {source.title} into {root}")
    fetch_source(source, root, timeout=timeout)
    print(f"{name}: done; run `bench data verify {name}{root_flag()}` to check and summarise it")
    return 0


# -- verify -------------------------------------------------------------------------------------
def verify(name: str, *, checksums: bool = True) -> dict:
    """Check ``name``'s files and decode it; a JSON-able report with ``ok`` and ``problems``."""
    from bench import registry

    root = data_root()
    source = _source_of(name)
    report: dict[str, Any] = {"name": name, "root": str(root), "source": source.key if source else None,
                              "checksums_from": source.checksum_from if source else None,
                              "files": [], "problems": []}
    if source is not None:
        missing = source.missing(root)
        if missing:
            report["problems"] += [f"missing: {m}" for m in missing]
            report["how_to_obtain"] = source.how_to_obtain()
            report["ok"] = False
            return report
        report["files"] = _check_files(source, root, checksums)
        report["problems"] += [f"{f['path']}: {f['check']}" for f in report["files"] if f["check"].startswith("md5 mismatch")]
        for glob in source.globs:
            report["files"].append({"path": str(root / glob.folder / glob.pattern), "check": f"{glob.count:,} files present"})
    try:
        dataset = registry.datasets().create(name)
        report["summary"] = summarise(dataset)
    except (CorruptDatasetError, DatasetFilesMissing) as exc:
        report["problems"].append(str(exc))
    report["ok"] = not report["problems"]
    return report


def _check_files(source: Source, root, checksums: bool) -> list[dict]:
    out = []
    for spec in source.files:
        path = spec.find(root)
        row = {"path": str(path), "bytes": path.stat().st_size, "check": _check_file(spec, path, root, checksums)}
        out.append(row)
    return out


def _check_file(spec, path, root, checksums: bool) -> str:
    """md5 of the file as published; else md5 of its (decompressed) content; else say none is known."""
    if not checksums:
        return "not checked (--no-checksums)"
    if path == root / spec.names[0] and spec.md5 is not None:
        digest = file_md5(path)
        if digest == spec.md5:
            return "md5 ok"
        if spec.content_md5 is None:
            return f"md5 mismatch: {digest}, expected {spec.md5}"
    if spec.content_md5 is not None:
        content = content_md5(path)
        if content != spec.content_md5:
            return f"md5 mismatch: content {content}, expected {spec.content_md5}"
        if path == root / spec.names[0] and spec.md5 is not None:
            return "content md5 ok (the gzip bytes differ from the published file: recompressed, same data)"
        return "content md5 ok" if is_gzip(path) else "md5 ok"
    return "no published checksum (structure checked by the loader)"


def summarise(dataset) -> dict:
    """Items, image shape and value range (over every image), and the dataset's labels."""
    d = dataset.describe()
    lo, hi = _value_range(dataset)
    d["value_range"] = [lo, hi]
    if hasattr(dataset, "class_names") and hasattr(dataset, "labels"):
        counts = np.bincount(dataset.labels(np.arange(len(dataset))), minlength=len(dataset.class_names))
        d["class_counts"] = {c: int(k) for c, k in zip(dataset.class_names, counts)}
    if hasattr(dataset, "attributes"):
        share = dataset.attributes(np.arange(len(dataset))).mean(axis=0)
        d["attribute_share"] = {a: round(float(s), 4) for a, s in zip(dataset.attribute_names, share)}
    return d


def _value_range(dataset) -> tuple[float, float]:
    pixels = getattr(dataset, "pixels", None)
    if callable(pixels):
        arr = pixels()
        lo, hi = 255, 0
        for start in range(0, len(arr), 8192):
            block = np.asarray(arr[start:start + 8192])
            lo, hi = min(lo, int(block.min())), max(hi, int(block.max()))
        return lo / 255.0, hi / 255.0
    rng = np.random.default_rng(0)  # procedural: a fixed sample of 1,000 renders
    x = dataset.images(rng.choice(len(dataset), size=min(1000, len(dataset)), replace=False))
    return float(x.min()), float(x.max())


def _verify(name: str, *, as_json: bool, checksums: bool) -> int:
    report = verify(name, checksums=checksums)
    if as_json:
        print(json.dumps(report, indent=1))
        return 0 if report["ok"] else 1
    print(f"{name}: data root {report['root']}")
    for f in report["files"]:
        print(f"  {f['path']}: {f['check']}")
    for problem in report["problems"]:
        print(f"  PROBLEM: {problem}")
    if "how_to_obtain" in report:
        print(f"  {report['how_to_obtain']}")
    s = report.get("summary")
    if s:
        print(f"  items: {s['len']:,}   image: {'x'.join(map(str, s['image_shape']))}   "
              f"values: [{s['value_range'][0]:.3f}, {s['value_range'][1]:.3f}]   version: {s['version']}")
        if "factor_sizes" in s:
            print("  factors: " + ", ".join(f"{n} {k}" for n, k in zip(s["factor_names"], s["factor_sizes"])))
        if "class_counts" in s:
            print("  classes: " + ", ".join(f"{c} {k:,}" for c, k in s["class_counts"].items()))
        if "attribute_share" in s:
            print(f"  attributes ({len(s['attribute_share'])}): " + ", ".join(s["attribute_share"]))
    print(f"{name}: {'OK' if report['ok'] else 'FAILED'}")
    return 0 if report["ok"] else 1
