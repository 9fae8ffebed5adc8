"""CIFAR-10 from the official "python version" pickle batches.

Files, under ``<data root>/cifar10/cifar-10-batches-py/`` (the layout of
``cifar-10-python.tar.gz``): ``data_batch_1`` … ``data_batch_5`` (training, 10,000 images
each), ``test_batch`` (10,000) and ``batches.meta``. Each batch is a Python-2 pickle of a
dict with byte-string keys: ``b"data"`` a (10000, 3072) uint8 array — per row 1,024 red,
then 1,024 green, then 1,024 blue values, each a 32×32 image in row-major order, so a row
reshapes directly to (3, 32, 32) — and ``b"labels"``, a list of 10,000 ints in 0..9.
``batches.meta`` holds ``b"label_names"``.

Pickles can run arbitrary code when loaded, so they are read with an unpickler that
accepts only the handful of numpy reconstruction functions such an array needs and
rejects everything else as a corrupt file.

Items are the official ``split`` (``"train"``: batches 1–5 in order, ``"test"``, ``"all"``);
images (3, 32, 32) float32 in [0, 1] (pixel / 255), decoded once into a uint8 cache.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.data.base import LabelledDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError
from bench.data.root import data_root
from bench.data.sources import get_source

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
SPLITS = ("train", "test", "all")
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# What unpickling a numpy array needs (numpy 1.x and 2.x module paths; ``_codecs.encode`` is how
# protocol-2 pickles written by Python 3 spell a bytes object) — nothing else.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")


def load_batch(path: Path) -> dict:
    """One CIFAR pickle as a dict with ``str`` keys; corrupt-file error on anything unexpected."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CorruptDatasetError(f"{path}: not a readable CIFAR pickle — truncated or wrong file ({exc})") from None
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"{path}: pickle holds a {type(obj).__name__}; expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


class CIFAR10(ArrayImages, LabelledDataset):
    """CIFAR-10 (Krizhevsky 2009): 60,000 32×32 colour images in 10 classes; see the module docstring."""

    class_names = CLASS_NAMES
    version = "1"
    source_key = "cifar10"

    def __init__(self, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"cifar10: split {split!r} is not one of {', '.join(SPLITS)}")
        self.split = split
        self.name = "cifar10" if split == "train" else f"cifar10-{split}"
        root = data_root()
        get_source(self.source_key).require(root, self.name)
        folder = root / "cifar10" / "cifar-10-batches-py"
        self._paths = [folder / b for b in TRAIN_BATCHES + TEST_BATCHES]
        meta = load_batch(folder / "batches.meta")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", ()))
        if names != CLASS_NAMES:
            raise CorruptDatasetError(f"{folder / 'batches.meta'}: label_names {names}; expected {CLASS_NAMES}")
        labels, counts = [], []
        for path in self._paths:
            batch = load_batch(path)
            data, y = self._check(path, batch)
            labels.append(y)
            counts.append(len(data))
        self._counts = counts
        self._all_labels = np.concatenate(labels)
        n_train = sum(counts[:len(TRAIN_BATCHES)])
        bounds = {"train": (0, n_train), "test": (n_train, sum(counts)), "all": (0, sum(counts))}[split]
        self._rows = slice(*bounds)
        self._pixels: np.ndarray | None = None

    @staticmethod
    def _check(path: Path, batch: dict) -> tuple[np.ndarray, np.ndarray]:
        for key in ("data", "labels"):
            if key not in batch:
                raise CorruptDatasetError(f"{path}: no key {key!r} in the batch (keys: {', '.join(map(str, batch))})")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            what = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
            raise CorruptDatasetError(f"{path}: 'data' is {what}; expected an (N, 3072) uint8 array")
        y = np.asarray(batch["labels"], dtype=np.int64)
        if y.shape != (len(data),) or (y.size and (y.min() < 0 or y.max() > 9)):
            raise CorruptDatasetError(f"{path}: 'labels' must be {len(data)} ints in 0..9, got shape {y.shape}")
        return data, y

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    def __len__(self) -> int:
        return self._rows.stop - self._rows.start

    def labels(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        return self._all_labels[self._rows][self._checked_indices(indices)]

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            arr = cached_uint8(f"cifar10-v{self.version}", (sum(self._counts), 3, 32, 32), self._paths, self._build)
            self._pixels = arr[self._rows]
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        start = 0
        for path in self._paths:
            data, _ = self._check(path, load_batch(path))
            out[start:start + len(data)] = data.reshape(-1, 3, 32, 32)
            start += len(data)

    def describe(self) -> dict:
        d = super().describe()
        d.update(split=self.split, classes=list(self.class_names), source=self.source_key)
        return d
