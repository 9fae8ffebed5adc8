"""The images a model stage stores for the report: originals, reconstructions, samples, traversals
(with each traversed dimension's label: the factor it correlates with most).

Written once, right after training, into the model's ``figures.npz`` (float16); the report
and the site draw them without loading the model (:mod:`bench.report`, :mod:`bench.site`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bench.adapter import NotGenerativeError
from bench.atomic import writing
from bench.data.base import FactorDataset


def write_figures(adapter, dataset, folder: Path, seed: int, n: int = 8, steps: int = 7) -> None:
    """Store the images the report draws: originals, reconstructions, samples, traversals."""
    rng = np.random.default_rng(seed)
    originals = dataset.images(np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)))
    arrays: dict[str, np.ndarray] = {"originals": originals}
    if "sample" in adapter.capabilities:  # a representation-only method (SimCLR) has no samples panel
        try:
            arrays["samples"] = adapter.sample(n * 2, seed=seed)
        except NotGenerativeError:  # nothing to sample codes from (a released checkpoint without a latent DDPM)
            pass
    if "reconstruct" in adapter.capabilities:
        arrays["reconstructions"] = adapter.reconstruct(originals)
    if "decode" in adapter.capabilities:
        drawn = rng.choice(len(dataset), size=min(256, len(dataset)), replace=False)
        codes = adapter.encode(dataset.images(drawn))
        base_code = adapter.encode(originals[:1])[0]
        lo, hi = np.percentile(codes, 2, axis=0), np.percentile(codes, 98, axis=0)
        grid = np.repeat(base_code[None, None, :], codes.shape[1], axis=0).repeat(steps, axis=1)
        for d in range(codes.shape[1]):
            grid[d, :, d] = np.linspace(lo[d], hi[d], steps)
        images = adapter.decode(grid.reshape(-1, codes.shape[1]).astype(np.float32))
        arrays["traversal"] = images.reshape(codes.shape[1], steps, *images.shape[1:])
        arrays["traversal_labels"] = traversal_labels(codes, *_factors(dataset, drawn))
        if "latent_units" in adapter.capabilities:
            arrays["unit_swap"] = unit_swaps(adapter, originals, steps - 1)
    if hasattr(adapter, "extra_figures"):  # method-specific panels (EncDiff's cross-attention maps)
        arrays.update(adapter.extra_figures(originals))
    tmp = folder / "figures.tmp.npz"
    halves = {k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    with writing(folder / "figures.npz", tmp, sum(a.nbytes for a in halves.values())):
        np.savez_compressed(tmp, **halves)
        tmp.replace(folder / "figures.npz")


def _factors(dataset, indices: np.ndarray) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """(the ground-truth factors of ``indices``, their names); (None, ()) for a dataset without factors
    (labelled or attribute datasets: Fashion-MNIST, CIFAR-10, CelebA)."""
    if not isinstance(dataset, FactorDataset):
        return None, ()
    return np.asarray(dataset.factors(indices), dtype=np.float64), tuple(dataset.factor_names)


def traversal_labels(codes: np.ndarray, factors: np.ndarray | None, names: tuple[str, ...]) -> np.ndarray:
    """One label per code dimension: ``z3 · shape |r| 0.82`` names the factor whose values correlate most with
    the dimension over the drawn images (absolute Pearson r; a constant column correlates with nothing);
    ``z3`` alone without factors."""
    labels = [f"z{d}" for d in range(codes.shape[1])]
    if factors is None or factors.ndim != 2 or factors.shape[1] != len(names) or len(codes) < 3:
        return np.array(labels)
    c = codes - codes.mean(0)
    f = factors - factors.mean(0)
    denom = np.sqrt((c**2).sum(0))[:, None] * np.sqrt((f**2).sum(0))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.abs(c.T @ f) / denom
    r = np.nan_to_num(r, nan=0.0)
    for d in range(codes.shape[1]):
        k = int(np.argmax(r[d]))
        if r[d, k] > 0:
            labels[d] += f" · {names[k]} |r| {r[d, k]:.2f}"
    return np.array(labels)


def read_figures(path: Path) -> dict[str, np.ndarray] | None:
    """The panels of a model's ``figures.npz``; None (and one line naming the file) when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except Exception as exc:  # a damaged archive: BadZipFile, zlib.error, EOFError, ValueError ...
        print(f"bench: {path} cannot be read ({type(exc).__name__}: {exc}); its figures are left out "
              "(`bench verify` moves the stage aside, the next run redoes it)", file=sys.stderr)
        return None


def unit_swaps(adapter, originals: np.ndarray, k: int) -> np.ndarray:
    """(units, 1 + k, C, H, W): row c decodes image A's code with unit c taken from images B_1 … B_k.

    Column 0 is A's own code decoded; DisDiff's swapped-concept figure (``plot_swapped_concepts``).
    """
    unit_dim = int(adapter.latent_unit_dim)
    codes = adapter.encode(originals[: k + 1])
    units = codes.shape[1] // unit_dim
    a, others = codes[0].reshape(units, unit_dim), codes[1:].reshape(len(codes) - 1, units, unit_dim)
    grid = np.repeat(a[None, None], units, axis=0).repeat(1 + len(others), axis=1)  # (units, 1 + k, units, d)
    for c in range(units):
        grid[c, 1:, c] = others[:, c]
    images = adapter.decode(grid.reshape(-1, units * unit_dim).astype(np.float32))
    return images.reshape(units, 1 + len(others), *images.shape[1:])
