"""Seconds of FID's Fréchet distance at 2,048 features: ours (symmetric eigendecompositions) vs pytorch-fid's sqrtm.

    python benchmarks/fid_distance_speed.py [--features 2048] [--rounds 2]

Statistics of two Gaussian feature sets (10,000 and 5,000 samples, correlated through a random
mixing matrix). pytorch-fid's recipe is ``scipy.linalg.sqrtm`` of ``sigma1 @ sigma2``;
:func:`bench.metrics.fid.frechet_distance` takes the same trace from the eigenvalues of
``sigma1^(1/2) sigma2 sigma1^(1/2)``. Printed: both times and the relative difference.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.linalg

from bench.metrics.fid import feature_statistics, frechet_distance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    mixing = 0.05 * rng.normal(size=(args.features, args.features)) + np.eye(args.features)
    mu1, sigma1 = feature_statistics(rng.normal(size=(10_000, args.features)) @ mixing)
    mu2, sigma2 = feature_statistics(rng.normal(size=(5_000, args.features)) @ mixing + 0.05)
    print(f"{args.features} features, {os.cpu_count()} CPUs")
    for round_ in range(args.rounds):
        start = time.perf_counter()
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
        diff = mu1 - mu2
        theirs = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
        sqrtm_s = time.perf_counter() - start
        start = time.perf_counter()
        ours = frechet_distance(mu1, sigma1, mu2, sigma2)
        ours_s = time.perf_counter() - start
        print(f"  round {round_ + 1}: pytorch-fid's sqrtm {sqrtm_s:6.2f} s, ours {ours_s:6.2f} s "
              f"({sqrtm_s / ours_s:.1f}x); FID {theirs:.6f} vs {ours:.6f}, relative difference "
              f"{abs(ours - theirs) / abs(theirs):.1e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
