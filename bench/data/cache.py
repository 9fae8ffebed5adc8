"""The compact uint8 cache, and the image access shared by every file-backed dataset.

Decoding JPEGs, ``.mat`` files, gzip or a compressed HDF5 file on every epoch would make
training input-bound. Datasets up to Shapes3D's size (480,000 × 3 × 64 × 64 = 5.9 GB) are
therefore decoded **once** into a ``.npy`` file of uint8 pixels in (N, C, H, W) layout,
255 meaning 1.0, under :func:`bench.data.root.cache_dir`, and from then on memory-mapped
(the OS page cache keeps the hot part in RAM; nothing is decoded again). A JSON sidecar
records the source files' sizes and modification times and the cache layout; if any of
them change, the cache is rebuilt. Caches are written to a temporary name and renamed
into place, so a killed build never leaves a half-written cache behind.

:class:`ArrayImages` turns such an array into the dataset contract's
``images(indices) -> float32 (n, C, H, W) in [0, 1]`` and exposes the raw uint8 array to
:class:`bench.data.loader.DeviceBatches`, which moves it to the GPU once.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bench.data.root import cache_dir

#: bump when the cache file layout changes (every cache is then rebuilt)
CACHE_FORMAT = 1


def cached_uint8(
    key: str,
    shape: tuple[int, ...],
    sources: Sequence[Path],
    build: Callable[[np.ndarray], None],
    *,
    recipe: dict | None = None,
) -> np.ndarray:
    """A read-only memory map of the uint8 cache ``key``, building it first if needed.

    ``build(out)`` fills ``out`` (a writable uint8 memory map of ``shape``) from the
    ``sources``; ``recipe`` (JSON-able) describes any preprocessing (crop, filter, ...) so
    that changing it invalidates the cache.
    """
    folder = cache_dir()
    path = folder / f"{key}.npy"
    meta_path = folder / f"{key}.json"
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "shape": list(shape),
        "recipe": recipe or {},
        "sources": [_fingerprint(Path(p)) for p in sources],
    }
    if path.exists() and meta_path.exists():
        try:
            if json.loads(meta_path.read_text()) == meta:
                arr = np.load(path, mmap_mode="r")
                if arr.shape == tuple(shape) and arr.dtype == np.uint8:
                    return arr
        except (ValueError, OSError):
            pass  # unreadable cache or sidecar: rebuild below
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(shape))
        build(out)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    tmp_meta = folder / f".{key}.{os.getpid()}.tmp.json"
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_path)
    return np.load(path, mmap_mode="r")


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class ArrayImages:
    """Mixin: a dataset whose images are rows of one uint8 array (255 ↔ 1.0).

    Subclasses implement :meth:`pixels` (the whole array, usually a memory map) and set
    ``pixel_layout`` to ``"NCHW"`` (the caches) or ``"NHWC"`` (a file memory-mapped as it
    is stored, e.g. MPI3D's uncompressed ``.npz``).
    """

    pixel_layout: str = "NCHW"

    @abc.abstractmethod
    def pixels(self) -> np.ndarray:
        """All images as one uint8 array in ``pixel_layout``."""

    def _checked_indices(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64)).reshape(-1)
        n = len(self)  # type: ignore[arg-type]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            name = getattr(self, "name", type(self).__name__)
            raise IndexError(f"{name}: index out of range [0, {n}): {idx.min()}..{idx.max()}")
        return idx

    def images_uint8(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """uint8 images (n, C, H, W) at ``indices`` (255 ↔ 1.0)."""
        idx = self._checked_indices(indices)
        arr = self.pixels()
        order = np.argsort(idx, kind="stable")  # sorted reads are kinder to a memory map on disk
        block = np.empty((len(idx),) + arr.shape[1:], dtype=np.uint8)
        block[order] = arr[idx[order]]
        if self.pixel_layout == "NHWC":
            block = np.ascontiguousarray(block.transpose(0, 3, 1, 2))
        return block

    def images(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """float32 images (n, C, H, W) in [0, 1] at ``indices``; IndexError when out of range."""
        out = self.images_uint8(indices).astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out
