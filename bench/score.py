"""``bench score CODES.npz``: score a representation computed anywhere.

The file is a NumPy ``.npz`` archive (``np.savez``) with

* ``codes`` — float (N, D), required, finite;
* ``factors`` — integer class indices (N, K) of ground-truth factors, optional, with an
  optional ``factor_names`` (K strings);
* ``attributes`` — binary 0/1 (N, A), optional, with optional ``attribute_names``;
* ``labels`` — integer class labels (N,), optional.

What is scored (names as in the results table):

* **factors** → ``mig``, ``sap``, ``dci_*``, ``modularity``, ``explicitness``, ``irs`` (and
  ``betavae``, ``factorvae`` when the rows cover the full factorial grid). When every
  combination of factor classes is present, the table is wrapped in
  :class:`TableFactorDataset`, a factor dataset whose "images" are row numbers and whose
  ``encode`` looks the codes up, and the suite draws its samples from it exactly as
  disentanglement_lib draws them through a representation function (so the numbers equal
  those of the registered metrics with the same seed). Otherwise the rows are split at
  random into a training table (``num_train`` rows, 10,000 by default) and a test table
  (``num_test``, 5,000), or 2:1 when there are fewer rows, and the table metrics are
  computed on them; BetaVAE and FactorVAE then cannot be computed (they need observations
  with one factor held fixed) and are reported as unavailable.
* **codes** alone → ``gaussian_tc``, ``mutual_info`` (on ``num_train`` random rows).
* **attributes** → ``tad``, ``tad_attributes``, ``auroc``; **labels** → ``latent_accuracy``
  (the registered metrics run on the table, drawing their rows as they draw items).

Every metric group starts from ``np.random.RandomState(seed)``, as in ``bench run``, so a
metric's value does not depend on which others are selected. Factor class indices with
gaps (e.g. classes {0, 2}) are renumbered consecutively (the metrics treat classes as labels).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bench.data.base import AttributeDataset, FactorDataset, LabelledDataset
from bench.metrics.sampling import as_random_state
from bench.registry import did_you_mean

#: every output of ``bench score``, in the order it prints them
OUTPUT_NAMES: tuple[str, ...] = (
    "betavae", "factorvae", "mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
    "modularity", "explicitness", "irs", "gaussian_tc", "mutual_info", "tad", "tad_attributes", "auroc",
    "latent_accuracy",
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
}
SAMPLING_GROUPS = ("betavae", "factorvae")
_GROUP_OF = {out: group for group, (outs, _) in GROUPS.items() for out in outs}
_KEYS = ("codes", "factors", "factor_names", "attributes", "attribute_names", "labels")


class CodesFileError(ValueError):
    """A codes file that cannot be scored; the message names the file, the key and the fix."""


# -- loading and validation -------------------------------------------------------------------


def load_codes_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a codes ``.npz`` file (see the module docstring for the keys).

    Returns:
        ``{"codes": float64 (N, D), "factors": int64 (N, K), "factor_names": list[str],
        "attributes": int64 (N, A), "attribute_names": list[str], "labels": int64 (N,),
        "source": str}`` with only the keys present in the file (plus ``source``).

    Raises:
        FileNotFoundError: no such file.
        CodesFileError: not an ``.npz`` archive, or a key is missing, unknown or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such codes file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CodesFileError(f"{path}: not a NumPy .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CodesFileError(f"{path}: holds a single array; expected an .npz archive of named arrays (np.savez(path, codes=...))")
    with archive:
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # object arrays need pickle, which is refused
                raise CodesFileError(f"{path}: key {key!r} cannot be read without pickle ({exc}); store plain arrays") from None
    return validate_codes(arrays, str(path))


def validate_codes(arrays: Mapping[str, Any], source: str = "codes") -> dict[str, Any]:
    """Validate named arrays as a codes table; ``source`` (a file name) prefixes every error."""
    unknown = [k for k in arrays if k not in _KEYS]
    if unknown:
        key = unknown[0]
        raise CodesFileError(f"{source}: unknown key {key!r}{did_you_mean(key, _KEYS)}; expected keys: {', '.join(_KEYS)}")
    if "codes" not in arrays:
        raise CodesFileError(f"{source}: missing key 'codes' (float array N x D); keys present: {sorted(arrays)}")
    out: dict[str, Any] = {"source": source}

    codes = np.asarray(arrays["codes"])
    if codes.dtype.kind != "f":
        raise CodesFileError(f"{source}: key 'codes' must be a float array, got dtype {codes.dtype} (use .astype(np.float32))")
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise CodesFileError(f"{source}: key 'codes' must have shape (N, D) with N >= 2 and D >= 1, got {codes.shape}")
    bad = ~np.isfinite(codes)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CodesFileError(
            f"{source}: key 'codes' has {int(bad.sum())} NaN or infinite values (first at row {row}, column {col})"
        )
    n = codes.shape[0]
    out["codes"] = codes.astype(np.float64)

    if "factors" in arrays:
        factors = _int_array(arrays["factors"], "factors", source, ndim=2, n=n, what="class indices (N x K)")
        if (factors < 0).any():
            raise CodesFileError(f"{source}: key 'factors' must be class indices >= 0, found {int(factors.min())}")
        out["factors"] = factors
    if "attributes" in arrays:
        attributes = np.asarray(arrays["attributes"])
        if attributes.dtype.kind not in "biuf" or attributes.ndim != 2 or attributes.shape[0] != n or attributes.shape[1] < 1:
            raise CodesFileError(
                f"{source}: key 'attributes' must be a binary (N x A) array with N = {n} rows like 'codes', "
                f"got dtype {attributes.dtype}, shape {attributes.shape}"
            )
        values = np.unique(attributes)
        if not np.isin(values, (0, 1)).all():
            raise CodesFileError(
                f"{source}: key 'attributes' must hold only 0 and 1, found {values[~np.isin(values, (0, 1))][:5].tolist()}"
                " (CelebA's list_attr_celeba.txt uses -1/1: store (attributes > 0))"
            )
        out["attributes"] = attributes.astype(np.int64)
    if "labels" in arrays:
        out["labels"] = _int_array(arrays["labels"], "labels", source, ndim=1, n=n, what="class labels (N,)")
    for names_key, data_key in (("factor_names", "factors"), ("attribute_names", "attributes")):
        if names_key in arrays:
            names = np.asarray(arrays[names_key])
            if data_key not in out:
                raise CodesFileError(f"{source}: key {names_key!r} given without {data_key!r}")
            width = out[data_key].shape[1]
            if names.dtype.kind not in "US" or names.shape != (width,):
                raise CodesFileError(
                    f"{source}: key {names_key!r} must be {width} strings (one per column of {data_key!r}), "
                    f"got dtype {names.dtype}, shape {names.shape}"
                )
            out[names_key] = [str(s) for s in names]
    return out


def _int_array(value: Any, key: str, source: str, *, ndim: int, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        hint = " (map values to classes with np.unique(column, return_inverse=True))" if arr.dtype.kind == "f" else ""
        raise CodesFileError(f"{source}: key {key!r} must be integer {what}, got dtype {arr.dtype}{hint}")
    if arr.ndim != ndim or arr.shape[0] != n or (ndim == 2 and arr.shape[1] < 1):
        raise CodesFileError(f"{source}: key {key!r} must be {what} with N = {n} rows like 'codes', got shape {arr.shape}")
    return arr.astype(np.int64)


# -- the table as datasets --------------------------------------------------------------------


def lookup_encoder(codes: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``encode`` for the table datasets: "images" (n, 1, 1, 1) of row numbers -> codes (n, D)."""
    table = np.asarray(codes, dtype=np.float64)

    def encode(images: np.ndarray) -> np.ndarray:
        return table[np.asarray(images).reshape(len(images)).astype(np.int64)]

    return encode


def _row_images(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 1, 1, 1)


class TableFactorDataset(FactorDataset):
    """The rows of a codes table that covers the full factorial grid, as a factor dataset.

    Its "images" are the row numbers (float64, shape (n, 1, 1, 1)), to be encoded by
    :func:`lookup_encoder`. A grid cell held by several rows yields one of them chosen
    uniformly with the sampling ``random_state`` (an extra draw only in that case).
    """

    name = "codes-table"

    def __init__(self, factors: np.ndarray, factor_names: Sequence[str] | None = None) -> None:
        classes = consecutive_classes(factors)
        self.factor_sizes = tuple(int(c.max()) + 1 for c in classes.T)
        self.factor_names = tuple(factor_names) if factor_names else tuple(f"factor_{k}" for k in range(len(self.factor_sizes)))
        cells = classes @ self._strides()
        order = np.argsort(cells, kind="stable")
        counts = np.bincount(cells, minlength=len(self))
        if (counts == 0).any():
            raise ValueError(f"the factors cover {int((counts > 0).sum())} of {len(self)} grid cells, not the full grid")
        self._rows = order  # rows sorted by grid cell
        self._first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._counts = counts

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def images(self, indices) -> np.ndarray:
        return _row_images(self._rows[self._first[np.asarray(indices, dtype=np.int64)]])

    def sample_observations_from_factors(self, factors: np.ndarray, random_state=None) -> np.ndarray:
        cells = self.index_of(factors)
        counts = self._counts[cells]
        offset = np.zeros(len(cells), dtype=np.int64)
        if (counts > 1).any():
            offset = (as_random_state(random_state).random_sample(len(cells)) * counts).astype(np.int64)
        return _row_images(self._rows[self._first[cells] + offset])


class TableAttributeDataset(AttributeDataset):
    """The rows of a codes table with binary attributes; "images" are row numbers."""

    name = "codes-table"

    def __init__(self, attributes: np.ndarray, attribute_names: Sequence[str] | None = None) -> None:
        self._attributes = np.asarray(attributes, dtype=np.int64)
        self.attribute_names = tuple(attribute_names or ())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def __len__(self) -> int:
        return len(self._attributes)

    def images(self, indices) -> np.ndarray:
        return _row_images(np.asarray(indices))

    def attributes(self, indices) -> np.ndarray:
        return self._attributes[np.asarray(indices, dtype=np.int64)]


class TableLabelledDataset(LabelledDataset):
    """The rows of a codes table with class labels; "images" are row numbers."""

    name = "codes-table"

    def __init__(self, labels: np.ndarray) -> None:
        self._labels = np.asarray(labels, dtype=np.int64)
        self.class_names = tuple(str(c) for c in np.unique(self._labels))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def __len__(self) -> int:
        return len(self._labels)

    def images(self, indices) -> np.ndarray:
        return _row_images(np.asarray(indices))

    def labels(self, indices) -> np.ndarray:
        return self._labels[np.asarray(indices, dtype=np.int64)]


def consecutive_classes(factors: np.ndarray) -> np.ndarray:
    """Each factor column renumbered to classes 0..C-1 in sorted order, (N, K) int64."""
    f = np.asarray(factors)
    return np.stack([np.unique(f[:, k], return_inverse=True)[1].reshape(-1) for k in range(f.shape[1])], axis=1)


def covers_full_grid(factors: np.ndarray) -> tuple[bool, str]:
    """Whether the rows hold every combination of factor classes, and a sentence saying so."""
    classes = consecutive_classes(factors)
    sizes = [int(c.max()) + 1 for c in classes.T]
    cells = math.prod(sizes)
    if cells > len(classes):
        return False, f"{len(classes)} rows cannot cover the {cells} combinations of factor classes {sizes}"
    present = len(np.unique(classes, axis=0))
    if present < cells:
        return False, f"the rows hold {present} of the {cells} combinations of factor classes {sizes}"
    return True, f"the rows cover the full factorial grid {sizes}"


# -- scoring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The metric groups to compute, the outputs to report and why others are left out."""

    groups: tuple[str, ...]
    outputs: tuple[str, ...]
    unavailable: dict[str, str]


def plan_metrics(data: Mapping[str, Any], metrics: Sequence[str] | None = None) -> Plan:
    """Resolve ``metrics`` (output names like ``dci_completeness`` or group names like ``dci``;
    ``None``: everything the table allows) against the keys present in ``data``.

    Raises:
        ValueError: an unknown name, or a requested metric the table cannot give.
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
                choices = list(OUTPUT_NAMES) + list(GROUPS)
                raise ValueError(f"unknown metric {name!r}{did_you_mean(name, choices)}; choose from {', '.join(OUTPUT_NAMES)}")
        explicit = True
    outputs, unavailable = [], {}
    for out in dict.fromkeys(wanted):
        why = reason(_GROUP_OF[out])
        if why is None:
            outputs.append(out)
        elif explicit:
            raise ValueError(f"{out} cannot be computed: {why}")
        else:
            unavailable[out] = why
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

    factor_groups = [g for g in plan.groups if GROUPS[g][1] == "factors" or g == "unsupervised"]
    if factor_groups and "factors" in data:
        results.update(_factor_metrics(data, factor_groups, seed, params, num_train, num_test, batch_size, n_jobs))
    elif "unsupervised" in factor_groups:
        from bench.metrics.unsupervised import unsupervised_from_codes

        rows = np.random.RandomState(seed).choice(len(codes), size=min(num_train, len(codes)), replace=False)
        results.update(unsupervised_from_codes(codes[rows], **params.get("unsupervised", {})))

    encode = lookup_encoder(codes)
    if "attributes" in data:
        from bench.metrics.attributes import auroc, tad

        table = TableAttributeDataset(data["attributes"], data.get("attribute_names"))
        if "tad" in plan.groups:
            results.update(tad(table, encode, np.random.RandomState(seed), **params.get("tad", {})))
        if "auroc" in plan.groups:
            results.update(auroc(table, encode, np.random.RandomState(seed), **{"n_jobs": n_jobs, **params.get("auroc", {})}))
    if "latent_accuracy" in plan.groups:
        from bench.metrics.attributes import latent_accuracy

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
    from bench.metrics import suite

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
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("codes", type=Path, help="the .npz file: codes (N x D) and any of factors, attributes, labels")
    p.add_argument("--metrics", default=None, help=f"comma-separated names (default: all the file allows): {', '.join(OUTPUT_NAMES)}")
    p.add_argument("--seed", type=int, default=0, help="random state of every metric (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object {metric: value} on stdout")
    p.add_argument("--param", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric option, as in bench.toml's metric_params (repeatable), e.g. "
                        "--param tad.variant=infodiffusion --param factorvae.num_train=500; "
                        "VALUE is read as a TOML value (a bare word is a string)")
    return p


def parse_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["tad.variant=infodiffusion", ...]`` → ``{"tad": {"variant": "infodiffusion"}}``, validated like bench.toml."""
    import tomllib

    from bench.config import ConfigError, check_metric_params

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        metric, dot, key = name.strip().partition(".")
        if not sep or not dot or not metric or not key:
            raise ValueError(f"--param {item!r}: expected METRIC.KEY=VALUE, e.g. tad.variant=infodiffusion")
        if metric not in GROUPS:
            from bench.registry import did_you_mean

            raise ValueError(f"--param {item!r}: unknown metric {metric!r}{did_you_mean(metric, list(GROUPS))}; "
                             f"bench score computes: {', '.join(GROUPS)}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(metric, {})[key.strip()] = value
    for metric, params in out.items():
        try:
            check_metric_params(metric, params, f"--param {metric}")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``bench score``; returns the exit status (0). Errors raise ``ValueError`` /
    ``FileNotFoundError`` with a one-line message."""
    params = parse_params(getattr(args, "param", []))  # a bad option fails before the file is read
    data = load_codes_file(args.codes)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    plan = plan_metrics(data, metrics)
    for name, why in plan.unavailable.items():
        print(f"bench score: {name}: not computed: {why}", file=sys.stderr)
    if not plan.outputs:
        raise ValueError(f"{data['source']}: nothing to score")
    results = score_codes(data, metrics, args.seed, params=params)
    if args.json:
        print(json.dumps({k: (v if math.isfinite(v) else None) for k, v in results.items()}, allow_nan=False))
    else:
        width = max(len(k) for k in results)
        for name, value in results.items():
            print(f"{name:<{width}}  {value:.6g}")
    return 0
