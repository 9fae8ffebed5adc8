"""Images/s delivered by :class:`bench.data.loader.DeviceBatches`, next to a training step's appetite.

Usage::

    python benchmarks/data_loader_speed.py [--device auto|cpu|cuda] [--batch-size 64] [--seconds 3]

For each dataset it prints how batches are made (resident uint8 array vs streamed from
``dataset.images``), the loader's images/s on its own, a β-VAE training step's images/s on
a fixed batch (``paper`` network widths; no data loading), and the two together in one
loop. Training is input-bound when the loader's rate is not well above the step's.

Datasets: ``fashion-mnist-32`` when its files are under the data root (else skipped),
``array-64`` — a synthetic uint8 array dataset of 50,000 RGB 64×64 images held like the
real file-backed ones (the Shapes3D/MPI3D/CelebA path), ``dsprites-procedural`` and
``shapes3d-procedural`` (rendered on demand, streamed). Timings on a shared machine are
noisy; repeat when it is idle. Not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench import registry
from bench.adapter import resolve_device
from bench.data.base import ImageDataset
from bench.data.cache import ArrayImages
from bench.data.files import DatasetFilesMissing
from bench.data.loader import DeviceBatches


class SyntheticArray(ArrayImages, ImageDataset):
    """``n`` random uint8 RGB images (seeded) in memory, served like the cached datasets."""

    name = "array-64"

    def __init__(self, n: int = 50_000, side: int = 64, seed: int = 0) -> None:
        self._pixels = np.random.default_rng(seed).integers(0, 256, size=(n, 3, side, side), dtype=np.uint8)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self._pixels.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._pixels)

    def pixels(self) -> np.ndarray:
        return self._pixels


def _rate(step, batch_size: int, seconds: float, device: torch.device, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            step()
        n += 10
        _sync(device)
    return n * batch_size / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _training_step(shape: tuple[int, int, int], device: torch.device, batch_size: int):
    """One β-VAE optimisation step (paper widths) as a closure taking a batch."""
    cls = registry.methods().load("beta-vae")
    model = cls(**cls.presets["paper"])
    model._build(shape)
    model.to(device)
    params = list(model.encoder_.parameters()) + list(model.decoder_.parameters())
    optimiser = torch.optim.Adam(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(batch_size, model.latent_dim, generator=generator).to(device)

    def step(x: torch.Tensor) -> None:
        loss = model._loss(x, noise, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)

    datasets: list[ImageDataset] = []
    try:
        datasets.append(registry.datasets().create("fashion-mnist-32"))
    except DatasetFilesMissing:
        print("fashion-mnist-32: files not under the data root, skipped")
    datasets.append(SyntheticArray())
    datasets.append(registry.datasets().create("dsprites-procedural"))
    datasets.append(registry.datasets().create("shapes3d-procedural"))

    print(f"device={device} batch={args.batch_size} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'dataset':<22} {'mode':<9} {'loader img/s':>13} {'step img/s':>11} {'together img/s':>15}")
    for ds in datasets:
        with DeviceBatches(ds, device, batch_size=args.batch_size, seed=0) as batches:
            # 50 warm-up batches: lazy one-off work (shapes3d-procedural ray-casts its 480 geometries once)
            loader = _rate(lambda: next(batches), args.batch_size, args.seconds, device, warmup=50)
            step = _training_step(ds.image_shape, device, args.batch_size)
            fixed = next(batches)
            alone = _rate(lambda: step(fixed), args.batch_size, args.seconds, device)
            together = _rate(lambda: step(next(batches)), args.batch_size, args.seconds, device)
            print(f"{ds.name:<22} {batches.mode:<9} {loader:>13,.0f} {alone:>11,.0f} {together:>15,.0f}")


if __name__ == "__main__":
    main()
