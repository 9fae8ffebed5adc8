"""Metrics: one module per metric family, pure functions of arrays plus a random state.

Two call shapes are registered (``meta["kind"]``):

* ``"sampling"``: ``f(dataset, encode, random_state, **params) -> dict[str, float]`` where
  ``dataset`` is a :class:`bench.data.base.FactorDataset` and ``encode`` maps float images
  (n, C, H, W) in [0, 1] to codes (n, D). Used for ground-truth factor metrics that draw
  their own observations (FactorVAE, BetaVAE, and the table-based ones through a sample).

Each returned key is a metric name as written into the results table.
This module only holds registration lines; the implementations are imported lazily.
"""

from bench.registry import METRICS

METRICS.register(
    "factorvae",
    "bench.metrics.factorvae:factor_vae_score",
    "FactorVAE score (Kim & Mnih 2018), disentanglement_lib definition",
    kind="sampling",
    outputs=("factorvae",),
)
METRICS.register(
    "dci",
    "bench.metrics.dci:dci",
    "DCI disentanglement/completeness/informativeness (Eastwood & Williams 2018), GBT importances",
    kind="sampling",
    outputs=("dci_disentanglement", "dci_completeness", "dci_informativeness"),
)
