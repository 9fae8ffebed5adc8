"""MPI3D toy / realistic / real (Gondal et al. 2019), in two versions that are not comparable.

* **Released version** (``mpi3d-toy``, ``mpi3d-realistic``, ``mpi3d-real``):
  ``<data root>/mpi3d/mpi3d_{toy,realistic,real}.npz`` from
  https://github.com/rr-learning/disentanglement_dataset, 1,036,800 images =
  object colour 6 (white, green, red, blue, brown, olive) × object shape 6 (cone, cube,
  cylinder, hexagonal, pyramid, sphere) × object size 2 × camera height 3 × background
  colour 3 × horizontal axis 40 × vertical axis 40.
* **Earlier version** used by disentanglement_lib's study (``mpi3d-toy-dlib``):
  ``<data root>/mpi3d_toy/mpi3d_toy.npz`` (the path of disentanglement_lib's download
  script, fetched from ``sim_toy_64x_ordered_without_heldout_factors.npz``), 460,800 images =
  colour 4 (green, red, blue, brown) × shape 4 (cone, cube, hexagonal prism, sphere) × the
  same five other factors. Only the toy images were published in this version.

Each ``.npz`` holds one array ``images`` (N, 64, 64, 3) uint8 whose row order is the mixed
radix of the factors above (colour most significant), as the dataset README states. The
released archives store the member uncompressed, so it is memory-mapped in place (12.7 GB;
nothing is copied); a compressed member would be streamed once into a cache instead.
A file whose image count belongs to the other version is rejected with a message saying so.
"""

from __future__ import annotations

import numpy as np

from bench.data.base import FactorDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError, npz_keys, npz_member
from bench.data.root import data_root
from bench.data.sources import get_source

FACTOR_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
                "horizontal_axis", "vertical_axis")
RELEASED_SIZES = (6, 6, 2, 3, 3, 40, 40)
DLIB_SIZES = (4, 4, 2, 3, 3, 40, 40)
VARIANTS = ("toy", "realistic", "real")
_ROWS_PER_CHUNK = 16384


class MPI3D(ArrayImages, FactorDataset):
    """One MPI3D variant in one version; see the module docstring."""

    factor_names = FACTOR_NAMES

    def __init__(self, variant: str = "toy", release: str = "released") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"mpi3d: variant {variant!r} is not one of {', '.join(VARIANTS)}")
        if release not in ("released", "dlib"):
            raise ValueError(f"mpi3d: release {release!r} must be 'released' (6x6 colours/shapes) or 'dlib' (4x4)")
        if release == "dlib" and variant != "toy":
            raise ValueError("mpi3d: the earlier disentanglement_lib version was only published for the toy images")
        self.variant = variant
        self.release = release
        self.factor_sizes = RELEASED_SIZES if release == "released" else DLIB_SIZES
        self.name = f"mpi3d-{variant}" + ("-dlib" if release == "dlib" else "")
        self.version = f"{release}-" + "x".join(map(str, self.factor_sizes))
        root = data_root()
        source = get_source(self.name)
        source.require(root, self.name)
        self.path = source.files[0].find(root)
        keys = npz_keys(self.path)
        if "images" not in keys:
            raise CorruptDatasetError(f"{self.path}: no array 'images' (found {', '.join(keys) or 'none'})")
        self._member = npz_member(self.path, "images")
        n = len(self)
        if self._member.shape[0] != n and self._member.shape[1:] == (64, 64, 3):
            other = DLIB_SIZES if release == "released" else RELEASED_SIZES
            if self._member.shape[0] == int(np.prod(other)):
                place = "mpi3d_toy/mpi3d_toy.npz (name mpi3d-toy-dlib)" if release == "released" else f"mpi3d/mpi3d_{variant}.npz"
                raise CorruptDatasetError(
                    f"{self.path}: holds {self._member.shape[0]:,} images, the "
                    f"{'earlier 4x4 (disentanglement_lib)' if release == 'released' else 'released 6x6'} version; "
                    f"{self.name} expects {n:,}. Move the file to <data root>/{place}"
                )
        if self._member.shape != (n, 64, 64, 3) or self._member.dtype != np.uint8 or self._member.fortran_order:
            raise CorruptDatasetError(
                f"{self.path}: 'images' is {self._member.shape} {self._member.dtype}; expected ({n}, 64, 64, 3) uint8"
            )
        self.pixel_layout = "NCHW" if self._member.compressed else "NHWC"
        self._pixels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 64, 64)

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            if self._member.compressed:
                key = f"{self.name}-{self.version}"
                self._pixels = cached_uint8(key, (len(self), 3, 64, 64), [self.path], self._build)
            else:
                self._pixels = self._member.memmap()
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        start = 0
        for block in self._member.iter_rows(_ROWS_PER_CHUNK):
            out[start:start + len(block)] = block.transpose(0, 3, 1, 2)
            start += len(block)

    def describe(self) -> dict:
        d = super().describe()
        d.update(source=self.name, variant=self.variant, storage="memory-mapped npz" if self.pixel_layout == "NHWC" else "cache")
        return d
