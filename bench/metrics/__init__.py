"""Metrics: one module per metric family, pure functions of arrays plus a random state.

The runner calls every registered metric as ``f(dataset, fn, random_state, **params)``
and expects ``dict[str, float]`` back; each key is a metric name in the results table.
``meta`` on the registration line says what ``fn`` is and what the dataset must offer:

* ``uses``: the adapter method passed as ``fn`` — ``"encode"`` (images (n, C, H, W) in
  [0, 1] → codes (n, D)), ``"sample"`` (n → images) or ``"reconstruct"`` (images → images);
* ``requires``: the dataset contract needed — ``"factors"`` (a
  :class:`~bench.data.base.FactorDataset`), ``"labels"`` (:class:`~bench.data.base.LabelledDataset`),
  ``"attributes"`` (:class:`~bench.data.base.AttributeDataset`) or ``None`` (any dataset);
* ``outputs``: the keys written into the results table (others returned are dropped);
* ``capability`` (optional): an adapter capability that must be declared, e.g. ``"reconstruct"``.

A metric whose requirement is not met is recorded as ``status=skipped`` with the reason.
The pure array functions (``*_from_codes``) live beside the registered wrappers so that
`bench score` can score a representation computed anywhere.
This module only holds registration lines; the implementations are imported lazily.
"""

from bench.registry import METRICS

METRICS.register(
    "factorvae",
    "bench.metrics.factorvae:factor_vae_score",
    "FactorVAE score (Kim & Mnih 2018), disentanglement_lib definition",
    uses="encode",
    requires="factors",
    outputs=("factorvae",),
)
METRICS.register(
    "dci",
    "bench.metrics.dci:dci",
    "DCI disentanglement/completeness/informativeness (Eastwood & Williams 2018), GBT importances",
    uses="encode",
    requires="factors",
    outputs=("dci_disentanglement", "dci_completeness", "dci_informativeness"),
)
