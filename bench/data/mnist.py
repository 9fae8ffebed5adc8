"""MNIST and Fashion-MNIST from their official IDX files (raw or gzipped).

Files, under ``<data root>/mnist/`` or ``<data root>/fashion-mnist/`` (see
:mod:`bench.data.sources` for URLs and md5s)::

    train-images-idx3-ubyte[.gz]  magic 0x00000803, 60,000 × 28 × 28 uint8
    train-labels-idx1-ubyte[.gz]  magic 0x00000801, 60,000 uint8 in 0..9
    t10k-images-idx3-ubyte[.gz]   10,000 × 28 × 28
    t10k-labels-idx1-ubyte[.gz]   10,000

Items are the official ``split`` (``"train"``, the default, ``"test"``, or ``"all"`` = train
then test) in file order. Images are (1, 28, 28) float32 in [0, 1] (pixel / 255), white
strokes on black. ``pad=2`` gives the 32×32 variant — two rows/columns of zeros on every
side, so the image content is unchanged — because the project's convolutional encoders need
sides divisible by 16.

Headers, magic numbers, lengths (against the gzip trailer) and label ranges are checked
when the dataset is constructed; pixels are decoded once into a uint8 cache
(:mod:`bench.data.cache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from bench.data.base import LabelledDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError, read_idx, read_idx_header
from bench.data.root import data_root
from bench.data.sources import get_source

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
SPLITS = ("train", "test", "all")
_PARTS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class IdxClassDataset(ArrayImages, LabelledDataset):
    """A 10-class dataset in the MNIST IDX format; subclasses name the source and classes."""

    source_key: ClassVar[str] = ""
    base_name: ClassVar[str] = ""
    side: ClassVar[int] = 28
    version = "1"

    def __init__(self, split: str = "train", pad: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"{self.base_name}: split {split!r} is not one of {', '.join(SPLITS)}")
        if pad not in (0, 2):
            raise ValueError(f"{self.base_name}: pad must be 0 (28x28) or 2 (32x32), got {pad!r}")
        self.split = split
        self.pad = pad
        side = self.side + 2 * pad
        self.name = self.base_name if pad == 0 else f"{self.base_name}-{side}"
        if split != "train":
            self.name += f"-{split}"
        root = data_root()
        source = get_source(self.source_key)
        source.require(root, self.name)
        self._paths = {Path(spec.names[0]).name.removesuffix('.gz'): spec.find(root) for spec in source.files}
        counts = {}
        labels = []
        for part, (images_stem, labels_stem) in _PARTS.items():
            header = read_idx_header(self._paths[images_stem])
            n = header.shape[0]
            if header.dtype != np.dtype(">u1") or header.shape[1:] != (self.side, self.side):
                raise CorruptDatasetError(
                    f"{self._paths[images_stem]}: images of shape {header.shape} {header.dtype}; "
                    f"expected (N, {self.side}, {self.side}) unsigned bytes"
                )
            y = read_idx(self._paths[labels_stem], expect_magic=LABELS_MAGIC)
            if y.shape != (n,):
                raise CorruptDatasetError(
                    f"{self._paths[labels_stem]}: {y.shape[0] if y.ndim else 0} labels for {n} images "
                    f"in {self._paths[images_stem].name}"
                )
            if y.size and y.max() >= len(self.class_names):
                raise CorruptDatasetError(f"{self._paths[labels_stem]}: label {int(y.max())} outside 0..{len(self.class_names) - 1}")
            counts[part] = n
            labels.append(y.astype(np.int64))
        self._all_labels = np.concatenate(labels)
        start = {"train": 0, "test": counts["train"], "all": 0}[split]
        stop = {"train": counts["train"], "test": counts["train"] + counts["test"], "all": counts["train"] + counts["test"]}[split]
        self._rows = slice(start, stop)
        self._counts = counts
        self._pixels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        side = self.side + 2 * self.pad
        return (1, side, side)

    def __len__(self) -> int:
        return self._rows.stop - self._rows.start

    def labels(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        return self._all_labels[self._rows][self._checked_indices(indices)]

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            total = self._counts["train"] + self._counts["test"]
            side = self.side + 2 * self.pad
            sources = [self._paths[stem] for stems in _PARTS.values() for stem in stems]
            arr = cached_uint8(f"{self.source_key}-{side}px-v{self.version}", (total, 1, side, side), sources,
                               self._build, recipe={"pad": self.pad})
            self._pixels = arr[self._rows]
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        out[...] = 0
        lo, hi = self.pad, self.pad + self.side
        start = 0
        for images_stem, _ in _PARTS.values():
            x = read_idx(self._paths[images_stem], expect_magic=IMAGES_MAGIC)
            out[start:start + len(x), 0, lo:hi, lo:hi] = x
            start += len(x)

    def describe(self) -> dict:
        d = super().describe()
        d.update(split=self.split, classes=list(self.class_names), source=self.source_key)
        return d


class MNIST(IdxClassDataset):
    """MNIST handwritten digits (LeCun et al. 1998); see the module docstring."""

    source_key = "mnist"
    base_name = "mnist"
    class_names = tuple(str(d) for d in range(10))


class FashionMNIST(IdxClassDataset):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): Zalando article images, MNIST's format."""

    source_key = "fashion-mnist"
    base_name = "fashion-mnist"
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
