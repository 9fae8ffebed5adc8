"""Training throughput of the autoencoder family: images/s of ``fit`` at a preset.

Usage::

    python benchmarks/vae_throughput.py --method beta-vae --preset paper --steps 500 \
        --dataset dsprites-procedural [--device cuda]

Prints steps, wall seconds, images/s and where the time goes (rendering the batch vs the
optimisation step), so a GPU run shows whether training is input-bound. Not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench import registry
from bench.adapter import resolve_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="beta-vae")
    p.add_argument("--preset", default="paper")
    p.add_argument("--dataset", default="dsprites-procedural")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    device = resolve_device(args.device)
    data = registry.datasets().create(args.dataset)
    cls = registry.methods().load(args.method)
    params = {**cls.presets[args.preset], "steps": args.steps, "log_every": max(args.steps, 1)}
    adapter = cls(**params)
    batch = adapter.batch_size

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(50):
        data.images(rng.integers(0, len(data), size=batch))
    render = (time.perf_counter() - start) / 50

    adapter.fit(data, seed=0, device=device)  # warm-up (allocator, cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    adapter.fit(data, seed=1, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in adapter.encoder_.parameters()) + sum(p.numel() for p in adapter.decoder_.parameters())
    print(f"method={args.method} preset={args.preset} dataset={args.dataset} device={device} "
          f"batch={batch} params={n_params / 1e6:.2f}M")
    print(f"steps={args.steps} wall={seconds:.2f}s images/s={args.steps * batch / seconds:,.0f}")
    print(f"batch rendering: {render * 1e3:.1f} ms/step ({render * args.steps / seconds:.0%} of the wall time)")


if __name__ == "__main__":
    main()
