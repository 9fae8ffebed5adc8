"""Datasets: contracts in :mod:`bench.data.base`, loaders beside it.

This module only holds registration lines (no heavy imports), so `bench ls` stays fast.
Data cards (source, checksum, factors, licence) live in the top-level ``datasets/`` folder,
which deliberately holds no Python package (``import datasets`` must reach Hugging Face's).
"""

from bench.registry import DATASETS

DATASETS.register(
    "dsprites-procedural",
    "bench.data.dsprites:ProceduralDSprites",
    "procedural dSprites replica, 3x6x40x32x32 factors, 64x64 binary, no download",
    kwargs={"resolution": 64},
)
DATASETS.register(
    "dsprites-procedural-32",
    "bench.data.dsprites:ProceduralDSprites",
    "procedural dSprites replica downscaled to 32x32 (fast CPU runs)",
    kwargs={"resolution": 32},
)
