"""``bench score CODES.npz``: score a representation computed anywhere.

The file is a NumPy ``.npz`` archive of ``codes`` (N, D) and any of ``factors``,
``attributes``, ``labels`` (format and validation: :mod:`bench.codes_file`).

What is scored (names as in the results table):

* **factors** → ``mig``, ``sap``, ``dci_*``, ``modularity``, ``explicitness``, ``irs`` (and
  ``betavae``, ``factorvae`` when the rows cover the full factorial grid). When every
  combination of factor classes is present, the table is wrapped in
  :class:`~bench.codes_table.TableFactorDataset`, a factor dataset whose "images" are row
  numbers and whose ``encode`` looks the codes up, and the suite draws its samples from it
  exactly as disentanglement_lib draws them through a representation function (so the
  numbers equal those of the registered metrics with the same seed). Otherwise the rows are
  split at random into a training table (``num_train`` rows, 10,000 by default) and a test
  table (``num_test``, 5,000), or 2:1 when there are fewer rows, and the table metrics are
  computed on them; BetaVAE and FactorVAE then cannot be computed (they need observations
  with one factor held fixed) and are reported as unavailable.
* **codes** alone → ``gaussian_tc``, ``mutual_info`` (on ``num_train`` random rows).
* **attributes** → ``tad``, ``tad_attributes``, ``auroc``; **labels** → ``latent_accuracy``
  (the registered metrics run on the table, drawing their rows as they draw items).

Every metric group starts from ``np.random.RandomState(seed)``, as in ``bench run``, so a
metric's value does not depend on which others are selected. Factor class indices with
gaps (e.g. classes {0, 2}) are renumbered consecutively (the metrics treat classes as labels;
:func:`~bench.codes_table.consecutive_classes`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bench.codes_file import load_codes_file, validate_codes
from bench.codes_table import (
    TableAttributeDataset,
    TableFactorDataset,
    TableLabelledDataset,
    consecutive_classes,
    covers_full_grid,
    lookup_encoder,
)
from bench.registry import did_you_mean

#: every output of ``bench score``, in the order it prints them
OUTPUT_NAMES: tuple[str, ...] = (
    "betavae", "factorvae", "mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
    "modularity", "explicitness", "irs", "gaussian_tc", "mutual_info", "tad", "tad_attributes", "auroc",
    "latent_accuracy",
)
#: outputs computed only when named (``--metrics infomec,dci_es``): DCI-ES fits 12 forests per factor
OPT_IN_OUTPUTS: tuple[str, ...] = (
    "infom", "infoe", "infoc", "dci_es_explicitness", "dci_es_size", "dci_es_disentanglement",
    "dci_es_completeness", "dci_es_informativeness",
)
#: metric group -> (outputs, required key)
GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    "betavae": (("betavae",), "factors"),
    "factorvae": (("factorvae",), "factors"),
    "mig": (("mig",), "factors"),
    "sap": (("sap",), "factors"),
    "dci": (("dci_disentanglement", "dci_completeness", "dci_informativeness"), "factors"),
    "modularity_explicitness": (("modularity", "explicitness"), "factors"),
    "irs": (("irs",), "factors"),
    "unsupervised": (("gaussian_tc", "mutual_info"), "codes"),
    "tad": (("tad", "tad_attributes"), "attributes"),
    "auroc": (("auroc",), "attributes"),
    "latent_accuracy": (("latent_accuracy",), "labels"),
    "infomec": (("infom", "infoe", "infoc"), "factors"),
    "dci_es": (("dci_es_explicitness", "dci_es_size", "dci_es_disentanglement", "dci_es_completeness",
                "dci_es_informativeness"), "factors"),
}
SAMPLING_GROUPS = ("betavae", "factorvae")
_GROUP_OF = {out: group for group, (outs, _) in GROUPS.items() for out in outs}


@dataclass(frozen=True)
class Plan:
    """The metric groups to compute, the outputs to report and why others are left out."""

    groups: tuple[str, ...]
    outputs: tuple[str, ...]
    unavailable: dict[str, str]


def plan_metrics(data: Mapping[str, Any], metrics: Sequence[str] | None = None) -> Plan:
    """Resolve ``metrics`` (output names like ``dci_completeness`` or group names like ``dci``;
    ``None``: everything the table allows) against the keys present in ``data``. A requested
    metric the table cannot give goes to ``unavailable`` with its reason; the others are computed.

    Raises:
        ValueError: an unknown name, or no requested metric the table can give.
    """
    full_grid, grid_reason = covers_full_grid(data["factors"]) if "factors" in data else (False, "")

    def reason(group: str) -> str | None:
        required = GROUPS[group][1]
        if required not in data:
            return f"needs key {required!r}, which {data.get('source', 'the table')} does not have"
        if group in SAMPLING_GROUPS and not full_grid:
            return f"needs observations with a factor held fixed, i.e. the full factorial grid; {grid_reason}"
        return None

    if metrics is None:
        wanted = list(OUTPUT_NAMES)
        explicit = False
    else:
        wanted = []
        for name in metrics:
            if name in GROUPS:
                wanted += GROUPS[name][0]
            elif name in _GROUP_OF:
                wanted.append(name)
            else:
                choices = list(OUTPUT_NAMES) + list(OPT_IN_OUTPUTS) + list(GROUPS)
                raise ValueError(f"unknown metric {name!r}{did_you_mean(name, choices)}; choose from {', '.join(OUTPUT_NAMES)}")
        explicit = True
    outputs, unavailable = [], {}
    for out in dict.fromkeys(wanted):
        why = reason(_GROUP_OF[out])
        if why is None:
            outputs.append(out)
        else:
            unavailable[out] = why
    if explicit and not outputs:  # every requested metric is impossible: nothing to report
        name, why = next(iter(unavailable.items()))
        raise ValueError(f"{name} cannot be computed: {why}")
    groups = tuple(dict.fromkeys(_GROUP_OF[o] for o in outputs))
    return Plan(groups, tuple(outputs), unavailable)


def score_codes(
    data: Mapping[str, Any],
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    n_jobs: int | None = -1,
    reasons: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Score a validated codes table (:func:`load_codes_file` or :func:`validate_codes`).

    Args:
        data: the table.
        metrics: output or group names (see :data:`OUTPUT_NAMES`, :data:`GROUPS`); ``None``
            computes everything the table allows.
        seed: every metric group starts from ``np.random.RandomState(seed)``.
        params: per-group options passed to the metric, e.g. ``{"tad": {"variant":
            "infodiffusion"}, "betavae": {"num_train": 1000}}``.
        num_train, num_test, batch_size: the factor suite's shared sample sizes.
        n_jobs: joblib workers for classifier fits (results do not depend on it).
        reasons: when given, a factor metric that cannot be computed on this table (MIG with a
            factor that takes one value) gives NaN and its reason here, and the others their
            values; when ``None``, its ``ValueError`` is raised.
        progress: when given, called with a line before each metric group is computed
            (``"[2/4] dci"``); the factor groups then run one at a time (the same values).

    Returns:
        ``{output name: value}`` for the selected outputs, in :data:`OUTPUT_NAMES` order.
    """
    if "source" not in data:
        data = validate_codes(data)
    plan = plan_metrics(data, metrics)
    params = {k: dict(v) for k, v in (params or {}).items()}
    stray = [k for k in params if k not in plan.groups]
    if stray:
        raise ValueError(f"params given for {stray}, which are not computed (computing {list(plan.groups)})")
    codes = data["codes"]
    results: dict[str, float] = {}
    order = list(plan.groups)

    def say(group: str) -> None:
        if progress is not None:
            progress(f"[{order.index(group) + 1}/{len(order)}] {group}")

    factor_groups = [g for g in plan.groups if (GROUPS[g][1] == "factors" or g == "unsupervised") and g != "infomec"]
    if "infomec" in plan.groups:
        say("infomec")
        # on the table's own rows: resampling a table repeats rows, and repeated codes (more copies than the
        # estimator's 10 neighbours) drive the nearest-neighbour mutual information to 0
        from bench.metrics.infomec import infomec_from_codes  # local: keeps sklearn out of `bench` start-up

        results.update(infomec_from_codes(codes, consecutive_classes(data["factors"]), seed=seed,
                                          **params.get("infomec", {})))
    if factor_groups and "factors" in data:
        together = progress is None  # with progress lines: one group at a time, a line each
        if together:
            try:
                results.update(_factor_metrics(data, factor_groups, seed, params, num_train, num_test, batch_size, n_jobs))
            except ValueError:
                if reasons is None:
                    raise
                together = False
        if not together:
            for group in factor_groups:  # one group at a time (each starts from the seed: the same values)
                say(group)
                try:
                    results.update(_factor_metrics(data, [group], seed, params, num_train, num_test, batch_size, n_jobs))
                except ValueError as exc:
                    if reasons is None:
                        raise
                    for out in GROUPS[group][0]:
                        results[out], reasons[out] = float("nan"), str(exc)
    elif "unsupervised" in factor_groups:
        say("unsupervised")
        from bench.metrics.unsupervised import unsupervised_from_codes  # local: keeps scipy out of `bench` start-up

        rows = np.random.RandomState(seed).choice(len(codes), size=min(num_train, len(codes)), replace=False)
        results.update(unsupervised_from_codes(codes[rows], **params.get("unsupervised", {})))

    encode = lookup_encoder(codes)
    if "attributes" in data:
        from bench.metrics.attributes import auroc, tad  # local: keeps torch, pandas, sklearn out of `bench` start-up

        table = TableAttributeDataset(data["attributes"], data.get("attribute_names"))
        if "tad" in plan.groups:
            say("tad")
            results.update(tad(table, encode, np.random.RandomState(seed), **params.get("tad", {})))
        if "auroc" in plan.groups:
            say("auroc")
            results.update(auroc(table, encode, np.random.RandomState(seed), **{"n_jobs": n_jobs, **params.get("auroc", {})}))
    if "latent_accuracy" in plan.groups:
        from bench.metrics.attributes import latent_accuracy  # local: keeps torch, pandas, sklearn out of start-up

        say("latent_accuracy")
        table = TableLabelledDataset(data["labels"])
        results.update(latent_accuracy(table, encode, np.random.RandomState(seed), **params.get("latent_accuracy", {})))
    return {name: float(results[name]) for name in plan.outputs}


def _factor_metrics(
    data: Mapping[str, Any],
    groups: list[str],
    seed: int,
    params: dict[str, dict[str, Any]],
    num_train: int,
    num_test: int,
    batch_size: int,
    n_jobs: int | None,
) -> dict[str, float]:
    """The factor suite on the table: sampled through the grid when it is complete, else on a
    random train/test split of the rows."""
    from bench.metrics import suite  # local: keeps pandas and sklearn out of `bench` start-up

    suite_params = {g: params[g] for g in groups if g in params}
    full_grid, _ = covers_full_grid(data["factors"])
    if full_grid:
        dataset = TableFactorDataset(data["factors"], data.get("factor_names"))
        return suite.factor_suite(
            dataset, lookup_encoder(data["codes"]), seed, metrics=groups, num_train=num_train, num_test=num_test,
            batch_size=batch_size, n_jobs=n_jobs, params=suite_params,
        )
    rs = np.random.RandomState(seed)
    n = len(data["codes"])
    order = rs.permutation(n)
    if n >= num_train + num_test:
        train, test = order[:num_train], order[num_train : num_train + num_test]
    else:
        cut = max(2, min(n - 2, round(2 * n / 3)))
        train, test = order[:cut], order[cut:]
    codes, factors = data["codes"], consecutive_classes(data["factors"])
    return suite.table_suite(
        codes[train], factors[train], codes[test], factors[test], rs, metrics=groups, n_jobs=n_jobs, params=suite_params
    )


# -- command line -------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench score CODES.npz [--metrics a,b] [--seed N] [--json]``."""
    p = subparsers.add_parser(
        "score",
        help="score a representation computed anywhere (codes + factors/attributes/labels in an .npz file)",
        description=plain_text(__doc__),  # the whole explanation, its paragraphs and bullets as written
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("codes", type=Path, help="the .npz file: codes (N x D) and any of factors, attributes, labels")
    p.add_argument("--metrics", default=None, help=f"comma-separated names (default: all the file allows): {', '.join(OUTPUT_NAMES)}")
    p.add_argument("--seed", type=int, default=0, help="random state of every metric (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object {metric: value} on stdout")
    p.add_argument("--param", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric option, as in bench.toml's metric_params (repeatable), e.g. "
                        "--param tad.variant=infodiffusion --param factorvae.num_train=500; "
                        "VALUE is read as a TOML value (a bare word is a string)")
    p.add_argument("--num-train", type=int, default=10000, metavar="N",
                   help="rows of the factor metrics' training table (default: 10000; 2/3 of a smaller table)")
    p.add_argument("--num-test", type=int, default=5000, metavar="N",
                   help="rows of the factor metrics' test table (default: 5000; the rest of a smaller table)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress lines on stderr (by default one plain line per metric group as it starts)")
    return p


_INLINE_RST = re.compile(
    r"``(?P<literal>[^`]+)``"                                   # ``x`` (first: its text is kept as it is)
    r"|:[a-z]+(?::[a-z]+)?:`(?P<tilde>~)?(?P<target>[^`]+)`"   # :func:`x`, :class:`~a.b.C` (~: last part)
    r"|\*\*(?P<strong>[^*\n]+)\*\*"                             # **x**
    r"|(?<![\w*])\*(?P<em>[^*\s][^*\n]*?)\*(?![\w*])"            # *x* (not a "* " bullet)
)


def plain_text(rst: str) -> str:
    """``rst`` without its inline markup (literals, roles, emphasis), for ``--help``."""
    def plain(m: re.Match) -> str:
        if m["target"] is not None:
            return m["target"].rpartition(".")[2] if m["tilde"] else m["target"]
        return m["literal"] or m["strong"] or m["em"]

    return _INLINE_RST.sub(plain, rst)


def parse_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["tad.variant=infodiffusion", ...]`` → ``{"tad": {"variant": "infodiffusion"}}``, validated like bench.toml."""
    # local: only --param needs TOML and the config checks; keeps `bench` start-up light
    import tomllib

    from bench.config import ConfigError, check_metric_params

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        metric, dot, key = name.strip().partition(".")
        if not sep or not dot or not metric or not key:
            raise ValueError(f"--param {item!r}: expected METRIC.KEY=VALUE, e.g. tad.variant=infodiffusion")
        if metric not in GROUPS:
            raise ValueError(f"--param {item!r}: unknown metric {metric!r}{did_you_mean(metric, list(GROUPS))}; "
                             f"bench score computes: {', '.join(GROUPS)}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(metric, {})[key.strip()] = value
    settable = _settable_params()
    for metric, params in out.items():
        try:
            check_metric_params(metric, params, f"--param {metric}")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        accepted = settable.get(metric)
        for key in params:
            if key == "representation":
                raise ValueError(f"--param {metric}.representation: a codes table has one representation (the codes "
                                 "in the file); sampled codes need the model's encoder (bench run)")
            if accepted is not None and key not in accepted:
                shared = " (the tables' sizes are --num-train / --num-test)" if key in ("num_train", "num_test") else ""
                raise ValueError(f"--param {metric}.{key}: bench score cannot set {key!r} for {metric} on a codes "
                                 f"table{shared}; it accepts: {', '.join(accepted) or 'no options'}")
    return out


def _settable_params() -> dict[str, tuple[str, ...]]:
    """What ``--param`` can set per factor-metric group on a codes table (the suite's options; the tables'
    sizes are the command's own); the attribute and label metrics take their registered options."""
    from bench.metrics import suite  # local: only --param needs the tables; keeps sklearn out of `bench` start-up

    return {**suite.TABLE_METRIC_PARAMS, **suite.SAMPLING_METRIC_PARAMS, **suite.OPT_IN_TABLE_METRIC_PARAMS}


def _progress_line(text: str) -> None:
    """A plain progress line on stderr (stdout stays the results: ``--json`` output is parsed)."""
    print(f"bench score: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``bench score``; returns the exit status (0). Errors raise ``ValueError`` /
    ``FileNotFoundError`` with a one-line message."""
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed {args.seed}: out of range; expected an integer in [0, 2**32) (numpy's random state)")
    params = parse_params(getattr(args, "param", []))  # a bad option fails before the file is read
    num_train, num_test = getattr(args, "num_train", 10000), getattr(args, "num_test", 5000)
    if num_train < 2 or num_test < 1:
        raise ValueError(f"--num-train {num_train} / --num-test {num_test}: expected at least 2 training and 1 test row")
    data = load_codes_file(args.codes)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    plan = plan_metrics(data, metrics)
    for name, why in plan.unavailable.items():
        print(f"bench score: {name}: not computed: {why}", file=sys.stderr)
    if not plan.outputs:
        raise ValueError(f"{data['source']}: nothing to score")
    reasons: dict[str, str] = {}
    show = None if getattr(args, "no_progress", False) else _progress_line
    if show is not None:
        show(f"{data['source']}: {len(data['codes']):,} rows x {data['codes'].shape[1]} code dimensions; "
             f"{len(plan.groups)} metric group(s): {', '.join(plan.groups)}")
    start = time.perf_counter()
    results = score_codes(data, metrics, args.seed, params=params, reasons=reasons, num_train=num_train,
                          num_test=num_test, progress=show)
    if show is not None:
        show(f"done in {time.perf_counter() - start:.1f} s")
    if args.json:  # found while computing (the plan's were said above): said once; the table says it inline
        for name, why in reasons.items():
            print(f"bench score: {name}: not computed: {why}", file=sys.stderr)
    if metrics is not None:  # a requested metric the table cannot give keeps its row, with the reason
        for name, why in plan.unavailable.items():
            results[name], reasons[name] = float("nan"), why
    if args.json:
        out: dict[str, Any] = {k: (v if math.isfinite(v) else None) for k, v in results.items()}
        if reasons:  # why each null is null, for a script
            out["reasons"] = {k: reasons[k] for k in results if k in reasons}
        print(json.dumps(out, allow_nan=False))
    else:
        width = max(len(k) for k in results)
        for name, value in results.items():
            print(f"{name:<{width}}  {value:.6g}" + (f"  (not computed: {reasons[name]})" if name in reasons else ""))
    return 0
