"""Shared fixtures: a tiny factor dataset that renders in microseconds, for fast tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.base import FactorDataset

torch.set_num_threads(2)


class TinyBars(FactorDataset):
    """16×16 images: a bright bar whose row and column are the two factors (4 × 4 grid)."""

    name = "tiny-bars"
    factor_names = ("row", "col")
    factor_sizes = (4, 4)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 16, 16)

    def images(self, indices) -> np.ndarray:
        f = self.factors(np.asarray(indices))
        out = np.zeros((len(f), 1, 16, 16), np.float32)
        for i, (r, c) in enumerate(f):
            out[i, 0, 4 * r:4 * r + 4, :] = 0.5
            out[i, 0, :, 4 * c:4 * c + 4] += 0.5
        return out


@pytest.fixture
def tiny_data() -> TinyBars:
    return TinyBars()
