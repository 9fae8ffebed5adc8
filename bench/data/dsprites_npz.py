"""dSprites from DeepMind's official ``.npz`` (Matthey, Higgins, Hassabis & Lerchner 2017).

File: ``<data root>/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (the path of
disentanglement_lib's download script), with arrays

* ``imgs``            (737280, 64, 64) uint8, values 0/1;
* ``latents_classes`` (737280, 6) int64: colour, shape, scale, orientation, posX, posY;
* ``latents_values``  (737280, 6) float64;
* ``metadata``        a pickled dict (never loaded here: unpickling can run code, and
  nothing in it is needed).

The constant colour factor is dropped, as in the literature and in disentanglement_lib's
``dsprites_full``: 5 factors shape 3, scale 6, orientation 40, posX 32, posY 32, item ``i``
= the file's row ``i`` (mixed radix, shape most significant — the file's own order, which
is checked against ``latents_classes`` when the cache is built). Images are (1, 64, 64)
float32 with values exactly 0.0 or 1.0.

The archive member ``imgs`` is deflate-compressed (26 MB on disk, 3 GB decoded), so it is
streamed once into a uint8 cache (stored as 0/255) rather than decompressed per run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.data.base import FactorDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError, npz_keys, npz_member
from bench.data.root import data_root
from bench.data.sources import get_source

REQUIRED_KEYS = ("imgs", "latents_classes", "latents_values")
_ROWS_PER_CHUNK = 32768


class DSprites(ArrayImages, FactorDataset):
    """The official dSprites images with the 5 literature factors; see the module docstring."""

    name = "dsprites"
    version = "1"
    source_key = "dsprites"
    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes = (3, 6, 40, 32, 32)

    def __init__(self) -> None:
        root = data_root()
        source = get_source(self.source_key)
        source.require(root, self.name)
        self.path = source.files[0].find(root)
        keys = npz_keys(self.path)
        missing = [k for k in REQUIRED_KEYS if k not in keys]
        if missing:
            raise CorruptDatasetError(
                f"{self.path}: missing array(s) {', '.join(missing)} (found {', '.join(keys) or 'none'}); "
                f"expected {', '.join(REQUIRED_KEYS)}"
            )
        n = len(self)
        self._imgs = npz_member(self.path, "imgs")
        if self._imgs.shape != (n, 64, 64) or self._imgs.dtype != np.uint8:
            raise CorruptDatasetError(
                f"{self.path}: 'imgs' is {self._imgs.shape} {self._imgs.dtype}; expected ({n}, 64, 64) uint8"
            )
        self._classes = npz_member(self.path, "latents_classes")
        if self._classes.shape != (n, 6) or self._classes.dtype.kind not in "iu":
            raise CorruptDatasetError(
                f"{self.path}: 'latents_classes' is {self._classes.shape} {self._classes.dtype}; expected ({n}, 6) integers"
            )
        self._pixels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 64, 64)

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = cached_uint8(f"dsprites-v{self.version}", (len(self), 1, 64, 64), [self.path], self._build)
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        classes = self._classes.read()
        expected = self.factors(np.arange(len(self)))
        if (classes[:, 0] != 0).any() or not np.array_equal(classes[:, 1:], expected):
            bad = int(np.flatnonzero((classes[:, 1:] != expected).any(axis=1) | (classes[:, 0] != 0))[0])
            raise CorruptDatasetError(
                f"{self.path}: row {bad} has latents_classes {classes[bad].tolist()}, expected "
                f"[0, {', '.join(map(str, expected[bad]))}] — not the official item order"
            )
        start = 0
        for block in self._imgs.iter_rows(_ROWS_PER_CHUNK):
            if block.max(initial=0) > 1:
                raise CorruptDatasetError(f"{self.path}: 'imgs' rows {start}.. hold values above 1; expected 0/1 masks")
            out[start:start + len(block), 0] = block * np.uint8(255)
            start += len(block)

    def factor_values(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Continuous values (n, 5): shape id, scale, orientation (rad), posX, posY (the official grids)."""
        f = self.factors(indices)
        return np.stack([f[:, 0].astype(np.float64), np.linspace(0.5, 1.0, 6)[f[:, 1]],
                         np.linspace(0.0, 2 * np.pi, 40)[f[:, 2]], np.linspace(0.0, 1.0, 32)[f[:, 3]],
                         np.linspace(0.0, 1.0, 32)[f[:, 4]]], axis=1)

    def describe(self) -> dict:
        d = super().describe()
        d["source"] = self.source_key
        return d
