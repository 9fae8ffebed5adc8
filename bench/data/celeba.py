"""CelebA, aligned and cropped (Liu, Luo, Wang & Tang 2015), at 64×64 with its 40 attributes.

Files, under ``<data root>/celeba/`` (torchvision's layout):

* ``img_align_celeba/000001.jpg`` … ``202599.jpg`` — 178 wide × 218 high RGB JPEGs;
* ``list_attr_celeba.txt`` — line 1 the number of images, line 2 the 40 attribute names,
  then one line per image: file name and 40 values in {-1, 1};
* ``list_eval_partition.txt`` — one line per image: file name and 0 (train), 1 (valid) or
  2 (test).

Both text files are parsed and cross-checked (same file names in the same order, 40
values each, partitions contiguous as published) when the dataset is constructed, and every
listed JPEG must exist. Attributes are exposed as {0, 1} (1 = the attribute is present),
for the TAD and attribute-AUROC probes.

Crops (the ``crop`` argument), both then resized to 64×64 with Pillow's bilinear filter,
which averages over the footprint when shrinking:

* ``"center"`` (default): torchvision's ``Resize(64)`` then ``CenterCrop(64)``, as DiffAE's
  default CelebA transform does: the image is resized so its short side is 64 (to 64×78,
  the long side truncated as torchvision computes it) and the central 64 rows kept
  (rows 7..70).
* ``"d2c"``: the crop of D2C (Sinha et al. 2021) used by DiffAE, PDAE and DisDiff — the
  128×128 box with top-left corner (x=25, y=57) (centre x=89, y=121) — then ``Resize(64)``.

Items are one official ``split``: ``"train"`` (default, 162,770 images), ``"valid"``,
``"test"`` or ``"all"``. JPEGs are decoded once (in parallel threads) into a uint8 cache
per crop (202,599 × 3 × 64 × 64 = 2.5 GB).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.base import AttributeDataset
from bench.data.cache import ArrayImages, cached_uint8
from bench.data.files import CorruptDatasetError, DatasetFilesMissing
from bench.data.root import data_root
from bench.data.sources import get_source

SIDE = 64
SOURCE_SIZE = (178, 218)  # (width, height) of every aligned-and-cropped JPEG
CROPS = ("center", "d2c")
SPLITS = {"train": 0, "valid": 1, "test": 2}
_D2C_BOX = (25, 57, 153, 185)  # (left, top, right, bottom): 128x128 around (x=89, y=121)
_CHUNK = 512


def parse_attributes(path: Path) -> tuple[list[str], tuple[str, ...], np.ndarray]:
    """``list_attr_celeba.txt`` -> (file names, 40 attribute names, (N, 40) int8 in {-1, 1})."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise CorruptDatasetError(f"{path}: line 1 must be the number of images, got {lines[0][:40] if lines else 'nothing'!r}")
    count = int(lines[0])
    names = tuple(lines[1].split())
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise CorruptDatasetError(f"{path}: header announces {count:,} images, the file lists {len(rows):,} (truncated?)")
    bad = next((i for i, r in enumerate(rows) if len(r) != len(names) + 1), None)
    if bad is not None:
        raise CorruptDatasetError(f"{path}: line {bad + 3} has {len(rows[bad]) - 1} values; expected {len(names)}")
    values = np.array([r[1:] for r in rows], dtype=np.int8).reshape(count, len(names))
    if not np.isin(values, (-1, 1)).all():
        raise CorruptDatasetError(f"{path}: attribute values must be -1 or 1")
    return [r[0] for r in rows], names, values


def parse_partition(path: Path) -> tuple[list[str], np.ndarray]:
    """``list_eval_partition.txt`` -> (file names, (N,) int64 partition in {0, 1, 2})."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = next((i for i, r in enumerate(rows) if len(r) != 2 or r[1] not in ("0", "1", "2")), None)
    if bad is not None:
        raise CorruptDatasetError(f"{path}: line {bad + 1} must be '<file> <0|1|2>', got {' '.join(rows[bad])!r}")
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows], dtype=np.int64)


def crop_and_resize(image, crop: str):
    """A 178×218 PIL image -> the 64×64 PIL image of ``crop`` (see the module docstring)."""
    from PIL import Image

    if crop == "d2c":
        return image.crop(_D2C_BOX).resize((SIDE, SIDE), Image.BILINEAR)
    width, height = image.size
    long_side = int(SIDE * height / width)  # torchvision's Resize(int): short side -> 64
    resized = image.resize((SIDE, long_side), Image.BILINEAR)
    top = int(round((long_side - SIDE) / 2.0))  # torchvision's CenterCrop
    return resized.crop((0, top, SIDE, top + SIDE))


class CelebA(ArrayImages, AttributeDataset):
    """CelebA at 64×64 with 40 binary attributes; see the module docstring."""

    source_key = "celeba"
    version = "1"

    def __init__(self, crop: str = "center", split: str = "train") -> None:
        if crop not in CROPS:
            raise ValueError(f"celeba: crop {crop!r} is not one of {', '.join(CROPS)}")
        if split not in (*SPLITS, "all"):
            raise ValueError(f"celeba: split {split!r} is not one of {', '.join((*SPLITS, 'all'))}")
        self.crop, self.split = crop, split
        self.name = "celeba" + ("" if crop == "center" else f"-{crop}") + ("" if split == "train" else f"-{split}")
        self.version = f"1-{crop}-bilinear64"
        root = data_root()
        source = get_source(self.source_key)
        folder = root / "celeba"
        text = [spec.find(root) for spec in source.files]
        if any(p is None for p in text):
            source.require(root, self.name)
        self._text_paths = [p for p in text if p is not None]
        files, self.attribute_names, values = parse_attributes(folder / "list_attr_celeba.txt")
        part_files, partition = parse_partition(folder / "list_eval_partition.txt")
        if part_files != files:
            first = next((i for i, (a, b) in enumerate(zip(files, part_files)) if a != b), min(len(files), len(part_files)))
            raise CorruptDatasetError(
                f"{folder}: list_attr_celeba.txt and list_eval_partition.txt disagree at image {first + 1} "
                f"({len(files):,} vs {len(part_files):,} entries)"
            )
        if (np.diff(partition) < 0).any():
            raise CorruptDatasetError(f"{folder / 'list_eval_partition.txt'}: partitions are not contiguous (0s, then 1s, then 2s)")
        image_dir = folder / "img_align_celeba"
        present = set(os.listdir(image_dir)) if image_dir.is_dir() else set()
        absent = [f for f in files if f not in present]
        if absent:
            raise DatasetFilesMissing(
                f"dataset {self.name!r}: {len(absent):,} of {len(files):,} images listed in list_attr_celeba.txt are "
                f"missing from {image_dir} (first: {', '.join(absent[:3])}); {source.how_to_obtain()}"
            )
        self._files = [image_dir / f for f in files]
        self._all_attributes = (values > 0).astype(np.int64)
        if split == "all":
            self._rows = slice(0, len(files))
        else:
            where = np.flatnonzero(partition == SPLITS[split])
            self._rows = slice(int(where[0]), int(where[-1]) + 1) if where.size else slice(0, 0)
        self._pixels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, SIDE, SIDE)

    def __len__(self) -> int:
        return self._rows.stop - self._rows.start

    def attributes(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Attributes (n, 40) int64 in {0, 1} (1 = present, from the file's +1)."""
        return self._all_attributes[self._rows][self._checked_indices(indices)]

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            arr = cached_uint8(
                f"celeba-{self.crop}-{SIDE}px-v1", (len(self._files), 3, SIDE, SIDE), self._text_paths, self._build,
                recipe={"crop": self.crop, "resize": "PIL BILINEAR", "images": len(self._files)},
            )
            self._pixels = arr[self._rows]
        return self._pixels

    def _build(self, out: np.ndarray) -> None:
        def decode(path: Path) -> np.ndarray:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    if im.size != SOURCE_SIZE:
                        raise CorruptDatasetError(f"{path}: {im.size[0]}x{im.size[1]} pixels; expected 178x218 (aligned CelebA)")
                    return np.asarray(crop_and_resize(im.convert("RGB"), self.crop)).transpose(2, 0, 1)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise CorruptDatasetError(f"{path}: not a readable JPEG — truncated or damaged ({exc})") from None

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for start in range(0, len(self._files), _CHUNK):
                block = self._files[start:start + _CHUNK]
                out[start:start + len(block)] = np.stack(list(pool.map(decode, block)))

    def describe(self) -> dict:
        d = super().describe()
        d.update(split=self.split, crop=self.crop, attributes=list(self.attribute_names), source=self.source_key)
        return d
