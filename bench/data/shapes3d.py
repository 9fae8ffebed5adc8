"""3dshapes from DeepMind's official HDF5 file (Burgess & Kim 2018).

File: ``<data root>/3dshapes/3dshapes.h5`` with datasets

* ``images`` (480000, 64, 64, 3) uint8 RGB;
* ``labels`` (480000, 6) float64 factor *values*: floor hue, wall hue, object hue
  (``linspace(0, 0.9, 10)`` each), scale (``linspace(0.75, 1.25, 8)``), shape (0..3:
  cube, cylinder, sphere, capsule), orientation (``linspace(-30, 30, 15)`` degrees).

Factor classes are derived from the label values (the rank of a value among the distinct
values of its column), and checked to equal the mixed-radix digits of the row index with
sizes 10, 10, 10, 8, 4, 15 — the layout disentanglement_lib's ``Shapes3D`` assumes. A file
whose rows are in another order is rejected as not the official file. Images are
(3, 64, 64) float32 in [0, 1] (pixel / 255).

The HDF5 images are compressed; they are decoded once into a uint8 cache in (N, C, H, W)
layout (5.9 GB) and memory-mapped from then on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.data.base import FactorDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError
from bench.data.root import data_root
from bench.data.sources import get_source

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
_ROWS_PER_CHUNK = 10_000


def _open_h5(path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise CorruptDatasetError(f"{path}: not a readable HDF5 file — truncated download or wrong file ({exc})") from None


class Shapes3D(ArrayImages, FactorDataset):
    """The official 3dshapes images and factors; see the module docstring."""

    name = "shapes3d"
    version = "1"
    source_key = "shapes3d"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def __init__(self) -> None:
        root = data_root()
        source = get_source(self.source_key)
        source.require(root, self.name)
        self.path = source.files[0].find(root)
        n = len(self)
        with _open_h5(self.path) as f:
            for key in ("images", "labels"):
                if key not in f:
                    raise CorruptDatasetError(f"{self.path}: no dataset {key!r} (found {', '.join(f.keys()) or 'none'})")
            images, labels = f["images"], f["labels"]
            if images.shape != (n, 64, 64, 3) or images.dtype != np.uint8:
                raise CorruptDatasetError(
                    f"{self.path}: 'images' is {images.shape} {images.dtype}; expected ({n}, 64, 64, 3) uint8"
                )
            if labels.shape != (n, 6) or labels.dtype.kind != "f":
                raise CorruptDatasetError(f"{self.path}: 'labels' is {labels.shape} {labels.dtype}; expected ({n}, 6) floats")
            try:
                values = np.asarray(labels[...], dtype=np.float64)
            except OSError as exc:
                raise CorruptDatasetError(f"{self.path}: 'labels' cannot be read — damaged file ({exc})") from None
        self._values = values
        classes = np.empty(values.shape, dtype=np.int64)
        for k, (name, size) in enumerate(zip(self.factor_names, self.factor_sizes)):
            distinct, classes[:, k] = np.unique(values[:, k], return_inverse=True)
            if len(distinct) != size:
                raise CorruptDatasetError(f"{self.path}: factor {name!r} has {len(distinct)} distinct values; expected {size}")
        bad = np.flatnonzero((classes != self.factors(np.arange(n))).any(axis=1))
        if bad.size:
            raise CorruptDatasetError(
                f"{self.path}: row {bad[0]} has factor classes {classes[bad[0]].tolist()}, expected "
                f"{self.factors([bad[0]])[0].tolist()} — rows are not in the official order"
            )
        self._pixels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 64, 64)

    def factor_values(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """The file's label values (n, 6) for ``indices`` (hues in [0, 0.9], scale, shape id, degrees)."""
        return self._values[self._checked_indices(indices)]

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = cached_uint8(f"shapes3d-v{self.version}", (len(self), 3, 64, 64), [self.path], self._build)
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        with _open_h5(self.path) as f:
            images = f["images"]
            for start in range(0, len(self), _ROWS_PER_CHUNK):
                stop = min(start + _ROWS_PER_CHUNK, len(self))
                try:
                    block = images[start:stop]
                except OSError as exc:
                    raise CorruptDatasetError(f"{self.path}: 'images' rows {start}..{stop} cannot be read ({exc})") from None
                out[start:stop] = block.transpose(0, 3, 1, 2)

    def describe(self) -> dict:
        d = super().describe()
        d["source"] = self.source_key
        return d
