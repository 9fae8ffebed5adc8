"""The proof that our networks are the authors': each family's equivalence check, one process each, in one run.

Each check builds the authors' networks from a checkout of their code (``git archive`` of a fetched
mirror, never copied into the project), gives them random weights, saves them in the authors'
checkpoint format, converts the file with the converters a grid's ``pretrained`` stages use
(:mod:`bench.released`) and compares outputs on the same inputs, printing the largest difference per
output and the parameter counts beside the reference's:

* ``benchmarks/encdiff_equivalence.py`` — LDM's VQ-f4 first stage and EncDiff's UNet and Encoder4
  (SelenaGeRuiqi/EncDiff 596a29d);
* ``benchmarks/disdiff_latent_equivalence.py`` — latent DisDiff: the frozen LDM UNet (our ``ldm``
  component), the shift decoder, the part embedding and Encoder4 (ThomasMrY/DisDiff);
* ``benchmarks/reference_equivalence_pdae_diffae.py`` — PDAE's CelebA-64 DPM, encoder, gradient
  estimator and latent DDPM (ckczzj/PDAE) and DiffAE's autoencoders and latent DDPM (phizaz/diffae).

The families run in separate processes because both repositories ship a top-level package named
``ldm``. Exit status: the number of checks that failed (a count that differs, or a relative difference
above 1e-4; the target is 1e-5).

Run: ``python benchmarks/reference_equivalence.py [--threads 2]`` (references: the mirrors under
``/work/.mirror`` or ``$BENCH_REFERENCE_ENCDIFF`` / ``$BENCH_REFERENCE_DISDIFF``; PDAE's and DiffAE's as that
script's ``--help`` says).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: script, and whether it takes ``--threads``
CHECKS = (("encdiff_equivalence.py", True), ("disdiff_latent_equivalence.py", True),
          ("reference_equivalence_pdae_diffae.py", False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    failed = 0
    for script, threads in CHECKS:
        print(f"==== {script}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *(["--threads", str(args.threads)] if threads else [])])
        failed += result.returncode != 0
    print(f"==== {len(CHECKS) - failed} of {len(CHECKS)} families equal to the authors' networks")
    return failed


if __name__ == "__main__":
    sys.exit(main())
