"""``bench data`` (ls / verify / download), the data root, and resumable downloads.

Downloads are tested against a local HTTP server (no network needed) that understands
``Range`` requests — or, for one test, ignores them like a server without range support.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import official_formats as fmt
from bench.data import root as data_root_module
from bench.data.cli import add_parser, run
from bench.data.download import DownloadError, download, fetch_source
from bench.data.files import CorruptDatasetError
from bench.data.sources import Download, FileSpec, Source


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    data_root_module.set_data_root(tmp_path)
    yield tmp_path
    data_root_module.set_data_root(None)


def bench_data(*argv: str, config: str = "/nonexistent/bench.toml") -> int:
    """``bench data ARGV`` with no bench.toml in play (the fixture's explicit root applies)."""
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["data", "--config", config, *argv]))


# -- data root -----------------------------------------------------------------------------------


def test_data_root_order_explicit_then_environment_then_default(tmp_path, monkeypatch):
    data_root_module.set_data_root(None)
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root_module.data_root() == tmp_path / "home" / ".cache" / "bench" / "data"
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path / "env"))
    assert data_root_module.data_root() == tmp_path / "env"
    data_root_module.set_data_root(tmp_path / "explicit")
    try:
        assert data_root_module.data_root() == tmp_path / "explicit"
        assert "set explicitly" in data_root_module.describe_root()
    finally:
        data_root_module.set_data_root(None)
    assert data_root_module.data_root() == tmp_path / "env"
    with pytest.raises(ValueError, match="non-empty"):
        data_root_module.set_data_root("  ")


def test_cache_falls_back_when_the_root_is_read_only(tmp_path, monkeypatch):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    monkeypatch.setattr(data_root_module, "FALLBACK_CACHE", tmp_path / "fallback")
    monkeypatch.setattr(data_root_module.os, "access", lambda p, mode: not str(p).startswith(str(read_only)))
    data_root_module.set_data_root(read_only)
    try:
        assert data_root_module.cache_dir() == tmp_path / "fallback"
    finally:
        data_root_module.set_data_root(None)
        read_only.chmod(0o755)


def test_bench_toml_data_root_applies_and_root_flag_wins(tmp_path, capsys):
    config = tmp_path / "proj" / "bench.toml"
    config.parent.mkdir()
    config.write_text('data_root = "../store"\n[profiles.x]\nmethods = 3  # invalid profile: irrelevant here\n')
    try:
        assert bench_data("ls", "--json", config=str(config)) == 0
        assert json.loads(capsys.readouterr().out)["root"] == str(tmp_path / "store")
        assert bench_data("--root", str(tmp_path / "other"), "ls", "--json", config=str(config)) == 0
        assert json.loads(capsys.readouterr().out)["root"] == str(tmp_path / "other")
        # the root may also follow the command, as a new user writes it
        assert bench_data("ls", "--json", "--root", str(tmp_path / "after"), config=str(config)) == 0
        assert json.loads(capsys.readouterr().out)["root"] == str(tmp_path / "after")
        assert bench_data("verify", "mnist", "--root", str(tmp_path / "after"), config=str(config)) == 1
        assert f"mnist: data root {tmp_path / 'after'}" in capsys.readouterr().out
        config.write_text("data_root = 3\n")
        with pytest.raises(ValueError, match="data_root must be a non-empty string"):
            bench_data("ls", config=str(config))
    finally:
        data_root_module.set_data_root(None)


# -- ls / verify ---------------------------------------------------------------------------------


def test_ls_reports_present_missing_and_procedural(root, capsys):
    fmt.write_mnist(root)
    assert bench_data("ls", "--json") == 0
    rows = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["mnist"] == rows["mnist-32"] == "present"
    assert rows["cifar10"] == rows["celeba"] == rows["mpi3d-toy-dlib"] == "missing"
    assert rows["dsprites-procedural"] == rows["shapes3d-procedural"] == "procedural"
    assert bench_data("--root", str(root), "ls") == 0
    assert f"data root: {root}" in capsys.readouterr().out


def test_verify_summarises_and_flags_checksum_mismatches(root, capsys):
    fmt.write_mnist(root)
    assert bench_data("verify", "mnist-32", "--no-checksums", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["summary"]["len"] == 20 and report["summary"]["image_shape"] == [1, 32, 32]
    assert report["summary"]["value_range"] == [0.0, 27 / 255]  # the written images hold values 0..27
    assert report["summary"]["class_counts"]["0"] == 2
    # these are not the published files: their md5s must not pass
    assert bench_data("verify", "mnist") == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if "PROBLEM:" in line]
    assert len(problems) == 4 and all("md5 mismatch" in p for p in problems) and "mnist: FAILED" in out


def test_verify_factor_and_attribute_summaries(root, capsys, monkeypatch):
    from bench.data import sources
    from bench.data.shapes3d import Shapes3D

    monkeypatch.setattr(Shapes3D, "factor_sizes", (2, 2, 1, 2, 2, 3))
    celeba = sources.SOURCES["celeba"]
    monkeypatch.setitem(sources.SOURCES, "celeba", dataclasses.replace(
        celeba, globs=(dataclasses.replace(celeba.globs[0], count=6),)))
    fmt.write_shapes3d(root, (2, 2, 1, 2, 2, 3))
    fmt.write_celeba(root)
    assert bench_data("verify", "shapes3d", "--no-checksums") == 0
    out = capsys.readouterr().out
    assert "factors: floor_hue 2, wall_hue 2, object_hue 1, scale 2, shape 2, orientation 3" in out
    assert "items: 48   image: 3x64x64" in out
    assert bench_data("verify", "celeba", "--json") == 1  # the text files are not the published ones
    report = json.loads(capsys.readouterr().out)
    assert len(report["summary"]["attributes"]) == 40 and report["summary"]["len"] == 4
    assert any("md5 mismatch" in p for p in report["problems"])


def test_verify_and_download_of_missing_or_procedural_or_unknown(root, capsys):
    assert bench_data("verify", "cifar10") == 1
    out = capsys.readouterr().out
    assert f"missing: {root}/cifar10/cifar-10-batches-py/data_batch_1" in out and "bench data download cifar10" in out
    assert bench_data("verify", "dsprites-procedural-32") == 0
    assert "items: 737,280" in capsys.readouterr().out
    assert bench_data("download", "shapes3d-procedural") == 0
    assert "nothing to download" in capsys.readouterr().out
    assert bench_data("verify", "fashion-mnst") == 2
    assert "did you mean 'fashion-mnist'" in capsys.readouterr().err


# -- downloads against a local server -------------------------------------------------------------


class _Server:
    """Serves ``files`` (name -> bytes); honours ``Range`` unless ``ranges`` is False; logs requests."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True) -> None:
        self.files, self.ranges, self.log = files, ranges, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = self.path.lstrip("/")
                outer.log.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                start = 0
                if outer.ranges and self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payload() -> bytes:
    return bytes(range(256)) * 400  # 102,400 bytes


def test_download_checks_md5_and_resumes_with_a_range_request(root, payload):
    server = _Server({"data.bin": payload})
    try:
        item = Download((server.url + "data.bin",), "data.bin", hashlib.md5(payload).hexdigest(), "thing")
        part = root / "thing" / "data.bin.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(payload[:40_000])  # an interrupted earlier attempt
        path = download(item, root, progress=False)
        assert path.read_bytes() == payload and not part.exists()
        assert server.log == [("data.bin", "bytes=40000-")]
        assert download(item, root, progress=False) == path and len(server.log) == 1  # already present
    finally:
        server.close()


def test_download_starts_over_when_the_server_ignores_ranges(root, payload):
    server = _Server({"data.bin": payload}, ranges=False)
    try:
        item = Download((server.url + "data.bin",), "data.bin", hashlib.md5(payload).hexdigest(), "thing")
        (root / "thing").mkdir()
        (root / "thing" / "data.bin.part").write_bytes(b"stale bytes from elsewhere")
        assert download(item, root, progress=False).read_bytes() == payload
    finally:
        server.close()


def test_download_md5_mismatch_deletes_the_partial_file(root, payload):
    server = _Server({"data.bin": payload})
    try:
        item = Download((server.url + "data.bin",), "data.bin", "0" * 32, "thing")
        with pytest.raises(CorruptDatasetError, match=r"data.bin: md5 [0-9a-f]{32} after download, expected 0{32}"):
            download(item, root, progress=False)
        assert not (root / "thing" / "data.bin").exists() and not (root / "thing" / "data.bin.part").exists()
    finally:
        server.close()


def test_download_without_network_names_urls_and_destination(root):
    item = Download(("http://127.0.0.1:9/a.bin", "http://127.0.0.1:9/mirror/a.bin"), "a.bin", None, "thing")
    with pytest.raises(DownloadError) as info:
        download(item, root, progress=False, timeout=2)
    message = str(info.value)
    assert "http://127.0.0.1:9/a.bin:" in message and "http://127.0.0.1:9/mirror/a.bin:" in message
    assert str(root / "thing" / "a.bin") in message


def test_fetch_source_unpacks_a_tar_member_folder_and_rejects_unsafe_paths(root):
    def tar_bytes(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    good = tar_bytes({"data/cars/a.mat": b"A", "data/cars/b.mat": b"B", "data/other/x.txt": b"X"})
    evil = tar_bytes({"../escape.txt": b"E"})
    server = _Server({"good.tar.gz": good, "evil.tar.gz": evil})
    try:
        source = Source(key="toy", title="toy", homepage="", licence="",
                        files=(FileSpec(("things/a.mat",)), FileSpec(("things/b.mat",))),
                        downloads=(Download((server.url + "good.tar.gz",), "good.tar.gz",
                                            hashlib.md5(good).hexdigest(), ".", unpack="tar",
                                            members=(("data/cars/", "things"),)),))
        written = fetch_source(source, root, progress=False)
        assert sorted(p.name for p in written) == ["a.mat", "b.mat"]
        assert (root / "things" / "a.mat").read_bytes() == b"A" and not (root / "data").exists()
        assert not (root / "good.tar.gz").exists()  # the archive is removed after unpacking
        bad = Source(key="evil", title="evil", homepage="", licence="",
                     downloads=(Download((server.url + "evil.tar.gz",), "evil.tar.gz", None, ".", unpack="tar",
                                         members=(("", "x"),)),))
        with pytest.raises(CorruptDatasetError, match="unsafe member path '../escape.txt'"):
            fetch_source(bad, root, progress=False)
        assert not (root.parent / "escape.txt").exists()
    finally:
        server.close()


def test_cli_download_of_an_unreachable_source_fails_cleanly(root, capsys, monkeypatch):
    from bench.data import sources

    dead = Source(key="mnist", title="MNIST", homepage="", licence="", files=sources.SOURCES["mnist"].files,
                  downloads=(Download(("http://127.0.0.1:9/x.gz",), "train-images-idx3-ubyte.gz", None, "mnist"),))
    monkeypatch.setitem(sources.SOURCES, "mnist", dead)
    assert bench_data("download", "mnist", "--timeout", "2") == 1
    err = capsys.readouterr().err
    assert "could not download train-images-idx3-ubyte.gz" in err and str(Path(root) / "mnist") in err


def test_the_download_hint_keeps_the_root_the_user_gave(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    elsewhere = tmp_path / "my data"
    try:
        assert bench_data("--root", str(elsewhere), "verify", "shapes3d") == 1
    finally:
        data_root_module.set_data_root(None)
    assert f"`bench data download shapes3d --root '{elsewhere}'`" in capsys.readouterr().out  # quoted: a space
