"""Where a grid's stages run. Every executor runs the same :class:`~bench.worker.Worker` on a stage;
they differ only in where it runs:

* :mod:`bench.executors.inline` — in ``bench run``'s own process, one stage after another;
* :mod:`bench.executors.local` — ``--jobs N`` worker processes on this machine (one GPU each
  where there are GPUs, else a share of the cores);
* :mod:`bench.executors.slurm` — submitit: job arrays on a Slurm cluster (``--executor slurm``),
  submitit's local pool (``local``) or in-process (``debug``).

The run's spec (:mod:`bench.executors.spec`) is what a worker process or an array task
reads to rebuild the plan and the run's context.

This package's ``__init__`` imports nothing: a local worker process pins its threads before
torch is imported (:func:`bench.executors.local.main`).
"""

EXECUTORS = ("inline", "slurm", "local", "debug")
