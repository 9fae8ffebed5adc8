"""Seconds of one DCI factor's gradient-boosted fit grown by 1, 2, ... threads (the trees are identical).

    python benchmarks/dci_threads.py [--rows 10000] [--classes 40] [--stages 20] [--threads 1,2] [--rounds 2]

:func:`bench.metrics.gbt_exact.fit_gbt` grows the groups of trees of a stage in ``threads``
threads; DCI gives a fit more than one only where cores are left over after one per concurrent
fit (:func:`bench.metrics.dci.threads_per_factor`). The codes: 10 dimensions, 7 of them noisy
linear mixtures of dSprites-like factors (3, 6, 40, 32, 32 classes) and 3 pure noise; the
fitted factor is the one with ``--classes`` classes. Run it alone: each thread wants a core.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.metrics.gbt_exact import fit_gbt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="training rows (DCI's study default: 10,000)")
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--stages", type=int, default=20, help="boosting stages (DCI: 100; the cost is linear)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    sizes = (3, 6, args.classes, 32, 32)
    factors = np.stack([rng.integers(0, s, args.rows) for s in sizes], axis=1)
    codes = (factors / (np.array(sizes) - 1)) @ rng.normal(size=(5, 10)) + 0.05 * rng.normal(size=(args.rows, 10))
    codes[:, 7:] = rng.normal(size=(args.rows, 3))
    trees = args.stages * args.classes
    print(f"{args.rows} rows, {args.classes} classes, {args.stages} stages ({trees} trees), {os.cpu_count()} CPUs")
    first = None
    for round_ in range(args.rounds):
        for threads in (int(t) for t in args.threads.split(",")):
            wall, cpu = time.perf_counter(), time.process_time()
            model, importance = fit_gbt(codes, factors[:, 2], seed=0, n_stages=args.stages, threads=threads)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            first = first or (model["train_raw"], importance)
            same = np.array_equal(first[0], model["train_raw"]) and np.array_equal(first[1], importance)
            print(f"  round {round_ + 1}, {threads} thread(s): {wall:6.2f} s wall, {cpu:6.2f} CPU-s, "
                  f"{1000 * wall / trees:5.2f} ms per tree, identical to the first fit: {same}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
