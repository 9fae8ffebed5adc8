"""The glue between a trained adapter and a metric: one evaluation stage's rows.

A metric is a function of a dataset and an encode (or sample) function
(:mod:`bench.metrics`); this module picks the function the metric's declared ``uses`` and
the evaluation's parameters ask for — the mean encoder, the stochastic one
(``representation = "sampled"``), a time sweep (``encode_t``), a named sampling protocol
(``sampler`` for FID), each latent unit reduced to its first principal component for a
method with multi-dimensional units — and turns the outcome into tidy rows: an unmet
requirement is a ``skipped`` row with the reason, an exception a ``failed`` row.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from bench.adapter import NotGenerativeError
from bench import registry, stages as stage_graph
from bench.data import base as data_base
from bench.metrics import MetricUnavailableError
from bench.metrics.probe import TimedEncoder
from bench.metrics.representation import fit_unit_reducer
from bench.results import FAILED, OK, SKIPPED, make_row

_CONTRACTS = {"factors": "FactorDataset", "labels": "LabelledDataset", "attributes": "AttributeDataset"}

#: images whose codes fit the per-unit PCA of a ``latent_units`` method (all when the dataset is smaller)
UNIT_FIT_SAMPLES = 10_000


def evaluate(name: str, params: dict[str, Any], adapter, dataset, seed: int, base: dict) -> list[dict]:
    """Run one metric; an unmet requirement is a skipped row, a failure a failed row."""
    entry = registry.metrics().get(name)
    base = {**base, "metric_version": stage_graph.metric_version(name)}
    requires, uses, capability = entry.meta.get("requires"), entry.meta.get("uses", "encode"), entry.meta.get("capability")
    if requires and not isinstance(dataset, getattr(data_base, _CONTRACTS[requires])):
        return [make_row(base, name, float("nan"), SKIPPED, f"dataset {dataset.name!r} has no {requires}", params)]
    if capability and capability not in adapter.capabilities:
        return [make_row(base, name, float("nan"), SKIPPED, f"method does not declare {capability!r}", params)]
    call_params = dict(params)
    if uses == "encode_t":  # a time sweep: encode(x, t=...) where the code depends on t
        fn = TimedEncoder(adapter.encode, "time_conditioned" in adapter.capabilities)
    else:
        fn = getattr(adapter, uses)
    protocol = call_params.get("sampler", "model") if uses == "sample" else "model"
    # a sampling protocol names an iterative (diffusion) sampler; a method that samples in one decoder
    # pass (the autoencoder family) has a single way to sample, which every protocol then means
    if protocol != "model" and hasattr(adapter, "using_sampler"):
        fn = protocol_sampler(adapter, protocol)
    if call_params.pop("representation", "mean") == "sampled":
        if "stochastic_encode" not in adapter.capabilities:
            return [make_row(base, name, float("nan"), SKIPPED, "sampled codes need a stochastic encoder", params)]
        fn = sampled_encoder(adapter, seed)
    start = time.perf_counter()
    try:
        if uses == "encode" and "latent_units" in adapter.capabilities:
            fn = unit_encoder(fn, adapter, dataset, seed)
        values = entry.load()(dataset, fn, np.random.RandomState(seed), **call_params)
    except (MetricUnavailableError, NotGenerativeError) as exc:  # NotGenerativeError: nothing to sample codes from
        return [make_row(base, name, float("nan"), SKIPPED, str(exc), params, time.perf_counter() - start)]
    except Exception as exc:
        return [make_row(base, name, float("nan"), FAILED, f"{type(exc).__name__}: {exc}", params,
                         time.perf_counter() - start)]
    seconds = time.perf_counter() - start
    wanted = entry.meta.get("outputs", tuple(values))
    return [make_row(base, key, float(values[key]), OK, None, params, seconds) for key in wanted if key in values]


def evaluate_group(name: str, params: dict[str, Any], models: list, dataset, bases: list[dict]) -> list[dict]:
    """Run a metric that scores the seeds of one setting against each other (UDR): a row per seed."""
    entry = registry.metrics().get(name)
    start = time.perf_counter()
    values = entry.load()(dataset, models, np.random.RandomState(0), **params)
    seconds = time.perf_counter() - start
    return [make_row(b, key, float(values[key][i]), OK, None, params, seconds)
            for i, b in enumerate(bases) for key in entry.meta.get("outputs", tuple(values)) if key in values]


def unit_encoder(encode, adapter, dataset, seed: int, limit: int = UNIT_FIT_SAMPLES, chunk: int = 1000):
    """``encode`` with each latent unit reduced to its first principal component (DisDiff's protocol).

    The PCA of every unit is fitted on the codes of ``limit`` dataset images drawn with the
    evaluation's seed (DisDiff fits it on the whole dataset), then applied to every code the
    metric asks for (:mod:`bench.metrics.representation`).
    """
    unit_dim = int(adapter.latent_unit_dim)
    units = adapter.code_dim // unit_dim
    n = min(limit, len(dataset))
    idx = np.sort(np.random.RandomState(seed).choice(len(dataset), size=n, replace=False))
    codes = np.concatenate([np.asarray(encode(dataset.images(idx[i:i + chunk]))) for i in range(0, n, chunk)])
    reducer = fit_unit_reducer(codes.reshape(n, units, unit_dim))
    return lambda x: reducer.transform(np.asarray(encode(x)).reshape(len(x), units, unit_dim)).astype(np.float32)


def protocol_sampler(adapter, protocol: str):
    """``adapter.sample`` with the named sampling protocol (FID's ``sampler``)."""

    def sample(n: int, *, seed: int = 0):
        with adapter.using_sampler(protocol):
            return adapter.sample(n, seed=seed)

    return sample


def sampled_encoder(adapter, seed: int):
    """``encode`` drawing z ~ q(z|x) with fresh, reproducible noise on every call."""
    calls = itertools.count()
    return lambda x: adapter.encode(x, stochastic=True, seed=seed * 1_000_003 + next(calls))
