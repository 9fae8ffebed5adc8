"""A codes table presented as datasets, so the registered metrics can draw from it.

The datasets' "images" are row numbers (float64, shape (n, 1, 1, 1)) and
:func:`lookup_encoder` is their ``encode``: it looks the codes up. When every combination of
factor classes is present, :class:`TableFactorDataset` is a factor dataset over the rows, and
the suite draws its samples from it exactly as disentanglement_lib draws them through a
representation function (so the numbers equal those of the registered metrics with the same
seed). :class:`TableAttributeDataset` and :class:`TableLabelledDataset` serve the attribute
and label metrics. Factor class indices with gaps (e.g. classes {0, 2}) are renumbered
consecutively (:func:`consecutive_classes`; the metrics treat classes as labels).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from bench.data.base import AttributeDataset, FactorDataset, LabelledDataset
from bench.metrics.sampling import as_random_state


def lookup_encoder(codes: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``encode`` for the table datasets: "images" (n, 1, 1, 1) of row numbers -> codes (n, D)."""
    table = np.asarray(codes, dtype=np.float64)

    def encode(images: np.ndarray) -> np.ndarray:
        return table[np.asarray(images).reshape(len(images)).astype(np.int64)]

    return encode


def _row_images(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 1, 1, 1)


class TableFactorDataset(FactorDataset):
    """The rows of a codes table that covers the full factorial grid, as a factor dataset.

    Its "images" are the row numbers (float64, shape (n, 1, 1, 1)), to be encoded by
    :func:`lookup_encoder`. A grid cell held by several rows yields one of them chosen
    uniformly with the sampling ``random_state`` (an extra draw only in that case).
    """

    name = "codes-table"

    def __init__(self, factors: np.ndarray, factor_names: Sequence[str] | None = None) -> None:
        classes = consecutive_classes(factors)
        self.factor_sizes = tuple(int(c.max()) + 1 for c in classes.T)
        self.factor_names = tuple(factor_names) if factor_names else tuple(f"factor_{k}" for k in range(len(self.factor_sizes)))
        cells = classes @ self._strides()
        order = np.argsort(cells, kind="stable")
        counts = np.bincount(cells, minlength=len(self))
        if (counts == 0).any():
            raise ValueError(f"the factors cover {int((counts > 0).sum())} of {len(self)} grid cells, not the full grid")
        self._rows = order  # rows sorted by grid cell
        self._first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._counts = counts

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def images(self, indices) -> np.ndarray:
        return _row_images(self._rows[self._first[np.asarray(indices, dtype=np.int64)]])

    def sample_observations_from_factors(self, factors: np.ndarray, random_state=None) -> np.ndarray:
        cells = self.index_of(factors)
        counts = self._counts[cells]
        offset = np.zeros(len(cells), dtype=np.int64)
        if (counts > 1).any():
            offset = (as_random_state(random_state).random_sample(len(cells)) * counts).astype(np.int64)
        return _row_images(self._rows[self._first[cells] + offset])


class TableAttributeDataset(AttributeDataset):
    """The rows of a codes table with binary attributes; "images" are row numbers."""

    name = "codes-table"

    def __init__(self, attributes: np.ndarray, attribute_names: Sequence[str] | None = None) -> None:
        self._attributes = np.asarray(attributes, dtype=np.int64)
        self.attribute_names = tuple(attribute_names or ())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def __len__(self) -> int:
        return len(self._attributes)

    def images(self, indices) -> np.ndarray:
        return _row_images(np.asarray(indices))

    def attributes(self, indices) -> np.ndarray:
        return self._attributes[np.asarray(indices, dtype=np.int64)]


class TableLabelledDataset(LabelledDataset):
    """The rows of a codes table with class labels; "images" are row numbers."""

    name = "codes-table"

    def __init__(self, labels: np.ndarray) -> None:
        self._labels = np.asarray(labels, dtype=np.int64)
        self.class_names = tuple(str(c) for c in np.unique(self._labels))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def __len__(self) -> int:
        return len(self._labels)

    def images(self, indices) -> np.ndarray:
        return _row_images(np.asarray(indices))

    def labels(self, indices) -> np.ndarray:
        return self._labels[np.asarray(indices, dtype=np.int64)]


def consecutive_classes(factors: np.ndarray) -> np.ndarray:
    """Each factor column renumbered to classes 0..C-1 in sorted order, (N, K) int64."""
    f = np.asarray(factors)
    return np.stack([np.unique(f[:, k], return_inverse=True)[1].reshape(-1) for k in range(f.shape[1])], axis=1)


def covers_full_grid(factors: np.ndarray) -> tuple[bool, str]:
    """Whether the rows hold every combination of factor classes, and a sentence saying so."""
    classes = consecutive_classes(factors)
    sizes = [int(c.max()) + 1 for c in classes.T]
    cells = math.prod(sizes)
    if cells > len(classes):
        return False, f"{len(classes)} rows cannot cover the {cells} combinations of factor classes {sizes}"
    present = len(np.unique(classes, axis=0))
    if present < cells:
        return False, f"the rows hold {present} of the {cells} combinations of factor classes {sizes}"
    return True, f"the rows cover the full factorial grid {sizes}"
