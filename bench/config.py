"""bench.toml → validated, typed configuration, and the grid of cells it describes.

Layout::

    default_profile = "smoke"

    [profiles.smoke]
    description = "..."
    methods  = ["ae", "vae"]          # registered method names
    datasets = ["dsprites-procedural-32"]
    seeds    = [0, 1]
    preset   = "tiny"                  # every method's named preset
    presets  = { ae = "infodiffusion" }  # ... or another one for some methods
    metrics  = ["factorvae", "dci"]
    device   = "auto"                  # auto | cpu | cuda | cuda:N
    results  = "results"               # output folder, relative to bench.toml

    [profiles.smoke.overrides."*"]     # hyperparameters for every method
    steps = 1500
    [profiles.smoke.overrides.beta-vae]  # ... or for one method
    beta = 4.0
    [profiles.smoke.sweep.beta-vae]    # a grid axis: one cell per value
    beta = [1.0, 4.0, 8.0]
    [profiles.smoke.metric_params.factorvae]
    num_train = 1000
    representation = "sampled"         # score z ~ q(z|x) instead of the mean codes

Slurm resources (``bench run --executor slurm``), at the top level and/or per profile
(``[profiles.<name>.executor.slurm]`` overrides keys), with an ``evaluation`` sub-table for
evaluation and seed-group stages; see :data:`SLURM_KEYS` and the README::

    [executor.slurm]
    partition = "gpu"
    time = "12:00:00"                  # minutes, or Slurm's H:M:S / D-H:M:S
    gpus_per_task = 1
    [executor.slurm.evaluation]
    partition = "cpu"

A top-level ``data_root = "path"`` (relative to bench.toml) sets where downloaded datasets
live; the environment variable ``BENCH_DATA_ROOT`` is used when it is absent.

Everything is checked here, before any training: unknown keys, wrong types, unknown
method/dataset/metric/preset names and unknown hyperparameters all raise
:class:`ConfigError` naming the file, the key and a suggestion.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import registry
from bench.params import check_range, check_type, n_jobs
from bench.registry import did_you_mean


class ConfigError(ValueError):
    """A problem in bench.toml; the message names the file and the key."""


_PROFILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "description": str,
    "methods": list,
    "datasets": list,
    "seeds": list,
    "preset": str,
    "presets": dict,
    "metrics": list,
    "device": str,
    "results": str,
    "overrides": dict,
    "sweep": dict,
    "metric_params": dict,
    "executor": dict,
}
_TOP_KEYS = {"default_profile": str, "data_root": str, "profiles": dict, "executor": dict}
#: [executor.slurm] keys (top level, or per profile under [profiles.<name>.executor.slurm]); ``evaluation``
#: is a table of the same keys for evaluation and seed-group stages (e.g. a CPU partition for slow metrics)
SLURM_KEYS: dict[str, type | tuple[type, ...]] = {
    "partition": str, "account": str, "qos": str, "time": (str, int), "gpus_per_task": int, "cpus_per_task": int,
    "mem": str, "array_parallelism": int, "max_array_size": int, "signal_delay_s": int, "max_requeues": int, "sbatch": dict,
    "setup": list, "evaluation": dict,
}
SLURM_RANGES = {"gpus_per_task": ">= 0", "cpus_per_task": ">= 1", "array_parallelism": ">= 1", "max_array_size": ">= 1",
                "signal_delay_s": ">= 1", "max_requeues": ">= 0"}
#: which codes a code-based metric scores: mean codes, or codes sampled from q(z|x)
REPRESENTATIONS = ("mean", "sampled")


@dataclass(frozen=True)
class Cell:
    """One grid point: a method with full hyperparameters on a dataset with a seed, and its metrics.

    Its stages (the model, its components, one evaluation per metric) and their ids are
    made by :func:`bench.stages.plan`.
    """

    method: str
    dataset: str
    seed: int
    preset: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    n_seeds_planned: int = 1


@dataclass(frozen=True)
class Profile:
    name: str
    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    preset: str = "tiny"
    metrics: list[str] = field(default_factory=lambda: ["factorvae", "dci"])
    device: str = "auto"
    results: str = "results"
    description: str = ""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, dict[str, list]] = field(default_factory=dict)
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: method -> preset, for the methods that do not use ``preset``
    method_presets: dict[str, str] = field(default_factory=dict)
    #: validated [executor.slurm] settings (the top-level table under the profile's own)
    slurm: dict[str, Any] = field(default_factory=dict)

    def preset_of(self, method: str) -> str:
        """The named preset ``method`` starts from in this profile."""
        return self.method_presets.get(method, self.preset)

    def cells(self) -> list[Cell]:
        """The grid: methods × datasets × sweep values × seeds, in a stable order."""
        out = []
        for method in self.methods:
            cls = registry.methods().load(method)
            preset = self.preset_of(method)
            base = {**cls.presets[preset], **self.overrides.get("*", {}), **self.overrides.get(method, {})}
            axes = self.sweep.get(method, {})
            for combo in itertools.product(*axes.values()):
                params = cls.check_params({**base, **dict(zip(axes.keys(), combo))})
                for dataset in self.datasets:
                    for seed in self.seeds:
                        metrics = {m: copy.deepcopy(self.metric_params.get(m, {})) for m in self.metrics}
                        out.append(Cell(method, dataset, seed, preset, params, metrics, len(self.seeds)))
        return out


@dataclass(frozen=True)
class Config:
    path: Path
    default_profile: str
    profiles: dict[str, Profile]
    data_root: Path | None = None

    def profile(self, name: str | None = None) -> Profile:
        name = name or self.default_profile
        if name not in self.profiles:
            raise ConfigError(
                f"{self.path}: no profile {name!r}{did_you_mean(name, list(self.profiles))}; "
                f"defined: {', '.join(self.profiles)}"
            )
        return self.profiles[name]

    def results_dir(self, profile: Profile) -> Path:
        return (self.path.parent / profile.results).resolve()


def load_config(path: str | Path = "bench.toml", *, sets: list[str] | None = None, profile: str | None = None) -> Config:
    """Parse and validate ``path``; raise :class:`ConfigError` on the first problem.

    ``sets``: ``KEY=VALUE`` items (``bench run --set``), each a dotted path into the profile
    ``profile`` (default: the file's default profile) and a TOML value (a bare word is a
    string), applied before validation, so they are checked exactly as the file is.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found (expected a bench.toml; see README)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if not sets:
        return parse_config(raw, path)
    name = apply_sets(raw, sets, profile)
    try:
        return parse_config(raw, path)
    except ConfigError as exc:
        raise ConfigError(_blame_set(str(exc), sets, name, path)) from None


def _blame_set(message: str, sets: list[str], profile: str, path: Path) -> str:
    """An error about a key a ``--set`` item wrote names the item (the value is not in the file)."""
    plain = message.replace('"', "")
    for item in sets:
        key = item.partition("=")[0].strip().replace('"', "").replace("'", "")
        if f"profiles.{profile}.{key}" in plain or f"{profile}.{key}" in plain:
            rest = message[len(f"{path}: "):] if message.startswith(f"{path}: ") else message
            return f"--set {item!r} (profile {profile!r} of {path}): {rest}"
    return f"{message} (after --set {', '.join(repr(i) for i in sets)})"


def apply_sets(raw: dict[str, Any], sets: list[str], profile: str | None) -> str:
    """Merge ``--set KEY=VALUE`` items into ``raw['profiles'][profile]`` (see :func:`load_config`); returns
    the profile's name."""
    profiles = raw.get("profiles") or {}
    name = profile or raw.get("default_profile") or next(iter(profiles), None)
    if name not in profiles:
        raise ConfigError(f"--set: no profile {name!r} to set keys in{did_you_mean(str(name), list(profiles))}")
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, a dotted path into the profile, "
                              "e.g. --set overrides.vae.lr=1e-3 or --set 'overrides.\"*\".steps=100'")
        try:
            table = tomllib.loads(f"{key.strip()} = {value.strip()}")
        except tomllib.TOMLDecodeError:
            try:  # a bare word: a string
                table = tomllib.loads(f"{key.strip()} = {json.dumps(value.strip())}")
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"--set {item!r}: {key.strip()!r} is not a dotted key path ({exc})") from None
        _merge(profiles[name], table, f"profiles.{name}", item)
    return name


def _merge(target: dict[str, Any], new: dict[str, Any], where: str, item: str) -> None:
    for key, value in new.items():
        if isinstance(value, dict):
            sub = target.setdefault(key, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"--set {item!r}: {where}.{key} is a value ({sub!r}), not a table")
            _merge(sub, value, f"{where}.{key}", item)
        else:
            target[key] = value


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    _check_keys(raw, _TOP_KEYS, path, "")
    profiles_raw = raw.get("profiles")
    if not profiles_raw:
        raise ConfigError(f"{path}: no [profiles.<name>] table; at least one profile is required")
    top_slurm = _parse_executor(raw.get("executor", {}), path, "executor")
    profiles = {name: _parse_profile(name, body, path, top_slurm) for name, body in profiles_raw.items()}
    default = raw.get("default_profile", next(iter(profiles)))
    if default not in profiles:
        raise ConfigError(
            f"{path}: default_profile = {default!r} is not a profile{did_you_mean(default, list(profiles))}"
        )
    data_root = (path.parent / raw["data_root"]).resolve() if "data_root" in raw else None
    return Config(path, default, profiles, data_root)


def _parse_profile(name: str, body: Any, path: Path, top_slurm: dict[str, Any] | None = None) -> Profile:
    where = f"profiles.{name}"
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: {where} must be a table, got {type(body).__name__}")
    _check_keys(body, _PROFILE_KEYS, path, where + ".")
    for key in ("methods", "datasets", "seeds"):
        if key not in body:
            raise ConfigError(f"{path}: {where}.{key} is required")
    methods = _names(body["methods"], registry.methods(), path, f"{where}.methods")
    datasets = _names(body["datasets"], registry.datasets(), path, f"{where}.datasets")
    metrics = _names(body.get("metrics", ["factorvae", "dci"]), registry.metrics(), path, f"{where}.metrics")
    seeds = body["seeds"]
    if not isinstance(seeds, list) or not seeds or \
            not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds):
        raise ConfigError(f"{path}: {where}.seeds must be a non-empty list of integers in [0, 2**32) "
                          f"(numpy's seeds), got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: {where}.seeds has duplicates: {seeds!r}")
    preset = body.get("preset", "tiny")
    method_presets = body.get("presets", {})
    for m in method_presets:
        if m not in methods:
            raise ConfigError(f"{path}: {where}.presets.{m}: method {m!r} is not in {where}.methods {methods}")
        if not isinstance(method_presets[m], str):
            raise ConfigError(f"{path}: {where}.presets.{m} must be a preset name (a string), "
                              f"got {method_presets[m]!r}")
    for m in methods:
        cls = registry.methods().load(m)
        mpreset, key = (method_presets[m], f"presets.{m}") if m in method_presets else (preset, "preset")
        if mpreset not in cls.presets:
            raise ConfigError(
                f"{path}: {where}.{key} = {mpreset!r}: method {m!r} has no such preset{did_you_mean(mpreset, list(cls.presets))}; "
                f"it has {', '.join(cls.presets)}"
            )
    device = body.get("device", "auto")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ConfigError(f"{path}: {where}.device = {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")

    overrides = _method_tables(body.get("overrides", {}), methods, path, f"{where}.overrides", allow_star=True)
    sweep = _method_tables(body.get("sweep", {}), methods, path, f"{where}.sweep", allow_star=False)
    for m, axes in sweep.items():
        for key, values in axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: {where}.sweep.{m}.{key} must be a non-empty list of values, got {values!r}")
    # hyperparameter names and types, checked against each method's defaults
    for m in methods:
        cls = registry.methods().load(m)
        merged = {**overrides.get("*", {}), **overrides.get(m, {})}
        _check_overrides(cls, m, overrides, path, f"{where}.overrides")  # first: a sweep's check includes them
        for key, values in sweep.get(m, {}).items():
            for v in values:
                _check_params(cls, {**merged, key: v}, path, f"{where}.sweep.{m}.{key}", m)

    metric_params = body.get("metric_params", {})
    for metric, params in metric_params.items():
        mkey = f"{where}.metric_params.{metric}"
        if metric not in metrics:
            raise ConfigError(f"{path}: {mkey}: metric {metric!r} is not in {where}.metrics {metrics}")
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: {mkey} must be a table")
        check_metric_params(metric, params, f"{path}: {mkey}")
    return Profile(
        name=name, methods=methods, datasets=datasets, seeds=list(seeds), preset=preset, metrics=metrics,
        device=device, results=body.get("results", "results"), description=body.get("description", ""),
        overrides=overrides, sweep=sweep, metric_params=metric_params, method_presets=dict(method_presets),
        slurm={**(top_slurm or {}), **_parse_executor(body.get("executor", {}), path, f"{where}.executor")},
    )


def _parse_executor(table: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    """Validate an ``executor`` table (only ``slurm`` so far); durations become minutes."""
    _check_keys(table, {"slurm": dict}, path, where + ".")
    return _parse_slurm(table.get("slurm", {}), path, f"{where}.slurm")


def _parse_slurm(table: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    _check_keys(table, SLURM_KEYS, path, where + ".")
    out = dict(table)
    if "time" in out:
        out["time"] = parse_duration(out["time"], f"{path}: {where}.time")
    for key, spec in SLURM_RANGES.items():
        try:
            check_range(str(path), f"{where}.{key}", out.get(key), spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if "mem" in out and not re.fullmatch(r"\d+[KMGT]?", out["mem"]):
        raise ConfigError(f"{path}: {where}.mem = {out['mem']!r}; expected a Slurm size such as '16G' or '4000M'")
    if "setup" in out and not all(isinstance(x, str) for x in out["setup"]):
        raise ConfigError(f"{path}: {where}.setup must be a list of shell lines (strings), got {out['setup']!r}")
    if "evaluation" in out:
        if "evaluation" in out["evaluation"]:
            raise ConfigError(f"{path}: {where}.evaluation.evaluation: tables do not nest further")
        out["evaluation"] = _parse_slurm(out["evaluation"], path, f"{where}.evaluation")
    return out


def parse_duration(value: Any, where: str) -> int:
    """Slurm's time formats → minutes: an int, "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{where} = {value}; expected at least 1 minute")
        return value
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not m:
        raise ConfigError(f"{where} = {value!r} is not a duration; expected minutes (an integer) or "
                          "Slurm's 'HH:MM:SS' / 'D-HH:MM:SS' (e.g. '2:00:00', '1-12:00:00')")
    days, a, b, c = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    if days is not None:  # D-H[:M[:S]]
        seconds = int(days) * 86400 + a * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        seconds = a * 60 + int(b)
    else:  # M
        seconds = a * 60
    if seconds < 60:
        raise ConfigError(f"{where} = {value!r}; Slurm's smallest time limit is 1 minute")
    return -(-seconds // 60)


def _check_keys(table: dict[str, Any], schema: dict[str, Any], path: Path, prefix: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'{did_you_mean(key, list(schema))}; accepted: {', '.join(schema)}")
        expected = schema[key]
        if not isinstance(value, expected):
            raise ConfigError(
                f"{path}: {prefix}{key} must be a {getattr(expected, '__name__', expected)}, got {type(value).__name__} {value!r}"
            )


def _names(values: Any, reg: registry.Registry, path: Path, key: str) -> list[str]:
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{path}: {key} must be a non-empty list of names, got {values!r}")
    for i, v in enumerate(values):
        if v not in reg:
            raise ConfigError(
                f"{path}: {key}[{i}]: unknown {reg.kind} {v!r}{did_you_mean(v, reg.names())}; "
                f"`bench ls` lists them ({', '.join(reg.names())})"
            )
    if len(set(values)) != len(values):
        raise ConfigError(f"{path}: {key} has duplicates: {values!r}")
    return list(values)


def _method_tables(tables: Any, methods: list[str], path: Path, key: str, *, allow_star: bool) -> dict[str, dict]:
    out = {}
    for name, table in tables.items():
        if not (name in methods or (allow_star and name == "*")):
            hint = did_you_mean(name, methods)
            raise ConfigError(f"{path}: {key}.{name}: {name!r} is not a method of this profile{hint}; methods: {methods}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {key}.{name} must be a table of hyperparameters, got {type(table).__name__}")
        out[name] = dict(table)
    return out


def _check_params(cls: type, params: dict[str, Any], path: Path, key: str, method: str) -> None:
    try:
        cls.check_params(params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {key}: method {method!r}: {_without_class(exc, cls)}") from None


def _check_overrides(cls: type, method: str, overrides: dict[str, dict], path: Path, where: str) -> None:
    """Check the ``"*"`` and ``method`` override tables for ``method``; an error names the key it comes from.

    The message reads ``profiles.P.overrides."*".steps: method 'beta-vae', checking its overrides: ...``
    (the table the value is written in, and the registered name, not the adapter's class name).
    """
    merged = {**overrides.get("*", {}), **overrides.get(method, {})}
    try:
        cls.check_params(merged)
        return
    except (TypeError, ValueError) as exc:
        first = exc
    for key, value in merged.items():  # which key: each one alone over the defaults
        try:
            cls.check_params({key: value})
        except (TypeError, ValueError) as exc:
            table = method if key in overrides.get(method, {}) else '"*"'
            raise ConfigError(f"{path}: {where}.{table}.{key}: method {method!r}, checking its overrides: "
                              f"{_without_class(exc, cls)}") from None
    # only the combination fails: no single key to blame
    raise ConfigError(f"{path}: {where}: method {method!r}, checking its overrides: {_without_class(first, cls)}")


def _without_class(exc: Exception, cls: type) -> str:
    """The adapter's message without its class-name prefix (``BetaVAE: ...``); callers name the method."""
    text, prefix = str(exc), f"{cls.__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def check_metric_params(metric: str, params: dict[str, Any], where: str) -> None:
    """Names, types (from the metric's keyword defaults) and declared ``ranges`` of ``params``; raises ConfigError."""
    entry = registry.metrics().get(metric)
    defaults = _metric_param_defaults(metric)
    accepted = list(defaults) + (["representation"] if entry.meta.get("uses", "encode") == "encode" else [])
    ranges = entry.meta.get("ranges", {})
    for key, value in params.items():
        if key not in accepted:
            raise ConfigError(f"{where}.{key}: unknown parameter{did_you_mean(key, accepted)}; accepted: {', '.join(accepted)}")
        if key == "representation":
            if value not in REPRESENTATIONS:
                raise ConfigError(f"{where}.representation = {value!r}; expected one of {REPRESENTATIONS}")
            continue
        try:
            check_type(f"metric {metric!r}", f"parameter {key!r}", value, defaults.get(key))
            spec = ranges.get(key, n_jobs if key == "n_jobs" else None)
            if spec is not None:
                check_range(f"metric {metric!r}", f"parameter {key!r}", value, spec)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.{key}: {exc}") from None


def _metric_param_defaults(metric: str) -> dict[str, Any]:
    """The metric's keyword-only parameters and their defaults."""
    sig = inspect.signature(registry.metrics().get(metric).load())
    return {p.name: p.default for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY}
