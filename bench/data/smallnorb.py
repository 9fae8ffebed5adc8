"""SmallNORB (LeCun, Huang & Bottou 2004) from the official binary-matrix files.

Files, under ``<data root>/small_norb/`` (gzipped as published, or gunzipped as
disentanglement_lib's download script leaves them)::

    smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat[.gz]
    smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat[.gz]

in the NORB binary-matrix format (:func:`bench.data.files.read_norb_header`): ``dat``
(24300, 2, 96, 96) uint8 stereo pairs, ``cat`` (24300,) int32 category 0..4 (animal,
human, airplane, truck, car), ``info`` (24300, 4) int32: instance 0..9, elevation 0..8,
azimuth 0, 2, …, 34 (halved to 0..17), lighting 0..5. Training and test files hold
different instances (4, 6, 7, 8, 9 and 0, 1, 2, 3, 5), so together the 48,600 rows are the
full grid category 5 × instance 10 × elevation 9 × azimuth 18 × lighting 6 — checked when
the dataset is constructed (every combination exactly once).

As in disentanglement_lib's ``SmallNORB``: both files are used, only the left camera
image, resized from 96×96 to 64×64 with Pillow's Lanczos filter (its ``ANTIALIAS``).

Two registered views of the same images (item order: the full grid, category most
significant, then instance, elevation, azimuth, lighting):

* ``smallnorb`` — disentanglement_lib's convention: 4 factors (category 5, elevation 9,
  azimuth 18, lighting 6). The instance is *not* a factor, so a factor combination is not
  one image but ten (one per instance); :meth:`SmallNORB.sample_observations_from_factors`
  draws the instance uniformly with the caller's random state, exactly where and how
  disentanglement_lib's ``SplitDiscreteStateSpace.sample_all_factors`` does
  (``random_state.randint(10, size=n)`` after the latent factors).
* ``smallnorb-instance`` — the 5-factor full grid with instance as a factor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.base import FactorDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError, read_norb, read_norb_header
from bench.data.root import data_root
from bench.data.sources import NORB_CHUNKS, get_source

#: the full grid, in item order
GRID_NAMES = ("category", "instance", "elevation", "azimuth", "lighting")
GRID_SIZES = (5, 10, 9, 18, 6)
CATEGORY_NAMES = ("animal", "human", "airplane", "truck", "car")
SOURCE_SIDE = 96
SIDE = 64


class _SmallNORBImages(ArrayImages):
    """Reads, checks and caches the six files; the factor views below share it."""

    source_key = "smallnorb"
    grid_sizes: tuple[int, ...] = GRID_SIZES

    def _load(self) -> None:
        root = data_root()
        source = get_source(self.source_key)
        source.require(root, self.name)  # type: ignore[attr-defined]
        paths = {Path(spec.names[0]).name.removesuffix('.gz'): spec.find(root) for spec in source.files}
        self._dat_paths = [paths[f"{chunk}-dat.mat"] for chunk in NORB_CHUNKS]
        features, rows_per_chunk = [], []
        for chunk, dat_path in zip(NORB_CHUNKS, self._dat_paths):
            dat = read_norb_header(dat_path)
            n = dat.shape[0]
            if dat.dtype != np.uint8 or dat.shape != (n, 2, SOURCE_SIDE, SOURCE_SIDE):
                raise CorruptDatasetError(
                    f"{dat_path}: holds {dat.shape} {dat.dtype}; expected (N, 2, 96, 96) bytes (magic 0x1e3d4c55)"
                )
            cat = read_norb(paths[f"{chunk}-cat.mat"])
            info = read_norb(paths[f"{chunk}-info.mat"])
            if cat.shape != (n,) or cat.dtype != np.int32:
                raise CorruptDatasetError(f"{paths[f'{chunk}-cat.mat']}: holds {cat.shape} {cat.dtype}; expected ({n},) int32")
            if info.shape != (n, 4) or info.dtype != np.int32:
                raise CorruptDatasetError(f"{paths[f'{chunk}-info.mat']}: holds {info.shape} {info.dtype}; expected ({n}, 4) int32")
            if (info[:, 2] % 2).any():
                raise CorruptDatasetError(f"{paths[f'{chunk}-info.mat']}: odd azimuth values; expected 0, 2, ..., 34")
            f = np.column_stack([cat, info]).astype(np.int64)
            f[:, 3] //= 2
            features.append(f)
            rows_per_chunk.append(n)
        features_all = np.concatenate(features)
        sizes = np.asarray(self.grid_sizes)
        if len(features_all) != int(np.prod(sizes)):
            raise CorruptDatasetError(
                f"{self._dat_paths[0].parent}: {len(features_all):,} images in the two files; expected {int(np.prod(sizes)):,}"
            )
        if (features_all < 0).any() or (features_all >= sizes).any():
            col = int(np.flatnonzero(((features_all < 0) | (features_all >= sizes)).any(axis=0))[0])
            raise CorruptDatasetError(f"{self._dat_paths[0].parent}: {GRID_NAMES[col]} values outside 0..{sizes[col] - 1}")
        strides = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]])
        grid_index = features_all @ strides
        if (np.bincount(grid_index, minlength=len(grid_index)) != 1).any():
            raise CorruptDatasetError(
                f"{self._dat_paths[0].parent}: the cat/info files do not list every factor combination exactly once"
            )
        self._grid_index = grid_index  # file row (training then testing) -> item
        self._rows_per_chunk = rows_per_chunk
        self._pixels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, SIDE, SIDE)

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = cached_uint8(
                f"smallnorb-left-{SIDE}px-v1", (len(self._grid_index), 1, SIDE, SIDE), self._dat_paths, self._build,
                recipe={"camera": "left", "resize": "PIL LANCZOS 96->64"},
            )
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        from PIL import Image

        start = 0
        for path, n in zip(self._dat_paths, self._rows_per_chunk):
            dat = read_norb(path)
            targets = self._grid_index[start:start + n]
            for row in range(n):
                left = Image.fromarray(dat[row, 0])
                out[targets[row], 0] = np.asarray(left.resize((SIDE, SIDE), Image.LANCZOS))
            start += n


class SmallNORBInstance(_SmallNORBImages, FactorDataset):
    """SmallNORB as the 5-factor grid, instance included (``smallnorb-instance``)."""

    name = "smallnorb-instance"
    version = "1-left-lanczos64"
    factor_names = GRID_NAMES

    def __init__(self) -> None:
        self._load()

    @property
    def factor_sizes(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self.grid_sizes)

    def describe(self) -> dict:
        d = super().describe()
        d.update(source=self.source_key, categories=list(CATEGORY_NAMES))
        return d


class SmallNORB(_SmallNORBImages, FactorDataset):
    """SmallNORB with disentanglement_lib's 4 factors (``smallnorb``); instance drawn at random."""

    name = "smallnorb"
    version = "1-left-lanczos64"
    factor_names = ("category", "elevation", "azimuth", "lighting")
    _LATENT = (0, 2, 3, 4)  # positions of the factors in the full grid
    _INSTANCE = 1

    def __init__(self) -> None:
        self._load()
        self._grid = _Grid(self.grid_sizes)

    @property
    def factor_sizes(self) -> tuple[int, ...]:  # type: ignore[override]
        """(5, 9, 18, 6): category, elevation, azimuth, lighting."""
        return tuple(self.grid_sizes[k] for k in self._LATENT)

    def __len__(self) -> int:
        return int(np.prod(self.grid_sizes))

    def factors(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Factor classes (n, 4) of the items (their instance is dropped)."""
        return self._grid.digits(np.asarray(indices, dtype=np.int64), self.name)[:, list(self._LATENT)]

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        raise ValueError(
            "smallnorb: a combination of the 4 factors matches 10 images (one per instance); "
            "use sample_observations_from_factors(factors, random_state), which draws the instance, "
            "or the 5-factor dataset 'smallnorb-instance'"
        )

    def sample_observations_from_factors(self, factors: np.ndarray, random_state=None) -> np.ndarray:
        """Images for factor classes (n, 4), each with an instance drawn uniformly from ``random_state``."""
        f = np.asarray(factors, dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != len(self.factor_sizes):
            raise ValueError(f"smallnorb: factors must have shape (n, 4), got {f.shape}")
        if random_state is None:
            raise ValueError("smallnorb: sample_observations_from_factors needs a random_state to draw the instance")
        full = np.empty((len(f), len(self.grid_sizes)), dtype=np.int64)
        full[:, list(self._LATENT)] = f
        high = self.grid_sizes[self._INSTANCE]
        if isinstance(random_state, np.random.Generator):
            full[:, self._INSTANCE] = random_state.integers(0, high, size=len(f))
        else:
            full[:, self._INSTANCE] = random_state.randint(high, size=len(f))
        return self.images(self._grid.index(full, self.name))

    def describe(self) -> dict:
        d = super().describe()
        d.update(source=self.source_key, categories=list(CATEGORY_NAMES),
                 note="instance is not a factor: drawn uniformly per observation (disentanglement_lib)")
        return d


class _Grid:
    """Mixed-radix conversions for a grid of ``sizes`` (first most significant)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.strides = np.concatenate([np.cumprod(self.sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    def digits(self, idx: np.ndarray, name: str) -> np.ndarray:
        total = int(np.prod(self.sizes))
        if idx.size and (idx.min() < 0 or idx.max() >= total):
            raise IndexError(f"{name}: index out of range [0, {total}): {idx.min()}..{idx.max()}")
        return (idx.reshape(-1)[:, None] // self.strides[None, :]) % self.sizes[None, :]

    def index(self, digits: np.ndarray, name: str) -> np.ndarray:
        if (digits < 0).any() or (digits >= self.sizes[None, :]).any():
            raise ValueError(f"{name}: factor classes out of range for sizes {tuple(self.sizes.tolist())}")
        return digits @ self.strides
