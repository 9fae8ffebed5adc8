"""Cars3D (Reed, Zhang, Zhang & Lee 2015; car models of Fidler, Dickinson & Urtasun 2012).

Files: ``<data root>/cars/*.mat`` — the 183 files of ``data/cars/`` in
``nips2015-analogy-data.tar.gz`` (the layout of disentanglement_lib's download script).
Each holds ``im``, a (128, 128, 3, 24, 4) uint8 array: one car model rendered at 24
azimuths × 4 elevations, ``im[:, :, :, azimuth, elevation]`` an RGB image.

Factors (disentanglement_lib's ``Cars3D``): elevation 4, azimuth 24, object type 183;
item ``i`` has the mixed-radix digits of ``i`` (elevation most significant). Every view
is resized from 128×128 to 64×64 with Pillow's Lanczos filter — what disentanglement_lib
does (``thumbnail(..., ANTIALIAS)``; ``ANTIALIAS`` was Pillow's old name for ``LANCZOS``).
Pillow is always present because matplotlib depends on it.

Deviation: disentanglement_lib numbers the car models in directory-listing order, which
the file system decides; here the files are sorted by name, so object-type class ``k``
is the ``k``-th file in sorted order. The factor metrics are invariant to relabelling
the classes of a factor, so scores are unaffected.

The 183 files are decoded and resized once into a uint8 cache (17,568 × 3 × 64 × 64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.base import FactorDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError
from bench.data.root import data_root
from bench.data.sources import get_source

SOURCE_SIDE = 128
SIDE = 64


def _whosmat(path: Path) -> dict[str, tuple]:
    import scipy.io

    try:
        return {name: tuple(shape) for name, shape, _ in scipy.io.whosmat(path)}
    except (ValueError, OSError, TypeError) as exc:
        raise CorruptDatasetError(f"{path}: not a readable MATLAB file ({exc})") from None


def _load_views(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    import scipy.io

    try:
        im = scipy.io.loadmat(path, variable_names=["im"])["im"]
    except (ValueError, OSError, TypeError, KeyError) as exc:
        raise CorruptDatasetError(f"{path}: cannot read 'im' — damaged file ({exc})") from None
    if im.shape != shape or im.dtype != np.uint8:
        raise CorruptDatasetError(f"{path}: 'im' is {im.shape} {im.dtype}; expected {shape} uint8")
    return im


class Cars3D(ArrayImages, FactorDataset):
    """Cars3D at 64×64 with disentanglement_lib's factors; see the module docstring."""

    name = "cars3d"
    version = "1-lanczos64"
    source_key = "cars3d"
    factor_names = ("elevation", "azimuth", "object_type")
    factor_sizes = (4, 24, 183)

    def __init__(self) -> None:
        root = data_root()
        source = get_source(self.source_key)
        glob = source.globs[0]
        files = glob.files(root)
        n_elev, n_azim, n_models = self.factor_sizes
        if not files:
            source.require(root, self.name)  # raises, naming the folder and how to get the files
        if len(files) != n_models:
            raise CorruptDatasetError(
                f"{root / glob.folder}: {len(files)} .mat files, expected {n_models} (one per car model); "
                f"an interrupted unpack? run `bench data download {self.source_key}` again"
            )
        self._files = files
        self._shape = (SOURCE_SIDE, SOURCE_SIDE, 3, n_azim, n_elev)
        for path in files:
            found = _whosmat(path)
            if "im" not in found:
                raise CorruptDatasetError(f"{path}: no variable 'im' (found {', '.join(found) or 'none'})")
            if found["im"] != self._shape:
                raise CorruptDatasetError(f"{path}: 'im' has shape {found['im']}; expected {self._shape}")
        self._pixels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, SIDE, SIDE)

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = cached_uint8(f"cars3d-v{self.version}", (len(self), 3, SIDE, SIDE), self._files, self._build,
                                        recipe={"resize": "PIL LANCZOS 128->64"})
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        from PIL import Image

        n_elev, n_azim, _ = self.factor_sizes
        elev, azim = np.meshgrid(np.arange(n_elev), np.arange(n_azim), indexing="ij")
        for model, path in enumerate(self._files):
            im = _load_views(path, self._shape)
            factors = np.stack([elev.ravel(), azim.ravel(), np.full(elev.size, model)], axis=1)
            rows = self.index_of(factors)
            for row, e, a in zip(rows, elev.ravel(), azim.ravel()):
                view = Image.fromarray(np.ascontiguousarray(im[:, :, :, a, e]))
                out[row] = np.asarray(view.resize((SIDE, SIDE), Image.LANCZOS)).transpose(2, 0, 1)

    def describe(self) -> dict:
        d = super().describe()
        d.update(source=self.source_key, resize="Pillow LANCZOS 128->64")
        return d
