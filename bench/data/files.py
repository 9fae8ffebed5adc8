"""Readers for the official file formats, with their integrity checks, and the data errors.

Every reader validates what it can cheaply — magic numbers, headers, declared shapes
against the bytes actually present — so that a truncated or wrong file is reported when
the dataset is constructed, naming the file and what was expected, never as a reshape
error deep inside training.

Formats:

* **IDX** (MNIST, Fashion-MNIST; http://yann.lecun.com/exdb/mnist/): big-endian; magic =
  two zero bytes, a type byte (0x08 unsigned byte, ...), the number of dimensions; then
  one uint32 per dimension; then the data, last index fastest.
* **NORB binary matrix** (SmallNORB; https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/):
  little-endian int32 magic (0x1E3D4C55 byte, 0x1E3D4C54 int32, 0x1E3D4C56 int16,
  0x1E3D4C51 float32, 0x1E3D4C53 float64), int32 ndim, then ``max(3, ndim)`` int32
  dimensions (unused ones are 1), then the data.
* **npz** (dSprites, MPI3D): a zip of ``.npy`` members. A member stored without
  compression (MPI3D) is memory-mapped in place; a deflated one (dSprites) is streamed.
* **gzip**: the trailer's ISIZE (uncompressed size mod 2**32) is compared with the size
  the header promises, which catches truncated downloads without decompressing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np


class DatasetFilesMissing(FileNotFoundError):
    """Files a dataset needs are not under the data root; the message says how to get them."""

    def __str__(self) -> str:  # OSError would format (errno, strerror); we want the plain message
        return str(self.args[0])


class CorruptDatasetError(ValueError):
    """A dataset file is present but truncated, of the wrong layout, or fails its checksum."""


# -- checksums ------------------------------------------------------------------------------
_CHUNK = 1 << 22


def file_md5(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """md5 hex digest of the bytes of ``path`` (``progress`` gets byte counts as they are read)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def content_md5(path: Path) -> str:
    """md5 of the decompressed content of a ``.gz`` file (of the bytes themselves otherwise)."""
    if not is_gzip(path):
        return file_md5(path)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                digest.update(block)
    except (EOFError, OSError, zlib_error()) as exc:
        raise CorruptDatasetError(f"{path}: gzip stream is damaged or truncated ({exc})") from None
    return digest.hexdigest()


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


# -- gzip -----------------------------------------------------------------------------------
def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_maybe_gzip(path: Path) -> BinaryIO:
    """A binary stream of the content of ``path``, decompressing a gzip file transparently."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]


def content_size(path: Path) -> int:
    """Size of the content: the gzip ISIZE trailer (mod 2**32) for .gz, the file size otherwise."""
    if is_gzip(path):
        with open(path, "rb") as f:
            f.seek(-4, io.SEEK_END)
            return struct.unpack("<I", f.read(4))[0]
    return path.stat().st_size


def check_content_size(path: Path, expected: int) -> None:
    """Raise :class:`CorruptDatasetError` unless the content of ``path`` has ``expected`` bytes."""
    actual = content_size(path)
    gz = is_gzip(path)
    want = expected % (1 << 32) if gz else expected
    if actual != want:
        what = "gzip trailer says" if gz else "file has"
        raise CorruptDatasetError(
            f"{path}: truncated or damaged — its header promises {expected:,} bytes of content, "
            f"but the {what} {actual:,}; delete it and download it again"
        )


def read_content(path: Path) -> bytes:
    """All content bytes of ``path`` (decompressed if gzip), as a corrupt-file error on failure."""
    try:
        with open_maybe_gzip(path) as f:
            return f.read()
    except (EOFError, OSError, zlib_error()) as exc:
        raise CorruptDatasetError(f"{path}: cannot be read to the end — damaged or truncated ({exc})") from None


# -- IDX (MNIST family) ---------------------------------------------------------------------
_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass(frozen=True)
class ArrayHeader:
    """What a file header declares: element type, shape and where the data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_idx_header(path: Path) -> ArrayHeader:
    """Parse and check the header of an IDX file (raw or gzipped), including its length."""
    with open_maybe_gzip(path) as f:
        try:
            head = f.read(4)
        except (EOFError, OSError) as exc:
            raise CorruptDatasetError(f"{path}: not a readable IDX file ({exc})") from None
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
            raise CorruptDatasetError(
                f"{path}: not an IDX file (magic bytes {head.hex() or 'missing'}; expected 0000 then a type "
                f"byte 08/09/0b/0c/0d/0e and the number of dimensions, e.g. 00000803 for images)"
            )
        ndim = head[3]
        dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise CorruptDatasetError(f"{path}: IDX header truncated (expected {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", dims_raw)
    header = ArrayHeader(_IDX_TYPES[head[2]], tuple(int(s) for s in shape), 4 + 4 * ndim)
    check_content_size(path, header.offset + header.nbytes)
    return header


def read_idx(path: Path, expect_magic: int | None = None) -> np.ndarray:
    """The array stored in an IDX file (native byte order); checks the magic number if given."""
    header = read_idx_header(path)
    type_code = next(code for code, dtype in _IDX_TYPES.items() if dtype == header.dtype)
    magic = type_code * 256 + len(header.shape)
    if expect_magic is not None and magic != expect_magic:
        raise CorruptDatasetError(
            f"{path}: IDX magic number {magic:#010x}, expected {expect_magic:#010x} "
            f"(images are 0x00000803, labels 0x00000801)"
        )
    data = read_content(path)
    if len(data) != header.offset + header.nbytes:
        raise CorruptDatasetError(f"{path}: {len(data):,} content bytes, header promises {header.offset + header.nbytes:,}")
    arr = np.frombuffer(data, dtype=header.dtype, offset=header.offset).reshape(header.shape)
    return arr.astype(header.dtype.newbyteorder("="), copy=False)


# -- NORB binary matrix (SmallNORB) ---------------------------------------------------------
NORB_TYPES = {0x1E3D4C55: np.dtype("<u1"), 0x1E3D4C54: np.dtype("<i4"), 0x1E3D4C56: np.dtype("<i2"),
              0x1E3D4C51: np.dtype("<f4"), 0x1E3D4C53: np.dtype("<f8")}


def read_norb_header(path: Path) -> ArrayHeader:
    """Parse and check the header of a NORB ``.mat`` binary matrix (raw or gzipped)."""
    with open_maybe_gzip(path) as f:
        try:
            head = f.read(8)
        except (EOFError, OSError) as exc:
            raise CorruptDatasetError(f"{path}: not a readable NORB binary matrix ({exc})") from None
        if len(head) < 8:
            raise CorruptDatasetError(f"{path}: NORB header truncated ({len(head)} bytes)")
        magic, ndim = struct.unpack("<iI", head)
        if magic not in NORB_TYPES:
            raise CorruptDatasetError(
                f"{path}: NORB magic number {magic & 0xFFFFFFFF:#010x} unknown; expected one of "
                + ", ".join(f"{m:#010x}" for m in NORB_TYPES)
            )
        if not 0 < ndim <= 8:
            raise CorruptDatasetError(f"{path}: NORB header declares {ndim} dimensions")
        stored = max(3, ndim)
        dims_raw = f.read(4 * stored)
    if len(dims_raw) < 4 * stored:
        raise CorruptDatasetError(f"{path}: NORB header truncated (expected {stored} dimension fields)")
    dims = struct.unpack(f"<{stored}i", dims_raw)[:ndim]
    header = ArrayHeader(NORB_TYPES[magic], tuple(int(d) for d in dims), 8 + 4 * stored)
    check_content_size(path, header.offset + header.nbytes)
    return header


def read_norb(path: Path) -> np.ndarray:
    """The array stored in a NORB binary matrix file (native byte order)."""
    header = read_norb_header(path)
    data = read_content(path)
    if len(data) != header.offset + header.nbytes:
        raise CorruptDatasetError(f"{path}: {len(data):,} content bytes, header promises {header.offset + header.nbytes:,}")
    arr = np.frombuffer(data, dtype=header.dtype, offset=header.offset).reshape(header.shape)
    return arr.astype(header.dtype.newbyteorder("="), copy=False)


# -- npz members ----------------------------------------------------------------------------
@dataclass(frozen=True)
class NpzMember:
    """One ``.npy`` member of an ``.npz`` archive, described without reading its data."""

    path: Path
    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    compressed: bool
    data_offset: int | None  # byte offset of the array data in the .npz file when stored uncompressed

    def memmap(self) -> np.memmap:
        """A read-only memory map of an uncompressed member's data."""
        if self.compressed or self.data_offset is None:
            raise ValueError(f"{self.path}: member {self.key!r} is compressed and cannot be memory-mapped")
        order = "F" if self.fortran_order else "C"
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.data_offset, shape=self.shape, order=order)

    def iter_rows(self, rows_per_chunk: int) -> Iterator[np.ndarray]:
        """Yield consecutive blocks of rows (first axis), decompressing as it goes (C order only)."""
        if self.fortran_order:
            raise CorruptDatasetError(f"{self.path}: member {self.key!r} is Fortran-ordered; expected C order")
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.key + ".npy") as f:
                _read_npy_header(f, self.path, self.key)
                remaining = self.shape[0]
                while remaining:
                    n = min(rows_per_chunk, remaining)
                    buf = f.read(n * row_bytes)
                    if len(buf) != n * row_bytes:
                        raise CorruptDatasetError(f"{self.path}: member {self.key!r} ends early (truncated)")
                    yield np.frombuffer(buf, dtype=self.dtype).reshape((n,) + self.shape[1:])
                    remaining -= n
                f.read(1)  # reaching the end makes zipfile check the CRC
        except (zipfile.BadZipFile, EOFError, OSError, zlib_error()) as exc:
            raise CorruptDatasetError(f"{self.path}: member {self.key!r} is damaged or truncated ({exc})") from None

    def read(self) -> np.ndarray:
        """The whole member as an array (small members only)."""
        if not self.shape or self.shape[0] == 0:
            raise CorruptDatasetError(f"{self.path}: member {self.key!r} has shape {self.shape}; expected rows")
        return np.concatenate(list(self.iter_rows(max(1, self.shape[0]))), axis=0)


def npz_keys(path: Path) -> list[str]:
    """Array names in an ``.npz`` (member names without ``.npy``); corrupt-file error if not a zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptDatasetError(
            f"{path}: not a readable .npz archive — truncated download or wrong file ({exc})"
        ) from None


def npz_member(path: Path, key: str) -> NpzMember:
    """Describe member ``key`` of an ``.npz``: dtype, shape, compression and data offset."""
    keys = npz_keys(path)
    if key not in keys:
        raise CorruptDatasetError(f"{path}: no array {key!r} in the archive (it holds {', '.join(keys) or 'nothing'})")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(key + ".npy")
        try:
            with zf.open(info) as f:
                dtype, shape, fortran, header_len = _read_npy_header(f, path, key)
        except (zipfile.BadZipFile, EOFError, OSError, zlib_error()) as exc:
            raise CorruptDatasetError(f"{path}: member {key!r} is damaged or truncated ({exc})") from None
    compressed = info.compress_type != zipfile.ZIP_STORED
    offset = None
    if not compressed:
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            local = raw.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise CorruptDatasetError(f"{path}: bad local zip header for member {key!r}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + name_len + extra_len + header_len
        expected_end = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if path.stat().st_size < expected_end:
            raise CorruptDatasetError(
                f"{path}: truncated — member {key!r} needs {expected_end:,} bytes, the file has {path.stat().st_size:,}"
            )
    return NpzMember(path, key, dtype, tuple(int(s) for s in shape), fortran, compressed, offset)


def _read_npy_header(f: BinaryIO, path: Path, key: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise CorruptDatasetError(f"{path}: member {key!r} is not a valid .npy array ({exc})") from None
    if dtype.hasobject:
        raise CorruptDatasetError(f"{path}: member {key!r} holds Python objects; expected a numeric array")
    return dtype, shape, fortran, f.tell()
