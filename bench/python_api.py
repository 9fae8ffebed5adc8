"""Evaluate any model from Python in one call: ``bench.evaluate(model, dataset=..., metrics=[...])``.

No adapter, no profile, no dump of codes: ``model`` is any object with
``encode(images) -> codes`` (images float32 in [0, 1], shaped (N, C, H, W); codes (N, D)),
and optionally ``sample(n, *, seed)``, ``reconstruct(images)`` and ``decode(codes)``. The
metrics are the grid's (:mod:`bench.metrics`), called through the same glue
(:func:`bench.evaluation.evaluate`), so the rows — columns, statuses, skipped reasons,
metric versions — are those ``bench run`` writes to ``results.csv``. The metrics read the
images they need from the dataset themselves: a 737,280-image factorial grid is never
encoded whole unless a metric asks for every image.

What the model can do is read from its ``capabilities`` when it has them (every adapter
does), else from the methods it has: ``sample``, ``reconstruct``, ``decode``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from bench import registry, stages as stage_graph
from bench.config import ConfigError, check_metric_params
from bench.evaluation import evaluate as evaluate_metric
from bench.results import git_commit, package_versions, rows_frame

_OPTIONAL = ("sample", "reconstruct", "decode")


class _Model:
    """A plain object seen through the adapter contract the evaluation glue reads."""

    def __init__(self, model: Any) -> None:
        if not callable(getattr(model, "encode", None)):
            raise TypeError(f"bench.evaluate: {type(model).__name__} has no encode(images) method; a model needs at "
                            "least encode(images) -> codes (N, D)")
        self._model = model
        declared = getattr(model, "capabilities", None)
        self.capabilities = frozenset(declared) if declared is not None else frozenset(
            name for name in _OPTIONAL if callable(getattr(model, name, None)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _metric_list(metrics: Iterable[str] | Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    if metrics is None:
        names = [m for m in registry.metrics().names() if not stage_graph.is_seed_metric(m)]
        return {m: {} for m in names}
    if isinstance(metrics, str):
        metrics = [metrics]
    items = metrics.items() if isinstance(metrics, Mapping) else ((m, {}) for m in metrics)
    out: dict[str, dict[str, Any]] = {}
    for name, params in items:
        registry.metrics().get(name)  # an unknown name: UnknownNameError with a suggestion
        if stage_graph.is_seed_metric(name):
            raise ValueError(f"bench.evaluate: metric {name!r} scores several seeds of one setting against each other; "
                             "it needs a grid (bench run), not one model")
        if not isinstance(params, Mapping):
            raise TypeError(f"bench.evaluate: the parameters of metric {name!r} must be a mapping, got {params!r}")
        out[name] = dict(params)
    return out


def evaluate(model: Any, dataset: Any = "dsprites-procedural-32",
             metrics: Iterable[str] | Mapping[str, Mapping[str, Any]] | None = None, *, seed: int = 0,
             name: str | None = None) -> pd.DataFrame:
    """Score ``model`` on ``dataset`` (a registered name or a dataset object) with ``metrics``.

    ``metrics``: names, or ``{name: {parameter: value}}``; None = every metric that scores one
    model (a metric the dataset or the model cannot serve gives a ``skipped`` row with the
    reason). Names and parameters are checked before any data is read. ``seed`` seeds every
    metric's sampling, as an evaluation stage's seed does. Returns the tidy rows (one per
    metric output) as a DataFrame with ``results.csv``'s columns; ``method`` is ``name`` or
    the model's class name.
    """
    wanted = _metric_list(metrics)
    for metric, params in wanted.items():
        try:
            check_metric_params(metric, params, f"bench.evaluate: metric {metric!r}")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    wrapped = _Model(model)
    data = registry.datasets().create(dataset) if isinstance(dataset, str) else dataset
    dataset_name = getattr(data, "name", type(data).__name__)
    base = {"profile": "bench.evaluate", "role": "model", "stage": "eval", "method": name or type(model).__name__,
            "dataset": dataset_name, "dataset_version": str(getattr(data, "version", "")), "seed": seed,
            "n_seeds_planned": 1, "packages": package_versions(), "git_commit": git_commit()}
    rows = [row for metric, params in wanted.items() for row in evaluate_metric(metric, params, wrapped, data, seed, base)]
    return rows_frame(rows)
