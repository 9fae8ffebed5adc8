"""Dataset contracts.

Images are float32 in [0, 1], shape (N, C, H, W). A :class:`FactorDataset` is a full
factorial grid of ground-truth factors (the convention of dSprites, Shapes3D, MPI3D):
item ``i`` has the factor classes given by the mixed-radix digits of ``i`` in the order
of ``factor_sizes`` (first factor most significant), exactly as the official files are laid
out. The sampling methods follow disentanglement_lib's ``GroundTruthData`` interface
(``sample_factors``, ``sample_observations_from_factors``) because the BetaVAE and
FactorVAE scores are defined through it.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np


class ImageDataset(abc.ABC):
    """Base class: a finite, indexable set of images."""

    name: str = "dataset"
    version: str = "1"

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of items."""

    @abc.abstractmethod
    def images(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Images at ``indices`` as float32 (n, C, H, W) in [0, 1]."""

    def describe(self) -> dict:
        """A JSON-able summary written into result rows and `bench data verify`."""
        return {"name": self.name, "version": self.version, "len": len(self), "image_shape": list(self.image_shape)}


class FactorDataset(ImageDataset):
    """A dataset whose items are the full factorial grid of discrete factors."""

    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def factors_num_values(self) -> list[int]:
        """disentanglement_lib's name for ``factor_sizes``."""
        return list(self.factor_sizes)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes))

    # -- index <-> factor classes (mixed radix, first factor most significant) -------------
    def _strides(self) -> np.ndarray:
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    def factors(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Factor classes (n, K) int64 of the items at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.name}: index out of range [0, {len(self)}): {idx.min()}..{idx.max()}")
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return (idx[:, None] // self._strides()[None, :]) % sizes[None, :]

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        """Item indices (n,) of the given factor classes (n, K)."""
        f = np.asarray(factors, dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != self.num_factors:
            raise ValueError(f"{self.name}: factors must have shape (n, {self.num_factors}), got {f.shape}")
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        if (f < 0).any() or (f >= sizes[None, :]).any():
            raise ValueError(f"{self.name}: factor classes out of range for sizes {self.factor_sizes}")
        return f @ self._strides()

    # -- disentanglement_lib's GroundTruthData interface ---------------------------------
    def sample_factors(self, num: int, random_state: np.random.RandomState | np.random.Generator) -> np.ndarray:
        """Draw ``num`` factor vectors uniformly at random, (num, K) int64."""
        cols = [_randint(random_state, size, num) for size in self.factor_sizes]
        return np.stack(cols, axis=1).astype(np.int64)

    def sample_observations_from_factors(self, factors: np.ndarray, random_state=None) -> np.ndarray:
        """Images for the given factor classes (all factors are observed, so no randomness)."""
        return self.images(self.index_of(factors))

    def sample(self, num: int, random_state) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_with_fixed_factor(
        self, num: int, factor: int, random_state
    ) -> tuple[np.ndarray, np.ndarray]:
        """``num`` items sharing one random value of factor ``factor``; others uniform."""
        factors = self.sample_factors(num, random_state)
        factors[:, factor] = factors[0, factor]
        return factors, self.sample_observations_from_factors(factors, random_state)

    def describe(self) -> dict:
        d = super().describe()
        d["factor_names"] = list(self.factor_names)
        d["factor_sizes"] = list(self.factor_sizes)
        return d


def _randint(random_state, high: int, size: int) -> np.ndarray:
    """Uniform ints in [0, high) from either numpy random API."""
    if isinstance(random_state, np.random.Generator):
        return random_state.integers(0, high, size=size)
    return random_state.randint(high, size=size)


class LabelledDataset(ImageDataset):
    """A dataset with one integer class label per item (MNIST, Fashion-MNIST, CIFAR-10)."""

    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abc.abstractmethod
    def labels(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Class labels (n,) int64 of the items at ``indices``."""


class AttributeDataset(ImageDataset):
    """A dataset with binary attributes per item (CelebA's 40), for TAD and AUROC probes."""

    attribute_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def attributes(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Binary attributes (n, A) int64 in {0, 1} of the items at ``indices``."""
