"""Wall time of the whole factor-metric suite at study defaults, ours and (optionally) the reference's.

    python benchmarks/metric_suite_speed.py [/path/to/disentanglement_lib] [--seed 0] [--n-jobs -1]

The table: the ``mixed`` representation of ``equivalence_disentanglement_lib.py`` — a
10,000-row code table (10 codes) over a 4 x 5 x 5 x 10 x 10 factor grid (5 factors),
looked up by item index. Metrics at the ``unsupervised_study_v1`` defaults: BetaVAE,
FactorVAE, MIG, SAP, DCI, Modularity/Explicitness, IRS, unsupervised (TC / MI).

Printed: seconds per metric when each registered metric runs alone (``--skip-alone`` to
skip); the seconds of :func:`bench.metrics.suite.factor_suite` (shared tables, one pool of
classifier fits), which is the number to compare, and of the suite with the opt-in
``hist_gbt`` DCI importance; with ``--dci-breakdown``, where DCI's time goes (one
gradient-boosted model per factor, fitted serially); and, given a disentanglement_lib
checkout, the reference's seconds per metric, the ratio and the largest difference
between the two sets of values (``--rounds R`` re-times both alternately and reports the
median ratio, which is steadier on a shared machine).

Timings on a shared machine are noisy: the script prints the load average beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from bench.metrics.betavae import betavae_score
from bench.metrics.dci import dci, factor_fit
from bench.metrics.factorvae import factor_vae_score
from bench.metrics.irs import irs
from bench.metrics.mig import mig
from bench.metrics.modularity import modularity_explicitness
from bench.metrics.sampling import generate_factor_code
from bench.metrics.sap import sap
from bench.metrics.suite import factor_suite
from bench.metrics.unsupervised import unsupervised


def _load_equivalence_module():
    path = Path(__file__).with_name("equivalence_disentanglement_lib.py")
    spec = importlib.util.spec_from_file_location("equivalence_disentanglement_lib", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _cpu_snapshot() -> dict[int, float]:
    """CPU seconds (user + system) of this process and of its live child processes, by pid.

    The child processes are joblib's workers; their time is read from ``/proc`` (Linux). On
    other systems only this process is counted.
    """
    own = os.times()
    snapshot = {os.getpid(): own.user + own.system}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields[1] is the parent pid
            snapshot[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return snapshot


def _cpu_since(before: dict[int, float]) -> float:
    """CPU seconds used by this process and its children since ``before``."""
    after = _cpu_snapshot()
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def _timed(run) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process and its workers, result) of ``run()``."""
    before, start = _cpu_snapshot(), time.perf_counter()
    result = run()
    return time.perf_counter() - start, _cpu_since(before), result


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", nargs="?", help="path to a disentanglement_lib checkout (optional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--skip-alone", action="store_true", help="skip the metric-by-metric timing of ours")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with a reference: time ours and the reference alternately this many times")
    parser.add_argument("--dci-breakdown", action="store_true",
                        help="also time DCI's gradient-boosted models one factor at a time")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    eq = _load_equivalence_module()
    data = eq.TableFactorData()
    table = eq.representations(data)["mixed"]
    encode = lambda images: table[images.reshape(len(images)).astype(np.int64)]  # noqa: E731
    seed, n_jobs = args.seed, args.n_jobs
    print(f"table {table.shape}, factor sizes {data.factor_sizes}, {os.cpu_count()} CPUs, n_jobs={n_jobs}, {_load()}")

    if not args.skip_alone:
        alone = {
            "betavae": lambda: betavae_score(data, encode, seed),
            "factorvae": lambda: factor_vae_score(data, encode, seed),
            "mig": lambda: mig(data, encode, seed),
            "sap": lambda: sap(data, encode, seed, n_jobs=n_jobs),
            "dci": lambda: dci(data, encode, seed, n_jobs=n_jobs),
            "modularity_explicitness": lambda: modularity_explicitness(data, encode, seed, n_jobs=n_jobs),
            "irs": lambda: irs(data, encode, seed),
            "unsupervised": lambda: unsupervised(data, encode, seed),
        }
        print("\nours, each registered metric alone (seconds):")
        total = 0.0
        for name, run in alone.items():
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            total += seconds
            print(f"  {name:<26}{seconds:8.2f}")
        print(f"  {'sum':<26}{total:8.2f}   ({_load()})")

    suite_seconds, suite_cpu, ours = _timed(lambda: factor_suite(data, encode, seed, n_jobs=n_jobs))
    print(f"\nours, factor_suite (shared tables, one pool of fits): {suite_seconds:.2f} s wall, "
          f"{suite_cpu:.2f} CPU-s   ({_load()})")
    fast_seconds, fast_cpu, fast = _timed(
        lambda: factor_suite(data, encode, seed, n_jobs=n_jobs, params={"dci": {"importance": "hist_gbt"}}))
    moved = max(abs(fast[k] - ours[k]) for k in ("dci_disentanglement", "dci_completeness", "dci_informativeness"))
    print(f"ours, factor_suite with the opt-in DCI importance 'hist_gbt' (a deviation): {fast_seconds:.2f} s wall, "
          f"{fast_cpu:.2f} CPU-s; "
          f"DCI scores moved by at most {moved:.3f}   ({_load()})")

    if args.dci_breakdown:
        print("\nwhere DCI's time goes: one gradient-boosted model per factor, fitted serially "
              "(NumPy default vs scikit-learn's class)")
        rs = np.random.RandomState(seed)
        x_train, y_train = generate_factor_code(data, encode, 10000, rs, 16)
        x_test, y_test = generate_factor_code(data, encode, 5000, rs, 16)
        for k, size in enumerate(data.factor_sizes):
            trees = 100 * (size if size > 2 else 1)
            for importance in ("gbt", "sklearn_gbt"):
                start = time.perf_counter()
                factor_fit(importance)(x_train, y_train[:, k], x_test, y_test[:, k], 0)
                seconds = time.perf_counter() - start
                print(f"  factor {k} ({size:>2} classes, {trees:>4} trees) {importance:<12}: {seconds:6.2f} s  "
                      f"({1000 * seconds / trees:.1f} ms per tree)   ({_load()})")

    if args.reference:
        ref, reason = eq.load_reference(args.reference)
        if ref is None:
            print(f"\nreference SKIPPED: {reason}")
            return 0
        calls = eq.reference_calls(ref, dict(num_train=10000, num_test=5000, num_eval=5000))

        def run_reference(verbose: bool) -> tuple[float, float, dict]:
            scores, total, total_cpu = {}, 0.0, 0.0
            for name, call in calls.items():
                np.random.seed(seed)
                seconds, cpu, scores[name] = _timed(lambda: call(data, eq.lookup(table), np.random.RandomState(seed)))
                total, total_cpu = total + seconds, total_cpu + cpu
                if verbose:
                    print(f"  {name:<26}{seconds:8.2f}{cpu:10.2f}")
            return total, total_cpu, scores

        print("\nreference (disentanglement_lib), each metric:  wall s    CPU-s")
        ref_total, ref_cpu, ref_scores = run_reference(verbose=True)
        print(f"  {'sum':<26}{ref_total:8.2f}{ref_cpu:10.2f}   ({_load()})")
        worst = max(abs(float(ref_scores[m][rk]) - float(ours[k])) for k, m, rk in eq.PAIRS)
        ratios = [ref_total / suite_seconds]
        print(f"\nround 1: reference {ref_total:.2f} s / factor_suite {suite_seconds:.2f} s = {ratios[0]:.2f}x wall; "
              f"CPU-s {ref_cpu:.1f} vs {suite_cpu:.1f}")
        for round_ in range(2, args.rounds + 1):  # alternate the two, so both see similar load
            ours_seconds, ours_cpu, _ = _timed(lambda: factor_suite(data, encode, seed, n_jobs=n_jobs))
            ref_seconds, ref_cpu_r, _ = run_reference(verbose=False)
            ratios.append(ref_seconds / ours_seconds)
            print(f"round {round_}: reference {ref_seconds:.2f} s / factor_suite {ours_seconds:.2f} s "
                  f"= {ratios[-1]:.2f}x wall; CPU-s {ref_cpu_r:.1f} vs {ours_cpu:.1f}   ({_load()})")
        print(f"\nspeed-up of factor_suite over the reference: median {np.median(ratios):.2f}x wall over "
              f"{len(ratios)} round(s); largest |value difference| {worst:.2e}")
        print(f"speed-up with the opt-in 'hist_gbt' DCI importance (round 1): {ref_total / fast_seconds:.2f}x wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
